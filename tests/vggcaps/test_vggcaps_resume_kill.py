"""SIGKILL mid-build, rerun: the dataset equals an uninterrupted build's, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_loopback import LoopbackServer
from vgg_helpers import API_KEY, clip_items, make_extracted

from multi2cap.io import read_jsonl
from multi2cap.vggcaps.backends import OpenAISettings
from multi2cap.vggcaps.pipeline import BuildConfig, build_vggcaps, finalize_dataset

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
