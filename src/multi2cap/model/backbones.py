"""Where a checkpoint's backbones are on this machine: checkpoints that travel.

A checkpoint's `config.yaml` names each pretrained backbone (`audio`, `vision`, `llm`) by hub id
or by folder. A folder written as an absolute path is local to the machine that saved the
checkpoint; copied elsewhere, the checkpoint must be told where that backbone is now. When a
checkpoint is loaded (`Multi2Cap.from_pretrained`, `--backbone ROLE=DIR` on the CLI, a training
recipe's `init_backbones`), each backbone's folder is found in this order:

1. an explicit override for its role (`backbones={"llm": DIR}`), a folder or a hub id;
2. a reference relative to the checkpoint folder (`./backbones/llm/NAME`, written by
   `multi2cap push --bundle-backbones` and by `save_pretrained` for a backbone kept inside the
   checkpoint folder), resolved against the folder wherever it has moved;
3. the stored path, when it exists here;
4. a folder of the same name under `$MULTI2CAP_BACKBONES` (one folder, or several joined by
   `os.pathsep`), the "folder of backbones" of a machine;
5. otherwise `AssetNotFoundError`, which says the path is local to the saving machine and shows
   each way to point at a copy.

Hub ids are passed on unchanged (transformers / huggingface_hub look them up). Names shown to
others (`GET /v1/model`, the serve page, the model card) are `backbone_name`: the hub id, or the
folder's last component, never the absolute path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, cast, get_args

from multi2cap.assets import AssetNotFoundError
from multi2cap.model.config import (
    AudioEncoderSpec,
    LlmSpec,
    Multi2CapConfig,
    VisionEncoderSpec,
)

BackboneRole = Literal["audio", "vision", "llm"]
ROLES: tuple[BackboneRole, ...] = get_args(BackboneRole)

BACKBONES_ENV = "MULTI2CAP_BACKBONES"
"""Environment variable naming folder(s) of backbones, looked up by the backbone folder's name."""

BUNDLE_DIR = "backbones"
"""Folder of a checkpoint (or hub repo) holding bundled backbones: `backbones/<role>/<name>/`."""

BUNDLE_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja", ".tiktoken")
"""Files of a backbone folder that a bundle carries (and a hub download fetches): safetensors
weights, configs and tokenizer files; never pickled weights (`*.bin`, `*.pt`)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_RELATIVE = ("./", "../")

BackboneSpec = AudioEncoderSpec | VisionEncoderSpec | LlmSpec


def is_relative_reference(source: str) -> bool:
    """Whether `source` is written relative to the checkpoint folder (`./...` or `../...`)."""
    return source.startswith(_RELATIVE)


def is_local_path(source: str) -> bool:
    """Whether a backbone source names a folder rather than a hub id: an absolute, home (`~`) or
    dot-relative path, anything not shaped like `org/name`, or a relative path that exists here
    (transformers, too, loads an existing folder before asking the hub)."""
    return (
        source.startswith(("/", "~", *_RELATIVE))
        or not _HUB_ID.match(source)
        or Path(source).exists()
    )


def backbone_name(source: str) -> str:
    """What a source is called in public: the hub id, or the folder's last component."""
    return (Path(source).name or source) if is_local_path(source) else source


def used_roles(config: Multi2CapConfig) -> tuple[BackboneRole, ...]:
    """Roles the model has: the CLIP tower only with grounding."""
    return tuple(r for r in ROLES if r != "vision" or config.grounding)


def backbone_spec(config: Multi2CapConfig, role: BackboneRole) -> BackboneSpec:
    """The config section of `role` (`config.audio`, `config.vision` or `config.llm`)."""
    spec: BackboneSpec = getattr(config, role)
    return spec


