"""Lay a checkpoint folder out as huggingface_hub's cache does, so hub ids resolve offline.

Layout (huggingface_hub's `file_download` docs): `<cache>/models--<org>--<name>/blobs/<hash>`
holds each file once; `snapshots/<commit>/<path>` are relative symlinks to the blobs;
`refs/<revision>` holds the commit hash the revision points at.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(
    cache: Path, repo_id: str, folder: Path, *, commit: str = COMMIT, revision: str = "main"
) -> Path:
    """Copy every file of `folder` into `cache` as the snapshot `commit` of model `repo_id`,
    with `refs/<revision>` pointing at it. Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
