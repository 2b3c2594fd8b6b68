"""AudioCaps (Kim et al. 2019) in the aac-datasets layout.

```
{root}/AUDIOCAPS/                         (or {root} itself)
    csv_files_v1/{train,val,test}.csv     (or {train,val,test}.csv directly here)
    audio_32000Hz/{train,val,test}/{youtube_id}_{start_time}.flac
```
CSV header `audiocap_id,youtube_id,start_time,caption`, one caption per row; rows of the same
clip (`youtube_id`, `start_time`) are grouped into one record whose captions keep the file's row
order. The id is the media stem `{youtube_id}_{start_time}` (start NOT zero-padded, as
aac-datasets names the files). The audio folder may be any `audio_<rate>Hz`; other audio
extensions are accepted when no `.flac` exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from multi2cap.data.manifest import ManifestRecord
from multi2cap.data.readers.common import (
    AUDIO_EXTENSIONS,
    DatasetFormatError,
    ReadResult,
    RecordCollector,
    find_with_extensions,
    iter_csv_dicts,
    select_splits,
)

DATASET = "audiocaps"
SPLITS = ("train", "val", "test")
ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")


def audiocaps_root(root: Path) -> tuple[Path, Path]:
    """The AudioCaps folder (`root` or its `AUDIOCAPS` child) and the folder of its CSVs."""
    for candidate in (root, root / "AUDIOCAPS"):
        for csv_dir in (candidate / "csv_files_v1", candidate / "csv_files_v2", candidate):
            if any((csv_dir / f"{s}.csv").is_file() for s in SPLITS):
                return candidate, csv_dir
    raise DatasetFormatError(
        f"{root}: no AudioCaps layout found (expected csv_files_v1/ or train.csv/val.csv/test.csv "
        "in it or in AUDIOCAPS/)"
    )


def read_audiocaps(root: Path, splits: Sequence[str] | None = None) -> ReadResult:
    """Read and group the caption rows of each split (all present ones when `splits` is None)."""
    base, csv_dir = audiocaps_root(root)
    chosen = select_splits(splits, ALIASES, DATASET)
    if chosen is None:
        chosen = [s for s in SPLITS if (csv_dir / f"{s}.csv").is_file()]
    audio_dirs = sorted(p for p in base.glob("audio_*Hz") if p.is_dir())
    collector = RecordCollector()
    for split in chosen:
        csv_path = csv_dir / f"{split}.csv"
        split_dirs = [d / split for d in audio_dirs if (d / split).is_dir()]
        audio_dir = split_dirs[0] if split_dirs else base / "audio_32000Hz" / split
        clips: dict[str, tuple[int, list[str]]] = {}
        for line, row in iter_csv_dicts(csv_path, COLUMNS):
            youtube_id = row["youtube_id"].strip()
            start = row["start_time"].strip()
            if not youtube_id or not start.isdigit():
                raise DatasetFormatError(
                    f"{csv_path}:{line}: expected a youtube_id and an integer start_time, "
                    f"found {youtube_id!r}, {start!r}"
                )
            stem = f"{youtube_id}_{int(start)}"
            caption = row["caption"].strip()
            if stem not in clips:
                clips[stem] = (line, [])
            if caption:
                clips[stem][1].append(caption)
        for stem, (line, captions) in clips.items():
            found = find_with_extensions(audio_dir, stem, AUDIO_EXTENSIONS)
            audio = str(found or audio_dir / f"{stem}.flac")
            record = ManifestRecord(
                id=stem, dataset=DATASET, split=split, audio=audio, captions=captions
            )
            collector.add(record, f"{csv_path}:{line}", [audio])
    return collector.result()
