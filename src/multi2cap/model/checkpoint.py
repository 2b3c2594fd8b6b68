"""Multi2Cap checkpoint folders: which weights a saved model keeps, and how the folder is written
and read back (`Multi2Cap.save_pretrained` / `Multi2Cap.from_pretrained` delegate here).

Folder layout:

- `config.yaml`: the `Multi2CapConfig` (backbones by id/path; `vision.width` filled in, so that
  loading needs nothing of the CLIP tower);
- `trainable.safetensors`: adapter, grounding, alignment projections, VFR, LoRA weights;
- `backbones.safetensors`: only for backbones built from an inline config, whose random weights
  cannot be rebuilt otherwise;
- `tokenizer/`: only when the tokenizer is not the LLM's own;
- `backbones/<role>/<name>/`: only for backbones bundled with the checkpoint (`multi2cap push
  --bundle-backbones`), referenced from `config.yaml` as `./backbones/<role>/<name>`.

Pretrained backbone weights are not written: they are rebuilt from their source, which is found
on this machine by `multi2cap.model.backbones` (overrides, `$MULTI2CAP_BACKBONES`, references
relative to the folder). Loading reads safetensors only: nothing is unpickled.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.distributed.tensor import DTensor

from multi2cap.model.backbones import portable_config, resolve_backbones
from multi2cap.model.config import (
    BACKBONES_FILE,
    CONFIG_FILE,
    TOKENIZER_DIR,
    TRAINABLE_FILE,
    CheckpointFileError,
    Multi2CapConfig,
)
from multi2cap.model.hub import folder_problem, resolve_checkpoint
from multi2cap.model.llm import build_tokenizer

OWN_PREFIXES = ("adapter.", "grounding.", "align.", "vfr.")
"""State-dict prefixes of the modules Multi2Cap adds to the backbones (all trainable)."""


class Checkpointable(Protocol):
    """What saving and loading need of a model: `Multi2Cap` is one. Named here, so that this
    module, which `multi2cap.model.multi2cap` imports, imports nothing of it (no import circle)."""

    config: Multi2CapConfig
    grounding: Any  # None, or a module with `visual_proj` (its `in_features`: the CLIP width)
    vision: Any  # None while the CLIP tower is not loaded
    decoder: Any  # with the `tokenizer` saved beside an inline-config decoder
    _vision_state: dict[str, Tensor]  # an unloaded inline CLIP's weights, kept for saving

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = ...) -> Any: ...

    def to(self, device: Any) -> Any: ...

    def eval(self) -> Any: ...


ModelT = TypeVar("ModelT", bound=Checkpointable)


def can_train(name: str) -> bool:
    """Whether parameter (or state-dict key) `name` trains in some stage: LoRA and the model's
    own modules. These are exactly the weights `trainable.safetensors` holds."""
    return "lora_" in name or name.startswith(OWN_PREFIXES)


def _backbone_prefixes(config: Multi2CapConfig) -> list[str]:
    """State-dict prefixes of backbones built from inline configs (random weights)."""
    prefixes = []
    if config.audio.config is not None:
        prefixes.append("audio_encoder.")
    if config.llm.config is not None:
        prefixes.append("decoder.model.")
    if config.grounding.enabled and config.vision.config is not None:
        prefixes.append("vision.")
    return prefixes


def _split_state(model: Checkpointable) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trainable state, inline-backbone state) as they are written to disk: own modules and
    LoRA weights; the whole of every backbone built from an inline config. Pretrained
    backbone weights are left out (they are rebuilt from their source). Parameters sharded
    by FSDP are gathered whole, which every process must take part in, and only those kept:
    the frozen decoder, CLIP and CED of a real run are not all-gathered at each save."""
    backbones = tuple(_backbone_prefixes(model.config))
    trainable: dict[str, Tensor] = {}
    inline: dict[str, Tensor] = dict(model._vision_state)
    for key, value in model.state_dict().items():
        mine = can_train(key)
        if not (mine or key.startswith(backbones)):
            continue  # checked before gathering: a frozen pretrained backbone is never
        if isinstance(value, DTensor):
            value = value.full_tensor()
        (trainable if mine else inline)[key] = value
    return trainable, inline


