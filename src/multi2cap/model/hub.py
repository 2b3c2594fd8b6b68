"""Loading backbones and Multi2Cap checkpoints by hub id or folder, with errors that say how to
supply a missing one; staging and pushing a checkpoint to the hub, with its local backbones
bundled into the repository or mapped to hub ids (never published as paths of this machine)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from multi2cap.assets import AssetNotFoundError
from multi2cap.model.backbones import (
    BUNDLE_DIR,
    BUNDLE_SUFFIXES,
    ROLES,
    backbone_name,
    backbone_spec,
    check_overrides,
    is_local_path,
    locate_backbone,
    used_roles,
)
from multi2cap.model.config import CONFIG_FILE, TOKENIZER_DIR, TRAINABLE_FILE, Multi2CapConfig


@contextmanager
def hub_asset(what: str, field: str, source: str) -> Iterator[None]:
    """Re-raise a failed load (transformers raises `OSError` for a missing folder, an id that is
    not cached offline, or no network) as `AssetNotFoundError` naming the asset, the config field
    and the way to provide it."""
    try:
        yield
    except AssetNotFoundError:
        raise
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if is_local_path(source):  # `hf download /a/local/path` would make no sense
            role = field.partition(".")[0]
            raise AssetNotFoundError(
                f"{what}: the local folder {source!r} (config `{field}`) could not be loaded: "
                f"{reason} Check that it is a complete copy of the backbone, or point to "
                f"another with `--backbone {role}=DIR` (Python: `backbones={{'{role}': DIR}}`)."
            ) from err
        raise AssetNotFoundError(
            f"{what} {source!r} (config `{field}`) could not be loaded: {reason} "
            f"Set `{field}` to a local folder, or download it once on a machine with network: "
            f"`hf download {source}` (gated models need `hf auth login` first)."
        ) from err


# ---------------------------------------------------------------- checkpoints by hub id

CHECKPOINT_PATTERNS = (
    CONFIG_FILE,
    "*.safetensors",
    f"{TOKENIZER_DIR}/*",
    "best.json",
    "train_config.yaml",
    *(f"{BUNDLE_DIR}/*{suffix}" for suffix in BUNDLE_SUFFIXES),
)
"""What a hub checkpoint download fetches: the config, the weights (safetensors only, never
pickles), the tokenizer when the checkpoint carries its own, the run's recorded validation
scores and recipe (small YAML/JSON, shown by `multi2cap serve` and the model card), and bundled
backbones (`backbones/<role>/<name>/`: their safetensors, configs and tokenizer files)."""

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be a checkpoint folder, before looking inside it (it does not exist,
    or it is a file), or None."""
    if not folder.exists():
        return f"checkpoint folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a checkpoint folder"
    return None


def resolve_checkpoint(source: str | os.PathLike[str]) -> Path:
    """The folder of a Multi2Cap checkpoint given as a local folder or a hub id `org/name`
    (optionally `org/name@revision`).

    An existing path is returned as is. Otherwise a name shaped like a hub id is fetched with
    `huggingface_hub.snapshot_download` (only `CHECKPOINT_PATTERNS`), which reuses the local
    cache (`HF_HUB_CACHE`) and, with `HF_HUB_OFFLINE=1`, never touches the network. A checkpoint
    that is neither a folder nor obtainable raises `AssetNotFoundError` naming it."""
    path = Path(source)
    text = os.fspath(source)
    if path.exists() or not _REPO_ID.match(text):
        return path
    repo_id, _, revision = text.partition("@")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RevisionResolutionError

    hint = (
        f"Pass a checkpoint folder, or fetch it once on a machine with network: "
        f"`hf download {repo_id} --include {' '.join(repr(p) for p in CHECKPOINT_PATTERNS)}` "
        "(private repos need `hf auth login` first; HF_HUB_OFFLINE=1 then uses the cache only)."
    )
    try:
        folder = Path(
            snapshot_download(
                repo_id, revision=revision or None, allow_patterns=list(CHECKPOINT_PATTERNS)
            )
        )
    except (OSError, ValueError, EntryNotFoundError, RevisionResolutionError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AssetNotFoundError(
            f"checkpoint folder {text!r} does not exist, and as a hub id it could not be "
            f"fetched: {reason} {hint}"
        ) from err
    if not (folder / CONFIG_FILE).is_file():
        raise AssetNotFoundError(
            f"Multi2Cap checkpoint {text!r}: the hub snapshot at {folder} has no config.yaml "
            f"(not a Multi2Cap checkpoint, or only partly cached). {hint}"
        )
    return folder


def check_push(checkpoint: str | os.PathLike[str], repo_id: str) -> Path:
    """The checkpoint folder, after checking that it is one (`FileNotFoundError`) and that
    `repo_id` is `org/name` (`ValueError`)."""
    folder = Path(checkpoint)
    if not _REPO_ID.match(repo_id) or "@" in repo_id:
        raise ValueError(f"hub repository must be `org/name`, found {repo_id!r}")
    if problem := folder_problem(folder):
        raise FileNotFoundError(problem)
    if not (folder / CONFIG_FILE).is_file() or not (folder / TRAINABLE_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} is not a Multi2Cap checkpoint (needs config.yaml and trainable.safetensors)"
        )
    return folder


