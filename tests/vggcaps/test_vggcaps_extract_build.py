"""Extraction on real media (Tux Paint sounds and pictures muxed into mp4, bigbuckbunny.mp4), the
whole build with the offline backend, and the CLI end to end."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile
from openai_loopback import LoopbackServer, stage1_reply, stage2_reply
from PIL import Image
from typer.testing import CliRunner
from vgg_helpers import API_KEY

from multi2cap.cli.main import app
from multi2cap.data.manifest import read_manifest
from multi2cap.io import read_jsonl
from multi2cap.media.audio import load_audio
from multi2cap.media.video import mux_image_audio_to_mp4
from multi2cap.vggcaps import caption, extract
from multi2cap.vggcaps.backends import OpenAISettings
from multi2cap.vggcaps.extract import read_start
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.records import BuildConfig

STAMPS = ("animals/insects/bee", "animals/insects/hornet")
CATEGORIES = ("bee, wasp, etc. buzzing", "hornet buzzing")
POISON = "-tux0abcdef_000000"  # the clip whose decoding kills its worker, every time
_real_extract_one = extract._extract_one


def _worker_dies_on_poison(job: extract._ExtractJob) -> dict:
    """A worker process dying on one file, as a decoder crash (a segfault in libav) looks to
    the pool: the process is SIGKILLed. Runs in the forked workers; we have no real file that
    crashes FFmpeg, so the crash is staged here, the pool and the process death are real."""
    if job.clip.spec.id == POISON:
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_extract_one(job)


@pytest.fixture(scope="module")
def vgg_folder(tmp_path_factory: pytest.TempPathFactory, tuxpaint_dir: Path, bigbuckbunny: Path):
    """A VGGSound-like folder: two real clips, bigbuckbunny, a corrupt file, a missing clip."""
    root = tmp_path_factory.mktemp("vgg")
    videos = root / "videos" / "nested"
    videos.mkdir(parents=True)
    rows = []
    for index, (stamp, category) in enumerate(zip(STAMPS, CATEGORIES, strict=True)):
        ytid = f"-tux{index}abcdef"[:11]
        image = Image.open(tuxpaint_dir / f"{stamp}.png").convert("RGB")
        audio = load_audio(tuxpaint_dir / f"{stamp}.ogg")[: 16000 * 3]
        mux_image_audio_to_mp4(image, audio, 16000, videos / f"{ytid}_{30 * index:06d}.mp4")
        rows.append(f'{ytid},{30 * index},"{category}",train')
    os.symlink(bigbuckbunny, videos / "bbbunny0001_000002.mp4")
    rows.append("bbbunny0001,2,playing cartoon music,test")
    (videos / "broken00001_000000.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    rows.append("broken00001,0,dog barking,train")
    rows.append("missing0001,0,cat meowing,train")
    (root / "vggsound.csv").write_text("\n".join(rows) + "\n")
    return root


def test_read_start_uses_the_segment_only_in_full_videos() -> None:
    assert read_start(30.0, 10.0, 10.0) == 0.0  # a clip already cut to its segment
    assert read_start(30.0, 120.0, 10.0) == 30.0  # the full YouTube video
    assert read_start(30.0, 39.0, 10.0) == 0.0
    assert read_start(None, 120.0, 10.0) == 0.0


def test_offline_build_on_real_media(vgg_folder: Path, tmp_path: Path) -> None:
    config = BuildConfig(
        out=tmp_path,
        videos=vgg_folder / "videos",
        categories=vgg_folder / "vggsound.csv",
        backend="offline",
        workers=1,
        progress=False,
    )
    summary = build_vggcaps(config)
    assert (summary.selected, summary.missing_videos, summary.extracted) == (4, 1, 3)
    assert summary.failed == 1 and summary.exit_code == 1 and summary.dataset_size == 3
    failures = list(read_jsonl(tmp_path / "failures.jsonl"))
    assert [(f["id"], f["stage"]) for f in failures] == [("broken00001_000000", "extract")]
    assert "Error" in failures[0]["reason"]
    records = {r["id"]: r for r in read_jsonl(tmp_path / "vggcaps.jsonl")}
    bee = records["-tux0abcdef_000000"]
    assert bee["category"] == "bee, wasp, etc. buzzing" and bee["backend"] == "offline"
    assert "bee" in bee["caption"].lower() and "bee, wasp" not in bee["caption"].lower()
    wave, sr = soundfile.read(tmp_path / bee["audio"])
    assert sr == 16000 and wave.shape == (160000,)  # 10 s, zero-padded after 3 s of audio
    assert np.abs(wave[: 16000 * 2]).max() > 0.01 and np.abs(wave[16000 * 4 :]).max() == 0
    with Image.open(tmp_path / bee["spectrogram"]) as spec:
        assert spec.format == "PNG" and spec.size == (800, 400)
    with Image.open(tmp_path / bee["frame"]) as frame:
        assert frame.format == "JPEG"
        assert max(frame.size) <= 640
    bunny = records["bbbunny0001_000002"]
    assert bunny["duration_s"] == pytest.approx(5.3, abs=0.1)
    assert bunny["vggsound_split"] == "test" and bunny["split"] in ("train", "test")
    extract = {r["id"]: r for r in read_jsonl(tmp_path / "work" / "extract.jsonl")}
    assert extract["bbbunny0001_000002"]["read_start_s"] == 0.0  # 5.3-s file: already cut
    manifest = read_manifest(tmp_path / "manifest.jsonl")
    assert sorted(m.id for m in manifest) == sorted(records)
    # a rerun extracts nothing, captions nothing, and leaves the dataset as it was
    before = (tmp_path / "vggcaps.jsonl").read_text()
    again = build_vggcaps(config)
    assert again.extracted == 0 and again.captioned == 0 and again.failed == 1
    assert (tmp_path / "vggcaps.jsonl").read_text() == before


def test_cli_build_with_process_pool_limit_and_dry_run(vgg_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = [
        "vggcaps",
        "build",
        "--videos",
        str(vgg_folder / "videos"),
        "--categories",
        str(vgg_folder / "vggsound.csv"),
        "--out",
        str(tmp_path / "out"),
    ]
    dry = runner.invoke(app, [*common, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "no API was called" in dry.output.replace("\n", " ") and "$" in dry.output
    assert not (tmp_path / "out" / "vggcaps.jsonl").exists()
    result = runner.invoke(
        app, [*common, "--backend", "offline", "--workers", "2", "--limit", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert len(list(read_jsonl(tmp_path / "out" / "vggcaps.jsonl"))) == 2
    assert "offline" in result.output
    bad = runner.invoke(
        app,
        [
            "vggcaps",
            "build",
            "--videos",
            str(vgg_folder),
            "--categories",
            str(tmp_path / "nope.csv"),
            "--out",
            str(tmp_path / "o2"),
        ],
    )
    assert bad.exit_code == 2 and "nope.csv" in bad.output and "Traceback" not in bad.output


def test_cli_steps_extract_caption_split(vgg_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "steps")
    extract = runner.invoke(
        app,
        [
            "vggcaps",
            "extract",
            "--videos",
            str(vgg_folder / "videos"),
            "--categories",
            str(vgg_folder / "vggsound.csv"),
            "--out",
            out,
            "--limit",
            "1",
            "--workers",
            "1",
            "--no-progress",
            "--spectrogram-size",
            "64x32",
        ],
    )
    assert extract.exit_code == 0, extract.output
    record = next(read_jsonl(tmp_path / "steps" / "work" / "extract.jsonl"))
    with Image.open(tmp_path / "steps" / record["spectrogram"]) as spec:
        assert spec.size == (64, 32)
    caption = runner.invoke(
        app, ["vggcaps", "caption", "--out", out, "--backend", "offline", "--no-progress"]
    )
    assert caption.exit_code == 0, caption.output
    assert not (tmp_path / "steps" / "vggcaps.jsonl").exists()
    split = runner.invoke(app, ["vggcaps", "split", "--out", out, "--test-fraction", "1.0"])
    assert split.exit_code == 0, split.output
    records = list(read_jsonl(tmp_path / "steps" / "vggcaps.jsonl"))
    assert [r["split"] for r in records] == ["test"]
    bad = runner.invoke(
        app,
        [
            "vggcaps",
            "extract",
            "--videos",
            str(vgg_folder),
            "--categories",
            str(vgg_folder / "vggsound.csv"),
            "--out",
            out,
            "--spectrogram-size",
            "big",
        ],
    )
    assert bad.exit_code != 0 and "Traceback" not in bad.output


def test_openai_build_extracts_and_captions_together(
    vgg_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M2C_TEST_OPENAI_KEY", API_KEY)
    # one extracted clip may wait for captioning at a time: the hand-over must throttle, not hang
    monkeypatch.setattr(caption, "MAX_PENDING_RECORDS", 1)
    with LoopbackServer(API_KEY) as server:
        config = BuildConfig(
            out=tmp_path,
            videos=vgg_folder / "videos",
            categories=vgg_folder / "vggsound.csv",
            backend="openai",
            workers=2,
            progress=False,
            openai=OpenAISettings(
                base_url=server.base_url, api_key_env="M2C_TEST_OPENAI_KEY", concurrency=4
            ),
        )
        summary = build_vggcaps(config)
        assert server.state.problems == []
        assert sorted(r["stage"] for r in server.state.requests) == [1, 1, 1, 2, 2, 2]
    assert (summary.extracted, summary.captioned, summary.failed) == (3, 3, 1)
    records = {r["id"]: r for r in read_jsonl(tmp_path / "vggcaps.jsonl")}
    bee = records["-tux0abcdef_000000"]
    assert bee["raw_caption"] == stage1_reply("bee, wasp, etc. buzzing")
    assert bee["caption"] == stage2_reply(bee["raw_caption"])
    assert summary.prompt_tokens == 3 * (101 + 102)


def test_shards_split_the_clips_between_machines(vgg_folder: Path, tmp_path: Path) -> None:
    seen = []
    for index in range(2):
        out = tmp_path / f"shard{index}"
        summary = build_vggcaps(
            BuildConfig(
                out=out,
                videos=vgg_folder / "videos",
                categories=vgg_folder / "vggsound.csv",
                shard=(index, 2),
                steps=("extract",),
                workers=1,
                progress=False,
            )
        )
        ids = (
            {r["id"] for r in read_jsonl(out / "work" / "extract.jsonl")}
            if summary.extracted
            else set()
        )
        failed = (
            {r["id"] for r in read_jsonl(out / "work" / "failures_log.jsonl")}
            if summary.failed
            else set()
        )
        assert summary.selected == len(ids) + len(failed)
        # the extract step writes the failures.jsonl its summary points at
        assert {r["id"] for r in read_jsonl(out / "failures.jsonl")} == failed
        seen.append(ids | failed)
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {
        "-tux0abcdef_000000",
        "-tux1abcdef_000030",
        "bbbunny0001_000002",
        "broken00001_000000",
    }


def test_a_worker_that_dies_costs_one_failure_not_the_run(
    vgg_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extract, "_extract_one", _worker_dies_on_poison)
    config = BuildConfig(
        out=tmp_path,
        videos=vgg_folder / "videos",
        categories=vgg_folder / "vggsound.csv",
        steps=("extract",),
        workers=2,
        progress=False,
    )
    for _ in range(2):  # and the rerun does not stop at the same clip either
        summary = build_vggcaps(config)
        assert summary.selected == 4 and summary.failed == 2
    extracted = {r["id"] for r in read_jsonl(tmp_path / "work" / "extract.jsonl")}
    assert extracted == {"-tux1abcdef_000030", "bbbunny0001_000002"}
    reasons = {f["id"]: f["reason"] for f in read_jsonl(tmp_path / "failures.jsonl")}
    assert reasons[POISON].startswith("decoder crashed")
    assert not reasons["broken00001_000000"].startswith("decoder crashed")
