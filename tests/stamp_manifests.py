"""Small manifests of real Tux Paint sounds, pictures and descriptions, shared by the training,
probe and ablation tests (importable because `tests` is on pytest's `pythonpath`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from multi2cap.data.manifest import ManifestRecord, write_manifest

STAMPS = (
    "animals/amphibians/frog",
    "animals/birds/crow",
    "animals/birds/cuckoo",
    "animals/birds/duck",
    "animals/birds/owl",
    "animals/birds/penguin",
    "animals/insects/bee",
    "animals/mammals/aquatic/dolphin",
)


def stamp_records(
    stamps_dir: Path, split: str = "train", n: int = len(STAMPS)
) -> list[ManifestRecord]:
    """The first `n` stamps: sound, picture, the folder as category and two captions built from
    the stamp's English description (`A frog.` -> `a frog calls`, `the sound of frog`)."""
    records = []
    for stem in STAMPS[:n]:
        base = stamps_dir / stem
        if not base.with_suffix(".ogg").is_file() or not base.with_suffix(".png").is_file():
            pytest.skip(f"Tux Paint stamp {stem} missing from {stamps_dir}")
        text = base.with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0]
        thing = text.strip().rstrip(".").lower()
        records.append(
            ManifestRecord(
                id=Path(stem).name,
                dataset="tuxpaint",
                split=split,
                audio=str(base.with_suffix(".ogg")),
                captions=[f"{thing} calls", f"the sound of {thing.split(' ', 1)[-1]}"],
                image=str(base.with_suffix(".png")),
                category=Path(stem).parent.name,
            )
        )
    return records


def write_stamp_manifest(stamps_dir: Path, path: Path, n: int = len(STAMPS)) -> Path:
    write_manifest(stamp_records(stamps_dir, "test", n), path)
    return path