def _saved_config(model: Checkpointable, target: Path) -> tuple[Multi2CapConfig, dict[str, Path]]:
    """The config as written to the checkpoint folder `target`: with `vision.width`, so that
    loading it needs nothing of the CLIP tower (see `multi2cap.model.multi2cap.vision_width`),
    and backbone folders as `portable_config` writes them (with the bundled ones to copy)."""
    config = model.config
    if model.grounding is not None:
        width = model.grounding.visual_proj.in_features
        vision = config.vision.model_copy(update={"width": width})
        config = config.model_copy(update={"vision": vision})
    return portable_config(config, target)


def save_checkpoint(
    model: Checkpointable, folder: str | os.PathLike[str], *, is_main_process: bool = True
) -> Path:
    """Write `model`'s checkpoint folder atomically: a temporary sibling renamed into place, so
    an existing checkpoint is replaced only once the new one is complete.

    A model sharded with FSDP is saved by calling this on every process (the weights are
    gathered) with `is_main_process` True on one of them, which alone writes."""
    target = Path(folder)
    trainable, inline = (_to_disk(part) for part in _split_state(model))
    if not is_main_process:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    config, bundled = _saved_config(model, target)
    for relative, source in bundled.items():  # kept when a checkpoint is saved over itself
        shutil.copytree(source, tmp / relative)
    config.save(tmp / CONFIG_FILE)
    save_file(trainable, str(tmp / TRAINABLE_FILE), metadata={"format": "pt"})
    if inline:
        save_file(inline, str(tmp / BACKBONES_FILE), metadata={"format": "pt"})
    if model.config.llm.source is None:
        model.decoder.tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(
    cls: Callable[..., ModelT],
    folder: str | os.PathLike[str],
    *,
    load_vision: bool = False,
    device: str | torch.device | None = None,
    backbones: Mapping[str, str | os.PathLike[str]] | None = None,
    move: bool = True,
) -> ModelT:
    """Build a `cls` (Multi2Cap or a subclass) from a folder written by `save_checkpoint`, or a
    hub id `org/name`: backbones by id/path from the config, found on this machine by
    `resolve_backbones` (`backbones` overrides a role's folder or id: `{"llm": DIR}`), then the
    saved weights, refusing a folder whose weights do not match its config. The CLIP tower is
    only loaded with `load_vision=True`; without it, an inline CLIP's saved weights are kept on
    the model so that saving it again does not lose them. The model's `config` names the
    backbones where they were found. `llm.dtype: auto` resolves for `device`, where the model is
    moved unless `move=False`. Returned in eval mode."""
    folder = resolve_checkpoint(folder)  # a folder, or a hub id `org/name` (model/hub.py)
    if problem := folder_problem(folder):
        raise FileNotFoundError(problem)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} is not a Multi2Cap checkpoint: no {CONFIG_FILE}")
    config = resolve_backbones(
        Multi2CapConfig.load(config_path), folder, backbones, need_vision=load_vision
    )
    tok_dir = folder / TOKENIZER_DIR
    tokenizer = build_tokenizer(config.llm, tok_dir if tok_dir.is_dir() else None)
    model = cls(config, load_vision=load_vision, tokenizer=tokenizer, device=device)
    state = read_weights(folder / TRAINABLE_FILE)
    if (folder / BACKBONES_FILE).is_file():
        state.update(read_weights(folder / BACKBONES_FILE))
    if model.vision is None:
        model._vision_state = {k: v for k, v in state.items() if k.startswith("vision.")}
        state = {k: v for k, v in state.items() if not k.startswith("vision.")}
    expected_trainable, expected_inline = _split_state(model)
    expected = set(expected_trainable) | (set(expected_inline) - set(model._vision_state))
    missing = sorted(expected - set(state))
    result = model.load_state_dict(state, strict=False)
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {folder} does not match its config: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    if device is not None and move:
        model.to(device)
    model.eval()
    return model


def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file; `CheckpointFileError` naming it when it is missing,
    truncated or not safetensors at all (the reader's own error names no file)."""
    if not path.is_file():
        raise CheckpointFileError(path, "file not found: the checkpoint folder is incomplete")
    try:
        return load_file(path)
    except SafetensorError as err:
        problem = f"not a readable safetensors file ({err}): truncated or damaged, copy it again"
        raise CheckpointFileError(path, problem) from err


def _to_disk(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous copies that share no storage (safetensors refuses shared tensors)."""
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}
