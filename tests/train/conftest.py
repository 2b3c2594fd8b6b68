"""Small manifests of real Tux Paint sounds, pictures and descriptions for training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from multi2cap.data.manifest import ManifestRecord, write_manifest
from stamp_manifests import stamp_records


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
