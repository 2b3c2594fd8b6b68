"""What wrote a file: the multi2cap version, and the git commit when it ran from a checkout.

Checkpoints (`config.yaml`'s `written_by` block) and training runs record it, the way transformers
writes `transformers_version` into a saved config, so a result can be traced to the code that
produced it. Loading a checkpoint written by a newer major version warns: its config or weights
may mean something this version does not know.
"""

from __future__ import annotations

import functools
import subprocess
import warnings
from pathlib import Path
from typing import Any

from multi2cap import __version__

#: The key under which saved configs carry `provenance()`.
WRITTEN_BY_KEY = "written_by"


@functools.cache
def provenance() -> dict[str, Any]:
    """`{"multi2cap_version": "0.2.0"}`, plus `git_commit` (40 hex digits) and `git_dirty` (bool)
    when the imported package lives in a git work tree with `git` on PATH."""
    record: dict[str, Any] = {"multi2cap_version": __version__}
    commit, dirty = _git_state(Path(__file__).resolve().parent)
    if commit is not None:
        record["git_commit"] = commit
        record["git_dirty"] = dirty
    return record


def _git_state(folder: Path) -> tuple[str | None, bool]:
    """HEAD and whether tracked files differ from it, for the checkout holding `folder`; (None,
    False) for an installed wheel, a missing `git` or anything git refuses (a timeout included)."""
    if not any((parent / ".git").exists() for parent in (folder, *folder.parents)):
        return None, False
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, False
    if len(head) != 40:
        return None, False
    return head, bool(status.strip())


def major_version(version: str) -> int | None:
    """The leading integer of a version string ("0.2.0" -> 0); None when there is none."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def check_written_by(written_by: Any, source: str) -> None:
    """Warn when `source` (a checkpoint) was written by a newer major version of multi2cap.

    Older checkpoints carry no record and load silently; a record that is not a mapping is
    ignored (it says nothing about compatibility)."""
    if not isinstance(written_by, dict):
        return
    theirs = major_version(str(written_by.get("multi2cap_version", "")))
    ours = major_version(__version__)
    if theirs is not None and ours is not None and theirs > ours:
        warnings.warn(
            f"{source} was written by multi2cap {written_by['multi2cap_version']}, newer than "
            f"this multi2cap {__version__} (major version {theirs} > {ours}); it may not load "
            "or behave as it did: upgrade multi2cap (pip install -U multi2cap)",
            UserWarning,
            stacklevel=3,
        )
