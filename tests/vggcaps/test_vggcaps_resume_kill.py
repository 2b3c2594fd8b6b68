"""SIGKILL mid-build (while captioning, while extracting), rerun: the dataset equals an
uninterrupted build's, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_loopback import LoopbackServer
from PIL import Image
from vgg_helpers import API_KEY, clip_items, make_extracted

from multi2cap.io import read_jsonl
from multi2cap.media.audio import load_audio
from multi2cap.media.video import mux_image_audio_to_mp4
from multi2cap.vggcaps.backends import OpenAISettings
from multi2cap.vggcaps.finalize import finalize_dataset
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.records import BuildConfig

KEY_ENV = "M2C_TEST_OPENAI_KEY"
N_CLIPS = 8


def caption_command(out: Path, base_url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "multi2cap.cli.main",
        "vggcaps",
        "caption",
        "--out",
        str(out),
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--api-key-env",
        KEY_ENV,
        "--no-progress",
        *extra,
    ]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_sigkill_then_rerun_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = os.environ | {KEY_ENV: API_KEY}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for out in (killed, clean):
        make_extracted(out, clip_items(N_CLIPS))
    with LoopbackServer(API_KEY) as server:
        server.state.delay_s = 0.1
        process = subprocess.Popen(
            caption_command(killed, server.base_url, "--concurrency", "2"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stage2 = killed / "work" / "stage2.jsonl"
        deadline = time.monotonic() + 60
        while lines(stage2) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is not None:
            pytest.fail(f"the build ended before it could be killed: {process.communicate()}")
        process.send_signal(signal.SIGKILL)
        process.wait()
        done_before = lines(stage2)
        assert 2 <= done_before < N_CLIPS
        assert not (killed / "vggcaps.jsonl").exists()

        time.sleep(3 * server.state.delay_s)  # let the killed client's last requests land
        server.state.delay_s = 0.0
        before = len(server.state.requests)
        result = subprocess.run(
            caption_command(killed, server.base_url),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert API_KEY not in result.stdout + result.stderr
        resumed_requests = len(server.state.requests) - before
        finalize_dataset(killed)
        settings = OpenAISettings(base_url=server.base_url, api_key_env=KEY_ENV)
        monkeypatch.setenv(KEY_ENV, API_KEY)
        build_vggcaps(
            BuildConfig(out=clean, openai=settings, steps=("caption", "split"), progress=False)
        )
    # the rerun asked only for what was not finished (stage 1 of finished clips is kept)
    assert resumed_requests <= 2 * (N_CLIPS - done_before)
    killed_records = (killed / "vggcaps.jsonl").read_text()
    assert killed_records == (clean / "vggcaps.jsonl").read_text()
    assert (killed / "manifest.jsonl").read_text().count("\n") == N_CLIPS
    for stage in ("stage1", "stage2"):
        keys = [r["key"] for r in read_jsonl(killed / "work" / f"{stage}.jsonl")]
        assert len(keys) == len(set(keys)) == N_CLIPS


def test_sigkill_during_extraction_then_rerun_equals_uninterrupted(
    tmp_path: Path, tuxpaint_dir: Path
) -> None:

    videos = tmp_path / "videos"
    videos.mkdir()
    rows = []
    stamps = ("animals/insects/bee", "animals/insects/hornet", "animals/marsupials/koala")
    for index in range(6):
        stamp = tuxpaint_dir / stamps[index % 3]
        image = Image.open(stamp.with_suffix(".png")).convert("RGB")
        audio = load_audio(stamp.with_suffix(".ogg"))[: 16000 * 2]
        mux_image_audio_to_mp4(image, audio, 16000, videos / f"tux{index:08d}_000000.mp4")
        rows.append(f"tux{index:08d},0,{stamp.name} buzzing,train")
    (tmp_path / "vggsound.csv").write_text("\n".join(rows) + "\n")
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    command = [
        sys.executable,
        "-m",
        "multi2cap.cli.main",
        "vggcaps",
        "build",
        "--videos",
        str(videos),
        "--categories",
        str(tmp_path / "vggsound.csv"),
        "--backend",
        "offline",
        "--workers",
        "1",
        "--no-progress",
        "--out",
    ]
    process = subprocess.Popen(
        [*command, str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    extract = killed / "work" / "extract.jsonl"
    deadline = time.monotonic() + 60
    while lines(extract) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if process.poll() is not None:
        pytest.fail(f"the build ended before it could be killed: {process.communicate()}")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= lines(extract) < 6 and not (killed / "vggcaps.jsonl").exists()
    rerun = subprocess.run([*command, str(killed)], capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    build_vggcaps(
        BuildConfig(
            out=clean,
            videos=videos,
            categories=tmp_path / "vggsound.csv",
            backend="offline",
            workers=1,
            progress=False,
        )
    )
    assert (killed / "vggcaps.jsonl").read_text() == (clean / "vggcaps.jsonl").read_text()
    ids = [r["id"] for r in read_jsonl(extract)]
    assert len(ids) == len(set(ids)) == 6
