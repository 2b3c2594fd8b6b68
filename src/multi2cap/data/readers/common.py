"""What every caption-dataset reader shares: the result it returns, the CSV reader that names the
file and line of a malformed row, and the media lookups.

Policy for missing media (docs/data_formats.md: never silently dropped): a record whose audio (or image)
file is absent is kept *out* of the manifest, because every consumer of a manifest (training,
evaluation, analysis) would otherwise fail on it later, and is listed in `ReadResult.missing` with
the path that was expected and the row that named it. Duplicate ids keep their first occurrence
and the later ones are listed in `ReadResult.duplicates`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multi2cap.data.manifest import ManifestRecord

# Tried in this order when a dataset names a clip by stem only; the first existing file wins.
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3", ".m4a", ".aac", ".opus")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


# `MissingMedia.reason` of an absent file, and the start of that of a path outside the roots.
NOT_FOUND = "file not found"
OUTSIDE_ROOT = "path leaves the dataset root"


class DatasetFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file (and line when known)."""


@dataclass
class MissingMedia:
    """A record left out of the manifest because a media file it needs is absent, unreadable or
    outside the dataset's folders (`reason` says which)."""

    id: str
    split: str
    path: str
    source: str  # "file:line" of the row (or JSON item) that names the clip
    reason: str = NOT_FOUND

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class DuplicateRecord:
    """A second row for an id already read; the first one is kept."""

    id: str
    source: str
    first_source: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class ReadResult:
    """What a reader found: the usable records and everything it left out, with reasons."""

    records: list[ManifestRecord] = field(default_factory=list)
    missing: list[MissingMedia] = field(default_factory=list)
    duplicates: list[DuplicateRecord] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # id -> "file:line" of its row


class RecordCollector:
    """Accumulates records in input order, checking media presence and id uniqueness."""

    def __init__(self) -> None:
        self._records: dict[str, ManifestRecord] = {}
        self._sources: dict[str, str] = {}
        self._missing: list[MissingMedia] = []
        self._duplicates: list[DuplicateRecord] = []
        self._missing_ids: dict[str, str] = {}

    def add(self, record: ManifestRecord, source: str, media: Sequence[str]) -> None:
        """Add `record` unless its id was seen already or one of its `media` files is absent."""
        first = self._sources.get(record.id) or self._missing_ids.get(record.id)
        if first is not None:
            self._duplicates.append(DuplicateRecord(record.id, source, first))
            return
        absent = [path for path in media if not os.path.isfile(path)]
        if absent:
            self._missing_ids[record.id] = source
            self._missing.append(MissingMedia(record.id, record.split, absent[0], source))
            return
        self._records[record.id] = record
        self._sources[record.id] = source

    def result(self) -> ReadResult:
        return ReadResult(
            list(self._records.values()), self._missing, self._duplicates, dict(self._sources)
        )


def read_text(path: Path) -> str:
    """Read a UTF-8 text file (a BOM is ignored); a decoding error names the file and line."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DatasetFormatError(f"{path}:{line}: not valid UTF-8 ({err.reason})") from err


def iter_csv(path: Path, *, n_columns: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield `(line, row)` for each non-blank row of a CSV file, `line` 1-based.

    Quoted fields may hold commas and newlines; `line` is the row's first physical line. With
    `n_columns`, a row of another width raises `DatasetFormatError` (a row spanning several lines
    is then most likely an unbalanced quote, and the message says so).
    """
    text = read_text(path)
    # A field can be as long as the file; the csv module's default limit is 131,072 characters.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DatasetFormatError(f"{path}:{reader.line_num}: malformed CSV ({err})") from err
        end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if n_columns is not None and len(row) != n_columns:
            hint = f" (the row spans lines {start}-{end}: unbalanced quote?)" if end > start else ""
            raise DatasetFormatError(
                f"{path}:{start}: expected {n_columns} columns, found {len(row)}{hint}"
            )
        yield start, row


def iter_csv_dicts(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield `(line, {column: value})` for a CSV with a header holding at least `required`."""
    rows = iter_csv(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DatasetFormatError(
            f"{path}: empty file, expected a header {list(required)}"
        ) from None
    header = [h.strip() for h in header]
    absent = [c for c in required if c not in header]
    if absent:
        raise DatasetFormatError(f"{path}:1: header lacks column(s) {absent}; found {header}")
    for line, row in rows:
        if len(row) != len(header):
            raise DatasetFormatError(
                f"{path}:{line}: expected {len(header)} columns, found {len(row)}"
                + (" (a field holds a line break: unbalanced quote?)" if _multiline(row) else "")
            )
        yield line, dict(zip(header, row, strict=True))


def _multiline(row: list[str]) -> bool:
    return any("\n" in cell or "\r" in cell for cell in row)


def find_with_extensions(folder: Path, stem: str, extensions: Iterable[str]) -> Path | None:
    """The first `folder/stem+ext` that exists, or None."""
    for ext in extensions:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def index_media(folder: Path, extensions: Sequence[str]) -> dict[str, Path]:
    """Map file stem -> path for every file under `folder` (recursively) with one of `extensions`.

    One directory walk instead of one `stat` per candidate name: VGGSound-sized folders (200k
    clips, often nested as the tarballs unpack) are indexed in seconds. When two files share a
    stem, the extension listed first wins.
    """
    rank = {ext: i for i, ext in enumerate(extensions)}
    best: dict[str, tuple[int, Path]] = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            stem, ext = os.path.splitext(name)
            order = rank.get(ext.lower())
            if order is None:
                continue
            if stem not in best or order < best[stem][0]:
                best[stem] = (order, Path(dirpath) / name)
    return {stem: path for stem, (_, path) in best.items()}


def select_splits(
    requested: Sequence[str] | None, aliases: dict[str, str], dataset: str
) -> list[str] | None:
    """Canonical split names for `requested` (None = all); unknown names raise `ValueError`."""
    if not requested:
        return None
    chosen = []
    for name in requested:
        canonical = aliases.get(name.strip().lower())
        if canonical is None:
            known = sorted(set(aliases.values()))
            raise ValueError(f"unknown {dataset} split {name!r}; expected one of {known}")
        if canonical not in chosen:
            chosen.append(canonical)
    return chosen
