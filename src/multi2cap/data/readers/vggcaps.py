"""VggCaps JSONL (docs/data_formats.md), as `multi2cap vggcaps build` writes it.

A record holds `id` (`{ytid}_{start:06d}`), `split`, `category`, `caption`, `audio` and `frame`
(paths relative to the JSONL's folder), `duration_s` and provenance fields the manifest does not
carry. The frame becomes the manifest's `image` (the pre-training input of the visual encoder).
The released dataset carries ids and captions only: give `media` (e.g. the VGGSound clips folder)
and records without an `audio` path are matched to `{id}.<ext>` under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multi2cap.data.manifest import ManifestRecord
from multi2cap.data.readers.common import (
    AUDIO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DatasetFormatError,
    ReadResult,
    RecordCollector,
    index_media,
    select_splits,
)
from multi2cap.io import read_jsonl

DATASET = "vggcaps"
ALIASES = {"train": "train", "test": "test"}
JSONL_NAME = "vggcaps.jsonl"


def read_vggcaps(
    root: Path, splits: Sequence[str] | None = None, media: Path | None = None
) -> ReadResult:
    """Read a VggCaps JSONL (`root` is the file or a folder holding `vggcaps.jsonl`)."""
    path = root if root.is_file() else root / JSONL_NAME
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found (the VggCaps {JSONL_NAME})")
    base = path.resolve().parent
    chosen = select_splits(splits, ALIASES, DATASET)
    found = index_media(media, VIDEO_EXTENSIONS + AUDIO_EXTENSIONS) if media else {}
    collector = RecordCollector()
    try:
        raw_records = list(read_jsonl(path))
    except ValueError as err:
        raise DatasetFormatError(str(err)) from err
    for index, raw in enumerate(raw_records):
        where = f"{path}:record[{index}]"
        record = _to_manifest(raw, base, found, where)
        if chosen is not None and record.split not in chosen:
            continue
        collector.add(record, where, [p for p in (record.audio, record.image) if p])
    return collector.result()


def _to_manifest(
    raw: dict[str, Any], base: Path, found: dict[str, Path], where: str
) -> ManifestRecord:
    clip_id, caption, split = raw.get("id"), raw.get("caption"), raw.get("split")
    if not isinstance(clip_id, str) or not clip_id:
        raise DatasetFormatError(f"{where}: record needs a string 'id'")
    if not isinstance(caption, str) or not caption.strip():
        raise DatasetFormatError(f"{where}: record {clip_id!r} needs a non-empty 'caption'")
    if split not in ALIASES:
        raise DatasetFormatError(f"{where}: record {clip_id!r} has split {split!r}, not train/test")
    audio = _resolve(raw.get("audio"), base)
    if audio is None:
        match = found.get(clip_id)
        audio = str(match) if match else f"<{clip_id}: no 'audio' path and no match in --media>"
    duration = raw.get("duration_s")
    return ManifestRecord(
        id=clip_id,
        dataset=DATASET,
        split=split,
        audio=audio,
        captions=[caption.strip()],
        image=_resolve(raw.get("frame"), base),
        category=raw.get("category"),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
    )


def _resolve(path: Any, base: Path) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    candidate = Path(path)
    return str(candidate if candidate.is_absolute() else base / candidate)
