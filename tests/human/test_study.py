"""Study creation: seeded sampling, per-rater orders, gold items, media, links and tokens."""

from __future__ import annotations

import csv
import json
import sqlite3
import stat
from pathlib import Path

import pytest
import soundfile as sf
from PIL import Image

from multi2cap.data.manifest import ManifestRecord, read_manifest
from multi2cap.human.study import (
    create_study,
    gold_pairs,
    rater_names,
    rater_order,
    sample_records,
)


def _records(n: int, split: str = "test") -> list[ManifestRecord]:
    return [
        ManifestRecord(
            id=f"clip{i:03d}",
            dataset="x",
            split=split,
            audio=f"/a/{i}.flac",
            captions=[f"caption {i}"],
            category=f"cat{i % 3}",
        )
        for i in range(n)
    ]


def test_sampling_is_seeded_and_independent_of_file_order() -> None:
    records = _records(50)
    first = [r.id for r in sample_records(records, "mos", "test", 10, seed=3)]
    again = [r.id for r in sample_records(list(reversed(records)), "mos", "test", 10, seed=3)]
    other = [r.id for r in sample_records(records, "mos", "test", 10, seed=4)]
    assert first == again
    assert first != other
    assert len(set(first)) == 10


def test_sampling_refusals_name_the_problem() -> None:
    records = _records(5)
    with pytest.raises(ValueError, match=r"no record of split 'test' .*\['train'\]"):
        sample_records(_records(3, "train"), "mos", "test", 2, seed=0)
    with pytest.raises(ValueError, match="--n 6 asks for more items than the 5"):
        sample_records(records, "mos", "test", 6, seed=0)
    # The captions study needs a frame: records without `image` are not usable.
    with pytest.raises(ValueError, match=r"0 records .* and a frame"):
        sample_records(records, "captions", "test", 1, seed=0)


def test_rater_order_is_a_seeded_permutation_per_rater() -> None:
    a = rater_order(20, 7, "alice")
    assert sorted(a) == list(range(20))
    assert a == rater_order(20, 7, "alice")
    assert a != rater_order(20, 7, "bob")
    assert a != rater_order(20, 8, "alice")


def test_gold_pairs_take_the_caption_of_another_clip_of_another_category() -> None:
    sample = _records(9)
    pairs = gold_pairs(sample, 3, seed=1)
    assert len({audio.id for audio, _ in pairs}) == 3
    for audio, caption in pairs:
        assert audio.id != caption.id
        assert audio.category != caption.category
    with pytest.raises(ValueError, match="--gold 10 needs at least 10"):
        gold_pairs(sample, 10, seed=1)


def test_rater_names(tmp_path: Path) -> None:
    assert rater_names(None, None, "mos") == [f"r{i:02d}" for i in range(1, 11)]
    assert len(rater_names(None, None, "captions")) == 8  # the paper's 8 captioners
    names = tmp_path / "names.txt"
    names.write_text("ann\n# a comment\n\nbo.b\n", encoding="utf-8")
    assert rater_names(None, names, "mos") == ["ann", "bo.b"]
    names.write_text("ann\n../evil\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not allowed"):
        rater_names(None, names, "mos")
    names.write_text("ann\nann\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate"):
        rater_names(None, names, "mos")


def test_create_mos_study_folder(make_study, stamp_manifest: Path) -> None:
    study = make_study("mos", n=5, seed=2, gold=2)
    folder = study.path
    assert study.settings.manifest_sha256 and len(study.settings.sample) == 5
    # The sample is what sample_records gives for the same seed.
    expected = sample_records(read_manifest(stamp_manifest), "mos", "test", 5, seed=2)
    assert study.settings.sample == [r.id for r in expected]
    audio = sorted((folder / "media" / "audio").iterdir())
    assert [p.name for p in audio] == [f"{i:04d}.flac" for i in range(1, 6)]
    info = sf.info(audio[0])
    assert info.format == "FLAC" and info.duration > 0.3
    assert not (folder / "media" / "frames").exists()  # no frames in a MOS study
    with open(folder / "links.csv", newline="") as handle:
        links = list(csv.DictReader(handle))
    assert [row["rater"] for row in links] == ["alice", "bob"]
    tokens = [row["link"].rsplit("/", 1)[1] for row in links]
    assert all(len(t) == 22 for t in tokens)  # 16 random bytes, URL-safe base64
    assert stat.S_IMODE((folder / "links.csv").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "admin_link.txt").stat().st_mode) == 0o600
    conn = sqlite3.connect(folder / "study.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        dump = "\n".join(conn.iterdump())
        assert not any(t in dump for t in tokens)  # only digests are stored
        items = conn.execute("SELECT item, gold, caption FROM items ORDER BY id").fetchall()
        assert [i for i, g, _ in items if g] == ["gold-01", "gold-02"]
        orders = conn.execute(
            "SELECT rater_id, group_concat(item_id) FROM "
            "(SELECT * FROM assignments ORDER BY rater_id, position) GROUP BY rater_id"
        ).fetchall()
        assert len(orders) == 2 and orders[0][1] != orders[1][1]
        assert all(len(o[1].split(",")) == 7 for o in orders)  # 5 items + 2 gold each
        settings = json.loads(
            conn.execute("SELECT value FROM meta WHERE key='settings'").fetchone()[0]
        )
        assert settings["seed"] == 2 and settings["gold"] == 2
    finally:
        conn.close()


def test_create_captions_study_has_frames(make_study) -> None:
    study = make_study("captions", n=3)
    frames = sorted((study.path / "media" / "frames").iterdir())
    assert len(frames) == 3
    with Image.open(frames[0]) as image:
        assert image.format == "JPEG" and image.mode == "RGB"


def test_create_never_overwrites_and_leaves_nothing_on_failure(
    make_study, stamp_manifest, tmp_path
) -> None:
    study = make_study("mos", n=2)
    with pytest.raises(FileExistsError, match="never overwritten"):
        create_study("mos", stamp_manifest, study.path, n=2, raters=["a"])
    with pytest.raises(ValueError, match="--n 99"):
        create_study("mos", stamp_manifest, tmp_path / "bad", n=99, raters=["a"])
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    with pytest.raises(ValueError, match="to the rating studies, not to captions"):
        create_study("captions", stamp_manifest, tmp_path / "g", n=2, raters=["a"], gold=1)
