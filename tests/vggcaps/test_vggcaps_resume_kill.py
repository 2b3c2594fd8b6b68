"""SIGKILL mid-build, rerun: the dataset equals an uninterrupted build's, nothing duplicated.

Every kill lands at a point the test controls, never on a timer: the loopback server kills the
client when it sees the N-th request, or holds the N-th request (the client cannot finish) while
the test waits for the work files to settle and kills it between two appends. The torn-line case
then cuts the last record in half, which is what a kill inside `write(2)` leaves on disk.
"""

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
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.records import BuildConfig

KEY_ENV = "M2C_TEST_OPENAI_KEY"
N_CLIPS = 8
ENV = os.environ | {KEY_ENV: API_KEY}


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


def whole_lines(path: Path) -> int:
    """Complete (newline-terminated) lines of a file; 0 when it does not exist."""
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def clean_build(out: Path, base_url: str) -> str:
    """An uninterrupted caption + split of N_CLIPS clips; its vggcaps.jsonl."""
    make_extracted(out, clip_items(N_CLIPS))
    settings = OpenAISettings(base_url=base_url, api_key_env=KEY_ENV)
    os.environ[KEY_ENV] = API_KEY
    try:
        build_vggcaps(
            BuildConfig(out=out, openai=settings, steps=("caption", "split"), progress=False)
        )
    finally:
        del os.environ[KEY_ENV]
    return (out / "vggcaps.jsonl").read_text()