@dataclass
class PushedBackbones:
    """How a checkpoint's backbones are published: `config` as uploaded (bundled ones as
    `./backbones/<role>/<name>`, mapped ones as hub ids) and `copies` {path in the repo: local
    file} of the bundled backbones' files."""

    config: Multi2CapConfig
    copies: dict[str, Path] = field(default_factory=dict)


def plan_pushed_backbones(
    folder: Path,
    *,
    bundle: bool = False,
    hub_ids: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | os.PathLike[str]] | None = None,
) -> PushedBackbones:
    """Decide how each backbone of the checkpoint `folder` is published. A hub id stays. A
    backbone already bundled in the folder (`./...` inside it) is carried along. A local folder
    is refused (`ValueError`, listing every such role and the two ways out) unless `hub_ids` maps
    its role to the hub id it came from, or `bundle` copies it into the repository (found as
    when loading: `overrides`, the stored path, `$MULTI2CAP_BACKBONES`)."""
    config = Multi2CapConfig.load(folder / CONFIG_FILE)
    where = f"checkpoint {folder}"
    mapped = check_overrides(config, hub_ids or {}, where)
    for role, repo_id in mapped.items():
        if is_local_path(repo_id) or "@" in repo_id:
            raise ValueError(f"--map-backbone {role}={repo_id}: not a hub id (org/name)")
    located = check_overrides(config, overrides or {}, where)
    updates: dict[str, object] = {}
    copies: dict[str, Path] = {}
    refused = []
    root = os.path.abspath(folder)
    for role in used_roles(config):
        spec = backbone_spec(config, role)
        if spec.source is None:
            continue
        if role in mapped:
            updates[role] = spec.model_copy(update={"source": mapped[role]})
            continue
        override = located.get(role)
        if override is None and not is_local_path(spec.source):
            continue  # a hub id stays
        if override is not None and not is_local_path(override):
            updates[role] = spec.model_copy(update={"source": override})  # a hub id given here
            continue
        inside = (
            override is None
            and spec.source.startswith("./")
            and os.path.commonpath([os.path.abspath(folder / spec.source), root]) == root
        )
        if not (bundle or inside):
            refused.append((role, override or spec.source))
            continue
        source = locate_backbone(role, spec.source, folder, override, where=where)
        if inside:  # already bundled: carried along at the same place
            relative = Path(os.path.relpath(source, root)).as_posix()
        else:
            relative = f"{BUNDLE_DIR}/{role}/{backbone_name(source)}"
        copies.update(_bundle_files(role, Path(source), relative))
        updates[role] = spec.model_copy(update={"source": f"./{relative}"})
    if refused:
        listed = "; ".join(f"{role} is the local folder {source!r}" for role, source in refused)
        first = refused[0][0]
        raise ValueError(
            f"cannot push {folder} as it is: {listed}. Nobody else can load a checkpoint that "
            f"names folders of this machine. Either bundle them into the repository "
            f"(`--bundle-backbones`: copied under {BUNDLE_DIR}/<role>/<name>/, loadable by the "
            f"repo id alone), or name the hub id each was downloaded from (`--map-backbone "
            f"{first}=org/name`, repeatable)."
        )
    return PushedBackbones(config.model_copy(update=updates), copies)


