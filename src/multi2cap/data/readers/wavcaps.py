"""WavCaps (Mei et al. 2024) in the HF / aac-datasets layout.

```
{root}/WavCaps/                           (or {root} itself)
    json_files/AudioSet_SL/as_final.json
    json_files/BBC_Sound_Effects/bbc_final.json
    json_files/FreeSound/fsd_final.json
    json_files/SoundBible/sb_final.json
    Audio/{AudioSet_SL,BBC_Sound_Effects,FreeSound,SoundBible}/*.flac
```
Each JSON is `{"data": [{"id", "caption", "duration", ...}]}` (the GitHub copy of `sb_final.json`
is a bare list; both are read). The `audio` / `wav_path` keys of the release are placeholders, so
the file name comes from the id as aac-datasets derives it: AudioSet_SL ids are `Y<ytid>.wav` ->
`Y<ytid>.flac`, the others `<id>.flac`. WavCaps has no train/test split: the manifest split is the
source subset (`audioset`, `bbc`, `freesound`, `soundbible`), and the id is `<subset>/<stem>`
because FreeSound and BBC ids are both bare numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multi2cap.data.manifest import ManifestRecord
from multi2cap.data.readers.common import (
    DatasetFormatError,
    ReadResult,
    RecordCollector,
    read_text,
    select_splits,
)

DATASET = "wavcaps"
# manifest split -> (source folder, JSON file name)
SOURCES = {
    "audioset": ("AudioSet_SL", "as_final.json"),
    "bbc": ("BBC_Sound_Effects", "bbc_final.json"),
    "freesound": ("FreeSound", "fsd_final.json"),
    "soundbible": ("SoundBible", "sb_final.json"),
}
ALIASES = {
    **{s: s for s in SOURCES},
    **{folder.lower(): s for s, (folder, _) in SOURCES.items()},
    "as": "audioset",
    "fsd": "freesound",
    "sb": "soundbible",
}


def wavcaps_root(root: Path) -> Path:
    """The folder holding `json_files/`: `root` itself or its `WavCaps` child."""
    for candidate in (root, root / "WavCaps"):
        if (candidate / "json_files").is_dir():
            return candidate
    raise DatasetFormatError(
        f"{root}: no WavCaps layout found (expected json_files/ in it or in WavCaps/)"
    )


def read_wavcaps(root: Path, splits: Sequence[str] | None = None) -> ReadResult:
    """Read the JSON of each source subset (all present ones when `splits` is None)."""
    base = wavcaps_root(root)
    chosen = select_splits(splits, ALIASES, DATASET)
    if chosen is None:
        chosen = [s for s, (d, f) in SOURCES.items() if (base / "json_files" / d / f).is_file()]
        if not chosen:
            raise DatasetFormatError(f"{base / 'json_files'}: no <source>/<name>_final.json file")
    collector = RecordCollector()
    for split in chosen:
        folder, name = SOURCES[split]
        json_path = base / "json_files" / folder / name
        audio_dir = base / "Audio" / folder
        for index, item in enumerate(_items(json_path)):
            where = f"{json_path}:data[{index}]"
            raw_id = item.get("id")
            caption = item.get("caption")
            if raw_id is None or not isinstance(caption, str):
                raise DatasetFormatError(f"{where}: item needs an 'id' and a string 'caption'")
            raw_id = str(raw_id).strip()
            file_name = (
                raw_id.removesuffix(".wav") + ".flac" if split == "audioset" else f"{raw_id}.flac"
            )
            duration = item.get("duration")
            audio = str(audio_dir / file_name)
            record = ManifestRecord(
                id=f"{split}/{Path(file_name).stem}",
                dataset=DATASET,
                split=split,
                audio=audio,
                captions=[caption.strip()] if caption.strip() else [],
                duration_s=float(duration) if isinstance(duration, int | float) else None,
            )
            collector.add(record, where, [audio])
    return collector.result()


def _items(json_path: Path) -> list[dict[str, Any]]:
    try:
        document = json.loads(read_text(json_path))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{json_path}:{err.lineno}: malformed JSON ({err.msg})") from err
    items = document.get("data") if isinstance(document, dict) else document
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DatasetFormatError(f"{json_path}: expected {{'data': [{{...}}, ...]}} or a list")
    return items
