"""Manifest round trips: relative paths, symlinked folders and files, malformed lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multi2cap.data.manifest import ManifestRecord, read_manifest, write_manifest


def test_round_trip_keeps_every_field_and_relative_paths(tmp_path: Path):
    media = tmp_path / "media"
    media.mkdir()
    records = [
        ManifestRecord(
            id="-a_000001",
            dataset="vggcaps",
            split="train",
            audio=str(media / "a.flac"),
            captions=["one", "two"],
            image=str(media / "a.jpg"),
            category="dog barking",
            duration_s=9.5,
        ),
        ManifestRecord(id="b", dataset="clotho", split="dev", audio=str(media / "sub" / "b.wav")),
    ]
    out = write_manifest(records, tmp_path / "lists" / "m.jsonl")
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert raw[0]["audio"] == "../media/a.flac" and raw[0]["image"] == "../media/a.jpg"
    assert raw[1]["audio"] == "../media/sub/b.wav" and raw[1]["image"] is None
    assert read_manifest(out) == records


def test_symlinked_folder_is_resolved_but_file_names_are_kept(tmp_path: Path):
    blobs = tmp_path / "cache" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "0a1b2c").write_bytes(b"RIFF")
    real = tmp_path / "cache" / "snapshot"
    real.mkdir()
    (real / "x.flac").symlink_to(blobs / "0a1b2c")
    (tmp_path / "WavCaps").symlink_to(real)  # aac-datasets links its root into the HF cache
    record = ManifestRecord(id="x", dataset="w", split="s", audio=str(tmp_path / "WavCaps/x.flac"))
    out = write_manifest([record], tmp_path / "m.jsonl")
    assert json.loads(out.read_text())["audio"] == "cache/snapshot/x.flac"
    [back] = read_manifest(out)
    assert back.audio == str(real.resolve() / "x.flac") and Path(back.audio).read_bytes() == b"RIFF"


def test_malformed_records_name_file_and_line(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "dataset": "d", "split": "s", "audio": "a.wav"}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: manifest record 'b' lacks"):
        read_manifest(path)
    path.write_text(
        '{"id": "a", "dataset": "d", "split": "s", "audio": "a.wav", "captions": [1]}\n'
    )
    with pytest.raises(ValueError, match=r"m\.jsonl:1: .*expected list\[str\], found list\[int\]"):
        read_manifest(path)


def test_the_schema_is_declared_once_and_every_key_follows_it(tmp_path: Path):
    """`ManifestJson` is the one declaration: the dataclass fields, the written keys (in order)
    and the keys a reader requires all come from it."""
    from dataclasses import fields

    from multi2cap.data.manifest import MANIFEST_COLUMNS, REQUIRED_COLUMNS, ManifestJson

    assert tuple(f.name for f in fields(ManifestRecord)) == MANIFEST_COLUMNS
    assert tuple(ManifestJson.__annotations__) == MANIFEST_COLUMNS
    assert REQUIRED_COLUMNS == ("id", "dataset", "split", "audio")
    record = ManifestRecord(id="x", dataset="clotho", split="dev", audio=str(tmp_path / "x.wav"))
    out = write_manifest([record], tmp_path / "m.jsonl")
    assert tuple(json.loads(out.read_text())) == MANIFEST_COLUMNS
    hand_made = tmp_path / "hand.jsonl"
    hand_made.write_text('{"id": "y", "dataset": "d", "split": "s", "audio": "y.wav"}\n')
    [back] = read_manifest(hand_made)
    assert (back.captions, back.image, back.category, back.duration_s) == ([], None, None, None)
    hand_made.write_text('{"id": "y", "split": "s"}\n')
    with pytest.raises(ValueError, match=r"hand\.jsonl:1: .* lacks \['dataset', 'audio'\]"):
        read_manifest(hand_made)


def test_a_wrongly_typed_field_says_what_was_found() -> None:
    record = {"id": "x", "dataset": "d", "split": "s", "audio": "a.wav", "captions": {"0": "c"}}
    with pytest.raises(ValueError, match=r"'captions': expected list\[str\], found dict"):
        ManifestRecord.from_json(record)