def _bundle_files(role: str, source: Path, relative: str) -> dict[str, Path]:
    """{repo path: file} of a backbone folder's `BUNDLE_SUFFIXES` files, under `relative`;
    `ValueError` when it holds no safetensors weights (bundles carry no pickles)."""
    files = {
        f"{relative}/{file.relative_to(source).as_posix()}": file
        for file in sorted(source.rglob("*"))
        if file.is_file() and file.suffix in BUNDLE_SUFFIXES and not file.name.startswith(".")
    }
    if not any(name.endswith(".safetensors") for name in files):
        raise ValueError(
            f"--bundle-backbones: the {role} backbone folder {source} holds no *.safetensors "
            "weights (bundles carry safetensors only, never pickles): save it with "
            "`save_pretrained(..., safe_serialization=True)` first"
        )
    return files


def stage_hub_repo(
    checkpoint: str | os.PathLike[str],
    repo_id: str,
    target: Path,
    *,
    bundle: bool = False,
    hub_ids: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """Write into `target` what `push_checkpoint` uploads: the checkpoint's config (backbones as
    `plan_pushed_backbones` publishes them), safetensors and tokenizer, bundled backbones, its
    `best.json`, its run's recipe (paths reduced to names) and a generated `README.md` model
    card (`multi2cap.model.card`). Raises `FileNotFoundError` for a folder that is not a
    checkpoint, `ValueError` for a repo id that is not `org/name` or a local backbone that is
    neither bundled nor mapped."""
    import yaml

    from multi2cap.model.card import (
        SCORES_FILE,
        checkpoint_summary,
        find_recipe,
        model_card,
        public_recipe,
    )

    folder = check_push(checkpoint, repo_id)
    plan = plan_pushed_backbones(folder, bundle=bundle, hub_ids=hub_ids, overrides=overrides)
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder).as_posix()
        wanted = relative == SCORES_FILE
        wanted |= relative.endswith(".safetensors") and "/" not in relative
        wanted |= relative.startswith(f"{TOKENIZER_DIR}/")
        if file.is_file() and wanted:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target / relative)
    for relative, file in plan.copies.items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target / relative)
    _write_pushed_config(folder / CONFIG_FILE, plan.config, target / CONFIG_FILE)
    recipe = find_recipe(folder)
    if recipe is not None:
        text = yaml.safe_dump(public_recipe(recipe), sort_keys=False)
        (target / "train_config.yaml").write_text(text, encoding="utf-8")
    (target / "README.md").write_text(
        model_card(repo_id, checkpoint_summary(target)), encoding="utf-8"
    )
    return target


def _write_pushed_config(original: Path, config: Multi2CapConfig, target: Path) -> None:
    """The checkpoint's config.yaml as is (byte for byte) when no backbone source changes;
    otherwise its tree (the `written_by` block kept) with the new sources."""
    import yaml

    tree = yaml.safe_load(original.read_text(encoding="utf-8")) or {}
    changed = False
    for role in ROLES:
        section = tree.get(role)
        source = backbone_spec(config, role).source
        if isinstance(section, dict) and section.get("source") != source:
            section["source"] = source
            changed = True
    if not changed:
        shutil.copyfile(original, target)
        return
    target.write_text(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True), encoding="utf-8")


def push_checkpoint(
    checkpoint: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    message: str,
    bundle: bool = False,
    hub_ids: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | os.PathLike[str]] | None = None,
) -> str:
    """Upload a checkpoint to the hub repo `repo_id` (created when missing) with its model card
    (see `stage_hub_repo`, which also takes `bundle`, `hub_ids` and `overrides`); returns the
    repo's URL. The token and endpoint are huggingface_hub's own (`HF_TOKEN` / `hf auth
    login`, `HF_ENDPOINT`)."""
    import tempfile

    from huggingface_hub import CommitOperationAdd, HfApi

    with tempfile.TemporaryDirectory(prefix="multi2cap-push-") as tmp:
        staged = stage_hub_repo(
            checkpoint,
            repo_id,
            Path(tmp) / "repo",
            bundle=bundle,
            hub_ids=hub_ids,
            overrides=overrides,
        )
        operations = [
            CommitOperationAdd(path_in_repo=p.relative_to(staged).as_posix(), path_or_fileobj=p)
            for p in sorted(staged.rglob("*"))
            if p.is_file()
        ]
        api = HfApi()
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        # One commit of the few checkpoint files (`upload_folder` would do the same through
        # its multi-commit pipeline, meant for large folders).
        api.create_commit(repo_id, operations=operations, commit_message=message)
    return str(url)
