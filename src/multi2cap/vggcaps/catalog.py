"""Which clips to caption: the categories CSV joined with the video files on disk, by id.

Two CSV layouts are accepted:
- VGGSound's `vggsound.csv`: no header, rows `ytid,start_seconds,label,split`; labels may hold
  quoted commas; the clip file is `{ytid}_{start:06d}.<ext>`.
- A generic CSV with header `id,category` (optionally `split`); the clip file is `{id}.<ext>`.

Rows are always joined to files by id, never by position.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
# VGGSound clip names: `{ytid}_{start:06d}` (six digits at least, so `train_00001` is no match).
_VGGSOUND_STEM = re.compile(r"^(?P<ytid>.+)_(?P<start>\d{6,})$")


class CatalogError(ValueError):
    """The categories CSV or the video folder cannot be used; the message names the file."""


class CatalogWarning(UserWarning):
    """The CSV is usable but odd (e.g. one id listed twice with different categories)."""


@dataclass(frozen=True)
class ClipSpec:
    """One row of the categories CSV. `start_s` is the start of the segment in the YouTube video
    (VGGSound) or None; `vggsound_split` is the official split when the CSV has one."""

    id: str
    category: str
    youtube_id: str | None = None
    start_s: float | None = None
    vggsound_split: str | None = None


def read_categories(path: str | os.PathLike[str]) -> list[ClipSpec]:
    """Parse a categories CSV (either layout), sorted by id. A repeated id keeps its first row
    (a `CatalogWarning` lists ids repeated with a different category)."""
    csv_path = Path(path)
    if not csv_path.is_file():
        raise CatalogError(f"categories CSV not found: {csv_path}")
    with open(csv_path, encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise CatalogError(f"{csv_path}: no rows")
    header = [cell.strip().lower() for cell in rows[0]]
    specs = _generic(csv_path, header, rows[1:]) if "id" in header else _vggsound(csv_path, rows)
    unique: dict[str, ClipSpec] = {}
    conflicts = []
    for spec in specs:
        if "/" in spec.id or "\\" in spec.id or spec.id.startswith("."):
            raise CatalogError(f"{csv_path}: clip id {spec.id!r} cannot be a file name")
        first = unique.setdefault(spec.id, spec)
        if first.category != spec.category:
            conflicts.append(f"{spec.id} ({first.category!r} kept, {spec.category!r} dropped)")
    if conflicts:
        warnings.warn(
            f"{csv_path}: {len(conflicts)} clip ids appear with different categories; the first "
            f"row wins: {'; '.join(conflicts[:5])}{' ...' if len(conflicts) > 5 else ''}",
            CatalogWarning,
            stacklevel=2,
        )
    return sorted(unique.values(), key=lambda s: s.id)


def _generic(csv_path: Path, header: list[str], rows: list[list[str]]) -> list[ClipSpec]:
    if "category" not in header:
        raise CatalogError(f"{csv_path}: a CSV with a header needs columns 'id,category'")
    id_col, cat_col = header.index("id"), header.index("category")
    split_col = header.index("split") if "split" in header else None
    specs = []
    for number, row in enumerate(rows, start=2):
        if len(row) <= max(id_col, cat_col):
            raise CatalogError(f"{csv_path}:{number}: expected columns {header}, got {row}")
        clip_id, category = row[id_col].strip(), row[cat_col].strip()
        if not clip_id or not category:
            raise CatalogError(f"{csv_path}:{number}: empty id or category")
        match = _VGGSOUND_STEM.match(clip_id)
        specs.append(
            ClipSpec(
                id=clip_id,
                category=category,
                youtube_id=match["ytid"] if match else None,
                start_s=float(match["start"]) if match else None,
                vggsound_split=row[split_col].strip() if split_col is not None else None,
            )
        )
    return specs


def _vggsound(csv_path: Path, rows: list[list[str]]) -> list[ClipSpec]:
    specs = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 3:
            raise CatalogError(
                f"{csv_path}:{number}: expected VGGSound rows 'ytid,start,label,split' "
                f"(or a header 'id,category'), got {row}"
            )
        ytid, start_text, label = row[0].strip(), row[1].strip(), row[2].strip()
        try:
            start = int(start_text)
        except ValueError as err:
            raise CatalogError(
                f"{csv_path}:{number}: start seconds {start_text!r} is not an integer"
            ) from err
        specs.append(
            ClipSpec(
                id=f"{ytid}_{start:06d}",
                category=label,
                youtube_id=ytid,
                start_s=float(start),
                vggsound_split=row[3].strip() if len(row) > 3 else None,
            )
        )
    return specs


def index_videos(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Map file stem -> path for every video under `directory` (recursively).

    When the same stem exists twice, the lexicographically first path wins, so the choice does not
    depend on the file system's listing order.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CatalogError(f"video folder not found: {root}")
    found: dict[str, Path] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            stem, ext = os.path.splitext(name)
            if ext.lower() not in VIDEO_EXTENSIONS:
                continue
            path = Path(dirpath) / name
            if stem not in found or str(path) < str(found[stem]):
                found[stem] = path
    return found
