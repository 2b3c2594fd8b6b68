"""Clotho v2.1 (Drossos et al.) in the aac-datasets layout.

```
{root}/CLOTHO_v2.1/                      (or {root} itself)
    clotho_csv_files/clotho_captions_{development,validation,evaluation}.csv
    clotho_audio_files/{development,validation,evaluation}/<file_name>
```
Captions CSV: header `file_name,caption_1,...,caption_5`, one row per audio file. Manifest splits
are aac-datasets' subset names `dev`, `val`, `eval`; the id is the `file_name` (unique across
Clotho's splits, and the key DCASE submissions use).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from multi2cap.data.manifest import ManifestRecord
from multi2cap.data.readers.common import (
    DatasetFormatError,
    ReadResult,
    RecordCollector,
    iter_csv_dicts,
    select_splits,
)

DATASET = "clotho"
# manifest split -> folder / file suffix used by the release
SPLIT_FOLDERS = {"dev": "development", "val": "validation", "eval": "evaluation"}
ALIASES = {**{s: s for s in SPLIT_FOLDERS}, **{f: s for s, f in SPLIT_FOLDERS.items()}}
CAPTION_COLUMNS = tuple(f"caption_{i}" for i in range(1, 6))


def clotho_root(root: Path) -> Path:
    """The folder holding `clotho_csv_files/`: `root` itself or its `CLOTHO_v2.1` child."""
    for candidate in (root, root / "CLOTHO_v2.1"):
        if (candidate / "clotho_csv_files").is_dir():
            return candidate
    raise DatasetFormatError(
        f"{root}: no Clotho layout found (expected clotho_csv_files/ in it or in CLOTHO_v2.1/)"
    )


def read_clotho(root: Path, splits: Sequence[str] | None = None) -> ReadResult:
    """Read the captions CSV of each split (all present ones when `splits` is None)."""
    base = clotho_root(root)
    chosen = select_splits(splits, ALIASES, DATASET)
    csv_dir = base / "clotho_csv_files"
    if chosen is None:
        chosen = [
            s for s, f in SPLIT_FOLDERS.items() if (csv_dir / f"clotho_captions_{f}.csv").is_file()
        ]
        if not chosen:
            raise DatasetFormatError(f"{csv_dir}: no clotho_captions_<split>.csv file")
    collector = RecordCollector()
    for split in chosen:
        folder = SPLIT_FOLDERS[split]
        csv_path = csv_dir / f"clotho_captions_{folder}.csv"
        audio_dir = base / "clotho_audio_files" / folder
        for line, row in iter_csv_dicts(csv_path, ("file_name", *CAPTION_COLUMNS)):
            file_name = row["file_name"].strip()
            if not file_name:
                raise DatasetFormatError(f"{csv_path}:{line}: empty file_name")
            captions = [row[c].strip() for c in CAPTION_COLUMNS if row[c].strip()]
            if not captions:
                raise DatasetFormatError(f"{csv_path}:{line}: {file_name!r} has no caption")
            audio = str(audio_dir / file_name)
            record = ManifestRecord(
                id=file_name, dataset=DATASET, split=split, audio=audio, captions=captions
            )
            collector.add(record, f"{csv_path}:{line}", [audio])
    return collector.result()
