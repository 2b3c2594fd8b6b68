"""Caption-dataset readers: Clotho, AudioCaps, WavCaps, VGGSound and VggCaps into one manifest.

`read_dataset(format, root)` returns the records and what was left out; `prepare(...)` also
writes the manifest (and optionally the list of missing media) and returns a `PrepareReport`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from multi2cap.data.manifest import write_manifest
from multi2cap.data.readers.audiocaps import read_audiocaps
from multi2cap.data.readers.clotho import read_clotho
from multi2cap.data.readers.common import (
    DatasetFormatError,
    DuplicateRecord,
    MissingMedia,
    ReadResult,
)
from multi2cap.data.readers.media_check import screen_records
from multi2cap.data.readers.vggcaps import read_vggcaps
from multi2cap.data.readers.vggsound import clip_stem, read_vggsound
from multi2cap.data.readers.wavcaps import read_wavcaps
from multi2cap.io import write_jsonl

FORMATS = ("clotho", "audiocaps", "wavcaps", "vggsound", "vggcaps")

__all__ = [
    "FORMATS",
    "DatasetFormatError",
    "DuplicateRecord",
    "MissingMedia",
    "PrepareReport",
    "ReadResult",
    "clip_stem",
    "prepare",
    "read_dataset",
]


@dataclass
class PrepareReport:
    """Summary of one `prepare` run: what was written and what was left out, and why."""

    format: str
    root: Path
    out: Path
    records: int
    captions: int
    per_split: dict[str, int]
    missing: list[MissingMedia] = field(default_factory=list)
    duplicates: list[DuplicateRecord] = field(default_factory=list)
    missing_out: Path | None = None


def read_dataset(
    format: str,
    root: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    media: str | os.PathLike[str] | None = None,
    check_media: bool = True,
) -> ReadResult:
    """Read dataset `format` laid out under `root` (see each reader's module for the layout).

    `splits` selects splits by the manifest's names (None = all); `media` is the clips folder for
    `vggsound` / `vggcaps` (ignored by the others, whose layouts fix it). Malformed files raise
    `DatasetFormatError` naming the file and line; an unknown split raises `ValueError`.
    Records whose media are absent, lie outside `root` (or `media`), or (with `check_media`)
    fail a header probe are left out and listed in `missing` with the reason (`media_check`).
    """
    base = Path(root)
    if not base.exists():
        raise DatasetFormatError(f"{base}: dataset root not found")
    media_dir = Path(media) if media is not None else None
    readers: dict[str, Callable[[], ReadResult]] = {
        "clotho": lambda: read_clotho(base, splits),
        "audiocaps": lambda: read_audiocaps(base, splits),
        "wavcaps": lambda: read_wavcaps(base, splits),
        "vggsound": lambda: read_vggsound(base, splits, media_dir),
        "vggcaps": lambda: read_vggcaps(base, splits, media_dir),
    }
    if format not in readers:
        raise ValueError(f"unknown dataset format {format!r}; expected one of {list(FORMATS)}")
    roots = [base if base.is_dir() else base.parent] + ([media_dir] if media_dir else [])
    return screen_records(readers[format](), roots, check_media)


def prepare(
    format: str,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    media: str | os.PathLike[str] | None = None,
    missing_out: str | os.PathLike[str] | None = None,
    check_media: bool = True,
) -> PrepareReport:
    """Read a dataset and write its manifest (atomically) to `out`.

    Records whose media are missing, unreadable or outside the dataset are not written; they are
    in the report and, when `missing_out` is given, written there as JSON lines
    `{id, split, path, source, reason}`.
    """
    result = read_dataset(format, root, splits, media, check_media)
    manifest = write_manifest(result.records, out)
    missing_path = None
    if missing_out is not None:
        missing_path = Path(missing_out)
        write_jsonl(missing_path, (m.to_json() for m in result.missing))
    return PrepareReport(
        format=format,
        root=Path(root),
        out=manifest,
        records=len(result.records),
        captions=sum(len(r.captions) for r in result.records),
        per_split=dict(Counter(r.split for r in result.records)),
        missing=result.missing,
        duplicates=result.duplicates,
        missing_out=missing_path,
    )
