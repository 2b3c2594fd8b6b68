"""VGGSound (Chen et al. 2020): the header-less `vggsound.csv` plus the downloaded clips.

CSV rows are `ytid,start_seconds,label,split`; labels holding commas are quoted
(`"male speech, man speaking"`), so rows go through the csv module, never `str.split`. A clip is
the file `{ytid}_{start:06d}.<ext>` anywhere under the media folder (the released tarballs nest
it several folders deep); ids may begin with `-` and contain `_`. The manifest record's audio is
the clip itself (its audio track is decoded by `multi2cap.media`), its category the label, its
split the CSV's `train`/`test`, and it has no captions (VGGSound is labelled, not captioned).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from multi2cap.data.manifest import ManifestRecord
from multi2cap.data.readers.common import (
    AUDIO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DatasetFormatError,
    ReadResult,
    RecordCollector,
    index_media,
    iter_csv,
    select_splits,
)

DATASET = "vggsound"
ALIASES = {"train": "train", "test": "test"}
CSV_NAME = "vggsound.csv"


def clip_stem(ytid: str, start_s: int) -> str:
    """The VGGSound clip name without extension: `{ytid}_{start:06d}`."""
    return f"{ytid}_{start_s:06d}"


def vggsound_paths(root: Path, media: Path | None = None) -> tuple[Path, Path]:
    """(`vggsound.csv`, media folder) for `root`, a folder holding the CSV or the CSV itself.

    Clips are searched under `media` when given, else `{root}/video` when it exists, else `root`.
    """
    csv_path = root if root.is_file() else root / CSV_NAME
    if not csv_path.is_file():
        raise DatasetFormatError(f"{csv_path}: file not found (VGGSound's {CSV_NAME})")
    folder = csv_path.parent
    if media is None:
        media = folder / "video" if (folder / "video").is_dir() else folder
    if not media.is_dir():
        raise DatasetFormatError(f"{media}: media folder not found")
    return csv_path, media


def read_vggsound(
    root: Path, splits: Sequence[str] | None = None, media: Path | None = None
) -> ReadResult:
    """Read `vggsound.csv` and locate each clip (rows of other splits are skipped)."""
    csv_path, media_dir = vggsound_paths(root, media)
    chosen = select_splits(splits, ALIASES, DATASET)
    found = index_media(media_dir, VIDEO_EXTENSIONS + AUDIO_EXTENSIONS)
    collector = RecordCollector()
    for line, row in iter_csv(csv_path, n_columns=4):
        ytid, start, label, split = (cell.strip() for cell in row)
        if not ytid or not start.isdigit():
            raise DatasetFormatError(
                f"{csv_path}:{line}: expected `ytid,start_seconds,label,split` with an integer "
                f"start, found {row}"
            )
        if split not in ALIASES:
            raise DatasetFormatError(
                f"{csv_path}:{line}: split must be train or test, not {split!r}"
            )
        if chosen is not None and split not in chosen:
            continue
        stem = clip_stem(ytid, int(start))
        path = found.get(stem)
        audio = str(path or media_dir / f"{stem}.mp4")
        record = ManifestRecord(id=stem, dataset=DATASET, split=split, audio=audio, category=label)
        collector.add(record, f"{csv_path}:{line}", [audio])
    return collector.result()
