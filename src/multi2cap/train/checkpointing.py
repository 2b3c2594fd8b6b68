"""Checkpoints of a run: step checkpoints (`Checkpointer`), the `best/` and `final/` model
folders (`save_model`) and resumption from the newest step checkpoint (`restore`). The file
formats are `multi2cap.train.state`'s."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from multi2cap.io import atomic_write_text
from multi2cap.provenance import WRITTEN_BY_KEY, provenance
from multi2cap.train import state as ckpt
from multi2cap.train.config import TrainConfig
from multi2cap.train.run_log import RunLogger
from multi2cap.train.sharding import is_sharded
from multi2cap.train.state import Best, Position

log = logging.getLogger("multi2cap.train")


def write_model(accelerator: Accelerator, model: torch.nn.Module, folder: Path) -> None:
    """`save_pretrained` into `folder` by the main process; a sharded model's weights are
    gathered by all processes first."""
    unwrapped = accelerator.unwrap_model(model)
    if is_sharded(model):
        unwrapped.save_pretrained(folder, is_main_process=accelerator.is_main_process)
    elif accelerator.is_main_process:
        unwrapped.save_pretrained(folder)


def save_model(
    accelerator: Accelerator,
    model: torch.nn.Module,
    out: Path,
    name: str,
    summary: dict[str, Any] | None = None,
) -> None:
    """Called on every process: `<out>/<name>/` as a `Multi2Cap.from_pretrained` folder, with
    `best.json` holding `summary` when one is given."""
    tmp = out / f".tmp-{name}"
    if accelerator.is_main_process:
        ckpt.begin_checkpoint(out, name)
    write_model(accelerator, model, tmp)
    if accelerator.is_main_process:
        if summary is not None:
            atomic_write_text(tmp / "best.json", json.dumps(summary, indent=1))
        ckpt.commit_checkpoint(tmp, out / name)
    accelerator.wait_for_everyone()


@dataclass
class Checkpointer:
    """Writes step checkpoints of one run (see `multi2cap.train.state` for the layout)."""

    root: Path
    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    accelerator: Accelerator
    config: TrainConfig
    logger: RunLogger

    def save(self, position: Position, best: Best) -> None:
        """Every process writes its RNG and takes part in gathering the optimizer state (and,
        sharded, the weights); the main process writes the rest, then renames into place."""
        acc = self.accelerator
        name = ckpt.step_dir_name(position.global_step)
        tmp = self.root / f".tmp-{name}"
        if acc.is_main_process:
            ckpt.begin_checkpoint(self.root, name)
        acc.wait_for_everyone()
        ckpt.save_rng(tmp, acc.process_index)
        optimizer_state = ckpt.gather_optimizer_state(self.model, self.optimizer.optimizer)
        write_model(acc, self.model, tmp / ckpt.MODEL_DIR)
        acc.wait_for_everyone()
        if acc.is_main_process:
            optimizer_meta = ckpt.save_optimizer(optimizer_state, tmp)
            ckpt.write_state(
                tmp,
                {
                    "position": vars(position),
                    "sampler_seed": self.config.seed,
                    "num_processes": acc.num_processes,
                    "optimizer": optimizer_meta,
                    "scheduler": self.scheduler.state_dict(),
                    "best": vars(best),
                    "history": self.logger.history,
                    "config": self.config.model_dump(mode="json"),
                    WRITTEN_BY_KEY: provenance(),
                },
            )
            ckpt.commit_checkpoint(tmp, self.root / name)
            ckpt.prune_checkpoints(self.root, self.config.runtime.keep_last_checkpoints)
        acc.wait_for_everyone()


def latest_checkpoint(root: Path) -> Path | None:
    found = ckpt.list_checkpoints(root)
    return found[-1][1] if found else None


def restore(
    folder: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    accelerator: Accelerator,
    config: TrainConfig,
) -> tuple[Position, Best, list[dict[str, Any]]]:
    saved = ckpt.read_state(folder)
    if saved["num_processes"] != accelerator.num_processes:
        log.warning(
            "checkpoint written with %d processes, resuming on %d: every optimizer step keeps "
            "its clips (and, with the same micro_batch_size, its micro-batches), but the random "
            "generators of processes the checkpoint did not have (and, with "
            "optim.align_batch=micro, L_align's contrastive batches) differ from an "
            "uninterrupted run",
            saved["num_processes"],
            accelerator.num_processes,
        )
    changed = _changed_fields(saved["config"], config.model_dump(mode="json"))
    if changed:
        log.warning("resuming with a changed recipe: %s", ", ".join(changed))
    ckpt.load_optimizer(model, optimizer.optimizer, folder, saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    ckpt.load_rng(folder, accelerator.process_index)
    return Position(**saved["position"]), Best(**saved["best"]), list(saved["history"])


def _changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    ignored = {"runtime.stop_at_step", "runtime.progress", "runtime.output_dir"}
    changed = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_fields(a, b, f"{path}.")
        elif a != b and path not in ignored:
            changed.append(path)
    return changed
