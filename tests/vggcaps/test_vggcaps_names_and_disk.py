"""Folders whose names are not UTF-8, and a disk that fills up (issue 26, items 3 and 7), on
small real mp4 clips with the offline backend.

A full disk is injected at the writer (`OSError(ENOSPC)` from `atomic_write_bytes`), so the
tests need no root and no small file system; the real mechanism (a 2-MB tmpfs) was checked by
hand, see docs/vggcaps.md."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from vgg_helpers import make_videos

from multi2cap import io as m2c_io
from multi2cap.cli.main import app
from multi2cap.io import read_jsonl
from multi2cap.vggcaps import extract
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.records import BuildConfig
from multi2cap.vggcaps.store import StoreWriteError

CAFE = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8, decoded with surrogateescape
ITEMS = [("clip_a", "dog barking"), ("clip_b", "rain falling"), ("clip_c", "cat meowing")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real clips and their CSV, made once; tests copy what they need."""
    root = tmp_path_factory.mktemp("clips")
    make_videos(root / "made", ITEMS, root / "all.csv")
    return root


def place(clips: Path, target: Path, where: dict[str, str]) -> Path:
    """Hard-link each clip into `target/<folder>/` (folder by clip id); returns `target`."""
    for clip_id, folder in where.items():
        (target / folder).mkdir(parents=True, exist_ok=True)
        os.link(clips / "made" / f"{clip_id}.mp4", target / folder / f"{clip_id}.mp4")
    return target


def offline(videos: Path, categories: Path, out: Path, **extra: Any) -> BuildConfig:
    fields = {"backend": "offline", "workers": 1, "progress": False} | extra
    return BuildConfig(out=out, videos=videos, categories=categories, **fields)


def written_as_utf8(folder: Path) -> None:
    for path in folder.rglob("*.jsonl"):
        path.read_bytes().decode("utf-8")  # strict: raises on anything else


# ------------------------------------------------------------------ item 3: non-UTF-8 folders


def test_a_clip_in_a_non_utf8_folder_is_built_and_its_path_escaped(clips, tmp_path):
    videos = place(clips, tmp_path / "videos", {"clip_a": "ok", "clip_b": "ok", "clip_c": CAFE})
    (videos / CAFE / "clip_d.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    csv = tmp_path / "all.csv"
    csv.write_text((clips / "all.csv").read_text() + "clip_d,bird song\n")
    config = offline(videos, csv, tmp_path / "out", workers=2)
    for _ in range(2):  # and a rerun does not stop at the same clip
        summary = build_vggcaps(config)
        assert (summary.selected, summary.failed, summary.dataset_size) == (4, 1, 3)
    out = tmp_path / "out"
    written_as_utf8(out)
    videos_seen = {r["id"]: r["video"] for r in read_jsonl(out / "work" / "extract.jsonl")}
    assert videos_seen["clip_c"] == f"{videos}/caf\\xe9/clip_c.mp4"
    # the broken clip in that folder fails alone, its name escaped the same way
    (failure,) = read_jsonl(out / "failures.jsonl")
    assert failure["id"] == "clip_d" and "caf\\xe9" in failure["reason"]


def test_a_videos_root_with_a_non_utf8_name_builds_every_clip(clips, tmp_path):
    videos = place(clips, tmp_path / CAFE, {"clip_a": "x", "clip_b": "x", "clip_c": "y"})
    result = CliRunner().invoke(
        app,
        [
            "vggcaps",
            "build",
            "--videos",
            str(videos),
            "--categories",
            str(clips / "all.csv"),
            "--out",
            str(tmp_path / "out"),
            "--backend",
            "offline",
            "--workers",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list(read_jsonl(tmp_path / "out" / "vggcaps.jsonl"))) == 3
    written_as_utf8(tmp_path / "out")


def test_an_output_folder_with_a_non_utf8_name_is_refused_up_front(clips, tmp_path):
    out = tmp_path / f"out-{CAFE}"
    with pytest.raises(ValueError, match=r"--out .*out-caf\\xe9: the output folder's name"):
        offline(clips / "made", clips / "all.csv", out)
    result = CliRunner().invoke(app, ["vggcaps", "split", "--out", str(out)])
    assert result.exit_code == 2 and "out-caf\\xe9" in result.output
    assert not out.exists()


# ------------------------------------------------------------------ item 7: a full disk


class FullDisk:
    """`atomic_write_bytes` that writes `room` files, then fails every write with ENOSPC."""

    def __init__(self, real: Any, room: int) -> None:
        self.real, self.room, self.refused = real, room, 0

    def __call__(self, path: Any, data: bytes) -> None:
        if self.room <= 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        self.real(path, data)


def test_a_full_disk_during_extraction_stops_the_build_naming_the_file(
    clips, tmp_path, monkeypatch
):
    full = FullDisk(extract.atomic_write_bytes, room=4)  # clip_a's 3 files, clip_b's frame
    monkeypatch.setattr(extract, "atomic_write_bytes", full)
    out = tmp_path / "out"
    config = offline(clips / "made", clips / "all.csv", out)
    with pytest.raises(StoreWriteError, match="No space left on device") as caught:
        build_vggcaps(config)
    assert caught.value.path == out / "media" / "audio" / "clip_b.flac"
    assert full.refused == 1  # it stopped at once: clip_c was never tried
    # no clip was failed for the disk's sake; clip_a is kept
    assert not (out / "work" / "failures_log.jsonl").exists()
    assert [r["id"] for r in read_jsonl(out / "work" / "extract.jsonl")] == ["clip_a"]
    monkeypatch.setattr(extract, "atomic_write_bytes", full.real)  # space was freed
    summary = build_vggcaps(config)
    assert (summary.failed, summary.dataset_size, summary.extracted) == (0, 3, 2)


def test_the_cli_exits_2_with_the_path_when_the_disk_fills_during_extraction(
    clips, tmp_path, monkeypatch
):
    monkeypatch.setattr(extract, "atomic_write_bytes", FullDisk(extract.atomic_write_bytes, 0))
    out = tmp_path / "out"
    args = ["vggcaps", "extract", "--videos", str(clips / "made"), "--categories"]
    args += [str(clips / "all.csv"), "--out", str(out), "--workers", "1", "--no-progress"]
    result = CliRunner().invoke(app, args)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert str(out / "media" / "frames" / "clip_a.jpg") in output and "No space left" in output
    assert not (out / "failures.jsonl").exists() or not list(read_jsonl(out / "failures.jsonl"))


def test_split_on_a_full_disk_exits_2_naming_the_file(clips, tmp_path, monkeypatch):
    out = tmp_path / "out"
    build_vggcaps(offline(clips / "made", clips / "all.csv", out, steps=("extract", "caption")))
    monkeypatch.setattr(m2c_io, "atomic_write_bytes", FullDisk(m2c_io.atomic_write_bytes, 0))
    result = CliRunner().invoke(app, ["vggcaps", "split", "--out", str(out)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output  # not 3, an internal error
    assert str(out / "vggcaps.jsonl") in output and "No space left on device" in output
    assert "crash" not in output
    last_run = json.loads((out / "work" / "last_run.json").read_text())  # the build's, kept
    assert last_run["captioned"] == 3
