"""Loading backbones and Multi2Cap checkpoints by hub id or folder, with errors that say how to
supply a missing one."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from multi2cap.assets import AssetNotFoundError
from multi2cap.model.config import CONFIG_FILE, TOKENIZER_DIR, TRAINABLE_FILE


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
)
"""What a hub checkpoint download fetches: the config, the weights (safetensors only, never
pickles), the tokenizer when the checkpoint carries its own, and the run's recorded validation
scores and recipe (small YAML/JSON, shown by `multi2cap serve` and the model card)."""

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


def stage_hub_repo(checkpoint: str | os.PathLike[str], repo_id: str, target: Path) -> Path:
    """Write into `target` what `push_checkpoint` uploads: the checkpoint's config, safetensors
    and tokenizer, its `best.json`, its run's recipe (paths reduced to names) and a generated
    `README.md` model card (`multi2cap.model.card`). Raises `FileNotFoundError` for a folder
    that is not a checkpoint, `ValueError` for a repo id that is not `org/name`."""
    import yaml

    from multi2cap.model.card import (
        SCORES_FILE,
        checkpoint_summary,
        find_recipe,
        model_card,
        public_recipe,
    )

    folder = check_push(checkpoint, repo_id)
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder).as_posix()
        wanted = relative in (CONFIG_FILE, SCORES_FILE)
        wanted |= relative.endswith(".safetensors") and "/" not in relative
        wanted |= relative.startswith(f"{TOKENIZER_DIR}/")
        if file.is_file() and wanted:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target / relative)
    recipe = find_recipe(folder)
    if recipe is not None:
        text = yaml.safe_dump(public_recipe(recipe), sort_keys=False)
        (target / "train_config.yaml").write_text(text, encoding="utf-8")
    (target / "README.md").write_text(
        model_card(repo_id, checkpoint_summary(target)), encoding="utf-8"
    )
    return target


def push_checkpoint(
    checkpoint: str | os.PathLike[str], repo_id: str, *, private: bool = False, message: str
) -> str:
    """Upload a checkpoint to the hub repo `repo_id` (created when missing) with its model card
    (see `stage_hub_repo`); returns the repo's URL. The token and endpoint are
    huggingface_hub's own (`HF_TOKEN` / `hf auth login`, `HF_ENDPOINT`)."""
    import tempfile

    from huggingface_hub import CommitOperationAdd, HfApi

    with tempfile.TemporaryDirectory(prefix="multi2cap-push-") as tmp:
        staged = stage_hub_repo(checkpoint, repo_id, Path(tmp) / "repo")
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