def describe_backbone(config: Multi2CapConfig, role: BackboneRole) -> tuple[str, str]:
    """(name, origin) of one backbone for people: origin is `hub id`, `bundled (PATH)` for a
    folder inside the checkpoint, `local folder` or `random weights` (inline config, stored in
    `backbones.safetensors`)."""
    spec = backbone_spec(config, role)
    if spec.source is None:
        keys = ("preset", "embed_dim", "hidden_size", "depth", "num_hidden_layers")
        fields = spec.config or {}
        shape = ", ".join(f"{k} {fields[k]}" for k in keys if k in fields)
        return f"random weights, inline config ({shape})", "random weights"
    if is_relative_reference(spec.source):
        return backbone_name(spec.source), f"bundled (`{spec.source.removeprefix('./')}`)"
    if is_local_path(spec.source):
        return backbone_name(spec.source), "local folder"
    return spec.source, "hub id"


def parse_backbone_overrides(
    items: Iterable[str], option: str = "--backbone"
) -> dict[BackboneRole, str]:
    """`["llm=DIR", ...]` -> `{"llm": "DIR"}`; `ValueError` naming `option` for a malformed
    item, an unknown role or a role given twice."""
    result: dict[BackboneRole, str] = {}
    for item in items:
        role, sep, value = item.partition("=")
        role = role.strip()
        if not sep or not value.strip():
            raise ValueError(
                f"{option} {item!r}: expected ROLE=DIR with ROLE one of {', '.join(ROLES)}"
            )
        if role not in ROLES:
            raise ValueError(
                f"{option} {item!r}: unknown role {role!r} (roles: {', '.join(ROLES)})"
            )
        if role in result:
            raise ValueError(f"{option}: role {role!r} given twice")
        result[cast(BackboneRole, role)] = value.strip()
    return result


def check_overrides(
    config: Multi2CapConfig, overrides: Mapping[str, str | os.PathLike[str]], where: str
) -> dict[BackboneRole, str]:
    """The overrides as strings, after checking each names a role this checkpoint loads from a
    source (an inline backbone's weights are in the checkpoint; a baseline has no vision)."""
    checked: dict[BackboneRole, str] = {}
    for role, value in overrides.items():
        if role not in ROLES:
            raise ValueError(
                f"backbone override {role!r}: unknown role (roles: {', '.join(ROLES)})"
            )
        if role not in used_roles(config):
            raise ValueError(
                f"backbone override {role!r}: {where} has no {role} backbone (audio-only baseline)"
            )
        if backbone_spec(config, role).source is None:
            raise ValueError(
                f"backbone override {role!r}: the {role} backbone of {where} has random weights "
                "from an inline config, stored in the checkpoint: there is no folder to override"
            )
        checked[cast(BackboneRole, role)] = os.fspath(value)
    return checked


