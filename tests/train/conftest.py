"""Small manifests of real Tux Paint sounds, pictures and descriptions for training tests."""

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


def stamp_records(stamps_dir: Path, split: str = "train") -> list[ManifestRecord]:
    """One record per stamp: its sound, its picture, and two captions built from its English
    description (`A frog.` -> `a frog calls`, `the sound of a frog`)."""
    records = []
    for stem in STAMPS:
        base = stamps_dir / stem
        if not base.with_suffix(".ogg").is_file():
            pytest.skip(f"Tux Paint stamp {stem} missing from {stamps_dir}")
        text = base.with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0]
        thing = text.strip().rstrip(".").lower()
        records.append(
            ManifestRecord(
                id=Path(stem).name,
                dataset="tuxpaint",
                split=split,
                audio=str(base.with_suffix(".ogg")),
                captions=[f"{thing} calls", f"the sound of {thing.split(' ', 1)[1]}"],
                image=str(base.with_suffix(".png")),
                category=Path(stem).parent.name,
            )
        )
    return records


@pytest.fixture(scope="session")
def stamp_manifests(tuxpaint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with `train.jsonl` (8 clips with images), `val.jsonl` (the same 8 clips) and
    `corrupt.jsonl` (the 8 clips plus one unreadable file)."""
    folder = tmp_path_factory.mktemp("manifests")
    records = stamp_records(tuxpaint_dir)
    write_manifest(records, folder / "train.jsonl")
    write_manifest(stamp_records(tuxpaint_dir, "val"), folder / "val.jsonl")
    broken = folder / "broken.ogg"
    broken.write_bytes(b"OggS this is not an ogg stream" * 10)
    bad = ManifestRecord(
        id="broken_clip",
        dataset="tuxpaint",
        split="train",
        audio=str(broken),
        captions=["nothing at all"],
        image=records[0].image,
    )
    write_manifest([*records[:3], bad, *records[3:]], folder / "corrupt.jsonl")
    return folder
