"""Training-state persistence without pickles: optimizer, scheduler, RNG and data position.

A training checkpoint is a folder `step-00000123/`:

    model/                    Multi2Cap.save_pretrained (config.yaml + trainable.safetensors ...)
    optimizer.safetensors     every optimizer-state tensor, keyed `<parameter name>.<key>`
    trainer_state.json        optimizer param groups and scalars, scheduler state, data position
                              (epoch, step in epoch, sampler seed), history, best score, config
    rng_rank{R}.safetensors   torch CPU (+ CUDA) generator states of process R
    rng_rank{R}.json          python `random` and numpy states of process R

It is written under `.tmp-<name>` and renamed into place once complete, so a folder named
`step-*` is always whole; a crash mid-write leaves only a temporary folder that the next save
removes.

The optimizer state is the whole (unsharded) state keyed by parameter name, gathered from all
processes under FSDP: only LoRA weights, adapters and the grounding modules train, so it is small,
and one format serves one process, DDP and FSDP alike (a checkpoint of one resumes under another).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from multi2cap.io import atomic_write_text

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
MODEL_DIR = "model"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Position:
    """Where a run is: epochs done, optimizer steps done in the current epoch and in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


@dataclass
class Best:
    """The best validation score so far, on which metric, and at which epoch."""

    metric: str | None = None
    score: float | None = None
    epoch: int | None = None


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def begin_checkpoint(root: Path, name: str) -> Path:
    """Create an empty temporary folder for checkpoint `name` under `root` and return it (after
    putting back a `name` that a crash in `commit_checkpoint`'s fallback left aside)."""
    final, old = root / name, root / f".old-{name}"
    if old.exists() and not final.exists():
        os.replace(old, final)
    tmp = root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_checkpoint(tmp: Path, final: Path) -> Path:
    """Move a completed temporary folder to `final`, replacing an older folder of that name.

    The replacement is one atomic exchange of the two folders (Linux `renameat2` with
    `RENAME_EXCHANGE`), so `final` always exists, old or new, whenever the process dies; the
    old folder, left under `tmp`'s name, is removed after. Where the exchange is unsupported
    (another OS, some network filesystems) the old folder is first renamed aside to
    `.old-<name>`, and a crash between the two renames is repaired by the next
    `begin_checkpoint` of that name."""
    if not final.exists():
        os.replace(tmp, final)
    elif _exchange(tmp, final):
        shutil.rmtree(tmp)
    else:
        old = final.with_name(f".old-{final.name}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    _fsync_dir(final.parent)
    return final


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths `a` and `b` atomically; False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    args = (_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if renameat2(*args) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints."""
    for _, path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def gather_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """The optimizer's whole state keyed by parameter name (FSDP shards gathered, a DDP
    wrapper's `module.` prefix removed). Under torch.distributed every process must call it;
    the main process gets the state, the others an empty dict."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=_distributed())
    return get_optimizer_state_dict(model, optimizer, options=options)


def save_optimizer(state: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write the tensors of `gather_optimizer_state`'s result to safetensors; return the
    JSON-able remainder (param groups naming their parameters, non-tensor entries)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for name, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    return {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    folder: Path,
    meta: dict[str, Any],
) -> None:
    """Inverse of `save_optimizer`, on every process: each takes its shard (FSDP) or the
    whole state, on the device of its parameters."""
    tensors = load_file(str(folder / OPTIMIZER_FILE))
    state: dict[str, dict[str, Any]] = {}
    for key_path, value in tensors.items():
        name, _, key = key_path.rpartition(".")
        state.setdefault(name, {})[key] = value
    for name, entry in meta["scalars"].items():
        state.setdefault(name, {}).update(entry)
    saved = {"state": state, "param_groups": meta["param_groups"]}
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=saved, options=options)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def save_rng(folder: Path, rank: int) -> None:
    """Snapshot python, numpy, torch CPU and CUDA generators of this process."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for device, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{device}"] = cuda_state
    save_file(tensors, str(folder / f"rng_rank{rank}.safetensors"))
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state()
    payload = {
        "python": [version, list(mt_state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *(np_state[2:])],
    }
    atomic_write_text(folder / f"rng_rank{rank}.json", json.dumps(payload))


def load_rng(folder: Path, rank: int) -> None:
    """Restore the generators saved by `save_rng` (a missing rank file, e.g. a run resumed on
    more processes than it was saved with, leaves that process's generators as seeded)."""
    tensor_file = folder / f"rng_rank{rank}.safetensors"
    json_file = folder / f"rng_rank{rank}.json"
    if not tensor_file.is_file() or not json_file.is_file():
        return
    tensors = load_file(str(tensor_file))
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            key = f"torch_cuda_{device}"
            if key in tensors:
                torch.cuda.set_rng_state(tensors[key], device)
    payload = json.loads(json_file.read_text(encoding="utf-8"))
    version, mt_state, gauss = payload["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, cached = payload["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Write trainer_state.json (last, so its presence marks a complete folder)."""
    atomic_write_text(folder / STATE_FILE, json.dumps(state, indent=1))


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