def env_folders() -> list[Path]:
    """The folders named by `$MULTI2CAP_BACKBONES` (empty entries skipped)."""
    value = os.environ.get(BACKBONES_ENV, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def locate_backbone(
    role: BackboneRole,
    source: str,
    folder: Path | None,
    override: str | None = None,
    *,
    where: str = "the model config",
) -> str:
    """The source to load `role`'s backbone from on this machine (see the module docstring for
    the order): an existing folder as an absolute path, or a hub id. `AssetNotFoundError` when a
    local folder is nowhere to be found, with the ways to point at it."""
    if override is not None:
        path = Path(override).expanduser()
        if path.is_dir():
            return os.path.abspath(path)
        if is_local_path(override):
            raise AssetNotFoundError(
                f"backbone override {role}={override}: no such folder (give the folder of the "
                f"{role} backbone, or a hub id)"
            )
        return override
    if not is_local_path(source):
        return source
    candidates = []
    if folder is not None and is_relative_reference(source):
        candidates.append(folder / source)
    candidates.append(Path(source).expanduser())  # absolute, or relative to here (older configs)
    for candidate in candidates:
        if candidate.is_dir():
            return os.path.abspath(candidate)
    name = backbone_name(source)
    searched = env_folders()
    for base in searched:
        if (base / name).is_dir():
            return os.path.abspath(base / name)
    raise AssetNotFoundError(missing_backbone_message(role, source, where, searched))


def missing_backbone_message(
    role: BackboneRole, source: str, where: str, searched: list[Path]
) -> str:
    """The error for a local backbone folder absent here: what is missing, why, and each way to
    point at a copy of it."""
    name = backbone_name(source)
    if is_relative_reference(source):
        why = (
            f"the folder `{source}` inside the checkpoint is missing (a bundled backbone: copy the "
            "checkpoint folder whole)"
        )
    else:
        why = (
            f"the local path {source!r} does not exist on this machine: it is local to the "
            "machine that saved the checkpoint"
        )
    env = (
        f"${BACKBONES_ENV} ({os.pathsep.join(map(str, searched))}) has no folder `{name}`"
        if searched
        else f"${BACKBONES_ENV} is not set"
    )
    return (
        f"{role} backbone of {where} (`{role}.source`): {why}. Point to a copy of that backbone "
        f"folder (`{name}`) with `--backbone {role}=DIR` (multi2cap caption, serve, push, "
        f"analyze model), `Multi2Cap.from_pretrained(CHECKPOINT, backbones={{'{role}': DIR}})` in "
        f"Python, `init_backbones: {{{role}: DIR}}` in a training recipe, or put it in a folder "
        f"named by ${BACKBONES_ENV} as `{name}/` ({env})."
    )


def resolve_backbones(
    config: Multi2CapConfig,
    folder: Path | None,
    overrides: Mapping[str, str | os.PathLike[str]] | None = None,
    *,
    need_vision: bool = True,
    where: str | None = None,
) -> Multi2CapConfig:
    """`config` with each backbone source replaced by where it is on this machine
    (`locate_backbone`). The CLIP tower is left as stored when it is not needed
    (`need_vision=False`: captioning and fine-tuning read only `vision.width`, when recorded).
    Relative references are resolved against `folder`, the checkpoint's folder."""
    where = where or (f"checkpoint {folder}" if folder is not None else "the model config")
    checked = check_overrides(config, overrides or {}, where)
    updates = {}
    missing = []
    for role in used_roles(config):
        spec = backbone_spec(config, role)
        if spec.source is None:
            continue
        optional = role == "vision" and not need_vision and config.vision.width is not None
        try:
            source = locate_backbone(role, spec.source, folder, checked.get(role), where=where)
        except AssetNotFoundError as err:
            if not (optional and role not in checked):
                missing.append(str(err))
            continue
        if source != spec.source:
            updates[role] = spec.model_copy(update={"source": source})
    if len(missing) == 1:
        raise AssetNotFoundError(missing[0])
    if missing:  # all at once, so that one fix covers them
        raise AssetNotFoundError(
            f"{len(missing)} backbones of {where} are not on this machine:\n"
            + "\n".join(f"- {message}" for message in missing)
        )
    return config.model_copy(update=updates) if updates else config


def portable_config(
    config: Multi2CapConfig, target: Path
) -> tuple[Multi2CapConfig, dict[str, Path]]:
    """`config` as written into the checkpoint folder `target`, and the backbone folders to copy
    into it. Each existing local backbone folder is written as an absolute path (never relative
    to the working directory, which means nothing elsewhere), except one inside `target` (a
    bundled backbone of the checkpoint being saved again), which stays a `./` reference: the
    returned mapping is {relative path: folder now}, so the writer copies it into the new folder
    before the old one is replaced. Hub ids and folders absent here are written as they are."""
    updates = {}
    keep: dict[str, Path] = {}
    root = os.path.abspath(target)
    for role in used_roles(config):
        spec = backbone_spec(config, role)
        if spec.source is None or not is_local_path(spec.source):
            continue
        path = Path(spec.source).expanduser()
        if not path.is_dir():
            continue
        absolute = os.path.abspath(path)
        if os.path.commonpath([absolute, root]) == root and absolute != root:
            relative = Path(os.path.relpath(absolute, root)).as_posix()
            keep[relative] = Path(absolute)
            source = f"./{relative}"
        else:
            source = absolute
        if source != spec.source:
            updates[role] = spec.model_copy(update={"source": source})
    return (config.model_copy(update=updates) if updates else config), keep