def resume(out: Path, server: LoopbackServer) -> int:
    """Rerun the caption step to the end; returns how many requests it sent."""
    server.state.kill_at = server.state.hold_at = None
    before = server.state.chat_seen
    result = subprocess.run(
        [*caption_command(out, server.base_url), "--concurrency", "1"],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert API_KEY not in result.stdout + result.stderr
    split = subprocess.run(
        [sys.executable, "-m", "multi2cap.cli.main", "vggcaps", "split", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert split.returncode == 0, split.stdout + split.stderr
    return server.state.chat_seen - before


def assert_no_duplicates(out: Path) -> None:
    for stage in ("stage1", "stage2"):
        keys = [r["key"] for r in read_jsonl(out / "work" / f"{stage}.jsonl", skip_torn_tail=False)]
        assert len(keys) == len(set(keys)) == N_CLIPS


def hold_and_kill(out: Path, server: LoopbackServer, hold_at: int, settled: dict[str, int]) -> None:
    """Caption with one request at a time, hold the `hold_at`-th request, wait until the work
    files hold `settled` whole lines (stage file -> lines), then SIGKILL the client."""
    server.state.hold_at = hold_at
    server.state.release.clear()
    process = subprocess.Popen(
        [*caption_command(out, server.base_url), "--concurrency", "1"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    paths = {name: out / "work" / f"{name}.jsonl" for name in settled}
    deadline = time.monotonic() + 120
    while any(whole_lines(paths[n]) < settled[n] for n in settled) and process.poll() is None:
        assert time.monotonic() < deadline, "the work files never reached the expected lines"
        time.sleep(0.02)
    assert process.poll() is None, process.communicate()  # it cannot end: a request is held
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert {n: whole_lines(paths[n]) for n in settled} == settled  # nothing more was written
    server.state.release.set()  # let the held request go (its client is dead)


def test_sigkill_at_the_nth_request_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    make_extracted(killed, clip_items(N_CLIPS))
    with LoopbackServer(API_KEY) as server:
        expected = clean_build(clean, server.base_url)
        server.state.kill_at = server.state.chat_seen + 7  # the 7th request of the killed run
        process = subprocess.Popen(
            caption_command(killed, server.base_url, "--concurrency", "2"),
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        server.state.kill_pid = process.pid
        process.wait(timeout=120)
        assert process.returncode == -signal.SIGKILL  # killed by the server, not finished
        assert not (killed / "vggcaps.jsonl").exists()
        kept = {s: whole_lines(killed / "work" / f"{s}.jsonl") for s in ("stage1", "stage2")}
        assert kept["stage2"] < N_CLIPS
        sent = resume(killed, server)
    # the rerun asked only for what was not kept (stage 1 of a kept clip is not asked again)
    assert sent == (N_CLIPS - kept["stage1"]) + (N_CLIPS - kept["stage2"])
    assert (killed / "vggcaps.jsonl").read_text() == expected
    assert (killed / "manifest.jsonl").read_text().count("\n") == N_CLIPS
    assert_no_duplicates(killed)


def test_sigkill_between_two_appends_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    make_extracted(killed, clip_items(N_CLIPS))
    with LoopbackServer(API_KEY) as server:
        expected = clean_build(clean, server.base_url)
        # one request at a time, clips in id order: requests 1-6 finish clips 0-2 (stage 1 and
        # 2 each), request 7 (clip 3, stage 1) is held
        hold_and_kill(killed, server, server.state.chat_seen + 7, {"stage1": 3, "stage2": 3})
        sent = resume(killed, server)
    assert sent == 2 * (N_CLIPS - 3)
    assert (killed / "vggcaps.jsonl").read_text() == expected
    assert not list((killed / "work").glob("*.torn-*"))  # nothing was torn
    assert_no_duplicates(killed)


def test_sigkill_during_an_append_torn_line_then_rerun_equals_uninterrupted(
    tmp_path: Path,
) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    make_extracted(killed, clip_items(N_CLIPS))
    with LoopbackServer(API_KEY) as server:
        expected = clean_build(clean, server.base_url)
        hold_and_kill(killed, server, server.state.chat_seen + 7, {"stage1": 3, "stage2": 3})
        # the kill landed inside the write of clip 2's stage-2 record: half of it is on disk
        stage2 = killed / "work" / "stage2.jsonl"
        data = stage2.read_bytes()
        last = data[:-1].rfind(b"\n") + 1
        torn = data[last : last + (len(data) - last) // 2]
        stage2.write_bytes(data[:last] + torn)
        sent = resume(killed, server)
    assert sent == 1 + 2 * (N_CLIPS - 3)  # clip 2's stage 2 again, then clips 3-7
    assert (killed / "vggcaps.jsonl").read_text() == expected
    assert [p.read_bytes() for p in (killed / "work").glob("stage2.jsonl.torn-*")] == [torn]
    assert_no_duplicates(killed)


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
    args = [
        "vggcaps",
        "build",
        "--videos",
        str(videos),
        "--categories",
        str(tmp_path / "vggsound.csv"),
        "--backend",
        "openai",
        "--api-key-env",
        KEY_ENV,
        "--concurrency",
        "1",
        "--workers",
        "1",
        "--no-progress",
    ]
    with LoopbackServer(API_KEY) as server:
        # extraction hands each clip to the caption workers and, with one waiting slot, stops
        # when the slot is taken: with the first request held, clips 0-2 are extracted (0 is
        # being captioned, 1 waits, 2 waits for the slot) and the build can go no further
        server.state.hold_at = 1
        script = (
            "import sys\n"
            "from multi2cap.vggcaps import caption\n"
            "caption.MAX_PENDING_RECORDS = 1\n"
            "from multi2cap.cli.main import app\n"
            "app(sys.argv[1:])\n"
        )
        command = [*args, "--base-url", server.base_url, "--out"]
        process = subprocess.Popen(
            [sys.executable, "-c", script, *command, str(killed)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        extract = killed / "work" / "extract.jsonl"
        deadline = time.monotonic() + 120
        while whole_lines(extract) < 3 and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # would a fourth clip be extracted? (it must not)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert whole_lines(extract) == 3 and not (killed / "vggcaps.jsonl").exists()
        server.state.hold_at = None
        server.state.release.set()
        rerun = subprocess.run(
            [sys.executable, "-m", "multi2cap.cli.main", *command, str(killed)],
            env=ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        clean_run = subprocess.run(
            [sys.executable, "-m", "multi2cap.cli.main", *command, str(clean)],
            env=ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        assert clean_run.returncode == 0, clean_run.stdout + clean_run.stderr
    assert (killed / "vggcaps.jsonl").read_text() == (clean / "vggcaps.jsonl").read_text()
    ids = [r["id"] for r in read_jsonl(extract)]
    assert len(ids) == len(set(ids)) == 6


@pytest.fixture(autouse=True)
def _no_key_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
