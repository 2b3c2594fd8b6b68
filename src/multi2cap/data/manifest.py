"""The manifest: one JSON line per audio clip, the common currency between readers, the VggCaps
builder, the dataset analysis and training (schema: docs/data_formats.md).

Paths inside a manifest file are relative to the manifest's folder; `read_manifest` makes them
absolute and `write_manifest` makes them relative again. Directory symlinks are resolved (so the
relative path is right wherever the manifest's folder really is) but a media file's own name is
kept even when the file is a symlink (the HF cache links `x.flac` to an extension-less blob).
Both directions cost no system call per record beyond one per distinct media folder, so
200k-clip manifests read and write in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict, cast

from multi2cap.io import read_jsonl, type_name, write_jsonl


class _ManifestKeys(TypedDict):
    id: str
    dataset: str
    split: str
    audio: str  # path relative to the manifest's folder


class ManifestJson(_ManifestKeys, total=False):
    """One manifest line as it is on disk: the schema, declared once.

    `write_manifest` writes every key; `read_manifest` requires only the four of `_ManifestKeys`
    (hand-made manifests may leave out the rest). `ManifestRecord` has one field per key (a test
    holds them equal) and converts through `MANIFEST_COLUMNS`, so a new key is added here and
    as a field, nowhere else.
    """

    captions: list[str]
    image: str | None  # path relative to the manifest's folder
    category: str | None
    duration_s: float | None  # seconds


MANIFEST_COLUMNS: tuple[str, ...] = tuple(ManifestJson.__annotations__)
"""The manifest's keys in file order, derived from `ManifestJson`."""

REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    c for c in MANIFEST_COLUMNS if c in ManifestJson.__required_keys__
)


@dataclass
class ManifestRecord:
    """One audio clip with its reference captions (the in-memory form of `ManifestJson`).

    `audio` and `image` are paths (absolute once read); `duration_s` is in seconds, `None` when the
    reader could not know it without decoding the file.
    """

    id: str
    dataset: str
    split: str
    audio: str
    captions: list[str] = field(default_factory=list)
    image: str | None = None
    category: str | None = None
    duration_s: float | None = None

    def to_json(self, relative_to: Path | None = None) -> ManifestJson:
        record = cast(ManifestJson, {name: getattr(self, name) for name in MANIFEST_COLUMNS})
        record["captions"] = list(self.captions)
        if relative_to is not None:
            record["audio"] = _relative(self.audio, relative_to)
            if self.image is not None:
                record["image"] = _relative(self.image, relative_to)
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any], base: Path | None = None) -> ManifestRecord:
        missing = [k for k in REQUIRED_COLUMNS if k not in record]
        if missing:
            raise ValueError(f"manifest record {record.get('id', '?')!r} lacks {missing}")
        captions = record.get("captions") or []
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise ValueError(
                f"manifest record {record['id']!r}: 'captions': expected list[str], "
                f"found {type_name(captions)}"
            )
        values: dict[str, Any] = {name: record.get(name) for name in MANIFEST_COLUMNS}
        values.update({name: str(record[name]) for name in REQUIRED_COLUMNS})
        values["captions"] = list(captions)
        if base is not None:
            values["audio"] = _absolute(values["audio"], base)
            values["image"] = _absolute(values["image"], base) if values["image"] else None
        if values["duration_s"] is not None:
            values["duration_s"] = float(values["duration_s"])
        return cls(**values)


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRecord]:
    """Read a manifest, resolving media paths against the manifest's folder."""
    manifest = Path(path)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    base = manifest.resolve().parent
    records = []
    for number, raw in enumerate(read_jsonl(manifest, skip_torn_tail=False), start=1):
        try:
            records.append(ManifestRecord.from_json(raw, base))
        except ValueError as err:
            raise ValueError(f"{manifest}:{number}: {err}") from err
    return records


def write_manifest(records: list[ManifestRecord], path: str | os.PathLike[str]) -> Path:
    """Write records atomically with media paths relative to the manifest's folder."""
    manifest = Path(path)
    base = manifest.resolve().parent
    write_jsonl(manifest, (r.to_json(relative_to=base) for r in records))
    return manifest


def _relative(path: str, base: Path) -> str:
    """`path` relative to `base` (a resolved folder), through its folder's real location."""
    folder, name = os.path.split(os.path.abspath(path))
    target = os.path.join(_real_folder(folder), name)
    try:
        return os.path.relpath(target, base)
    except ValueError:  # another drive on Windows
        return target


@lru_cache(maxsize=65536)
def _real_folder(folder: str) -> str:
    # Cached: a dataset has few media folders and many files.
    return str(Path(folder).resolve())


def _absolute(path: str, base: Path) -> str:
    """`path` (absolute, or relative to the resolved folder `base`) as a normalised absolute path.

    Lexical normalisation is exact for what `write_manifest` writes (a path between two
    symlink-free folders); a hand-written `..` that crosses a symlink is resolved as text.
    """
    return os.path.normpath(os.path.join(base, path))
