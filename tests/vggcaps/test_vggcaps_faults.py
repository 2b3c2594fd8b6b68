"""What real runs throw at the builder (issue 14), on loopback: a store that cannot be written, a
torn last line, two builds on one folder, odd reply shapes, an unreadable Retry-After, absurd
usage, an endpoint that is down, and a key pasted where a variable name belongs."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from openai_loopback import LoopbackServer, stage1_reply
from typer.testing import CliRunner
from vgg_helpers import API_KEY, clip_items, make_extracted

from multi2cap.cli.main import app
from multi2cap.io import read_jsonl
from multi2cap.vggcaps.backends import BackendConfigError, OpenAISettings
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.records import BuildConfig
from multi2cap.vggcaps.store import FolderLock, FolderLockedError, StoreWriteError

KEY_ENV = "M2C_TEST_OPENAI_KEY"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    with LoopbackServer(API_KEY) as srv:
        yield srv


def config_for(out: Path, base_url: str, **openai: object) -> BuildConfig:
    settings = {
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "concurrency": 2,
        "timeout_s": 5.0,
        "max_retries": 2,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.002,
    } | openai
    return BuildConfig(
        out=out,
        backend="openai",
        openai=OpenAISettings(**settings),
        steps=("caption", "split"),
        progress=False,
    )


def caption_args(out: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "vggcaps",
        "caption",
        "--out",
        str(out),
        "--base-url",
        base_url,
        "--api-key-env",
        KEY_ENV,
        "--no-progress",
        *extra,
    ]


# ------------------------------------------------------------------ lost or wasted work


def test_a_failed_store_write_stops_the_build_at_once_naming_the_file(tmp_path, server):
    make_extracted(tmp_path, clip_items(12))
    (tmp_path / "work" / "stage2.jsonl").mkdir()  # every append to it fails (EISDIR)
    server.state.delay_s = 0.02
    with pytest.raises(StoreWriteError, match=r"stage2\.jsonl") as caught:
        build_vggcaps(config_for(tmp_path, server.base_url))
    assert caught.value.path == tmp_path / "work" / "stage2.jsonl"
    # 24 requests would be paid for without the stop; the first stage-2 answer's record fails,
    # and at most the requests in flight then (2) and those already answered get through
    assert server.state.chat_seen <= 8
    # what was written before is kept
    assert len(list(read_jsonl(tmp_path / "work" / "stage1.jsonl"))) >= 1


def test_the_cli_says_which_file_could_not_be_written(tmp_path, server):
    make_extracted(tmp_path, clip_items(2))
    (tmp_path / "work" / "stage1.jsonl").mkdir()
    result = CliRunner().invoke(app, caption_args(tmp_path, server.base_url))
    assert result.exit_code == 2, result.output
    assert "stage1.jsonl" in result.output and "Traceback" not in result.output


def test_a_torn_last_line_is_cut_and_kept_beside_the_store(tmp_path, server):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for out in (killed, clean):
        make_extracted(out, clip_items(3))
    build_vggcaps(config_for(clean, server.base_url))
    stage1 = killed / "work" / "stage1.jsonl"
    build_vggcaps(config_for(killed, server.base_url))
    whole = stage1.read_bytes().splitlines(keepends=True)
    (killed / "work" / "stage2.jsonl").unlink()  # the run "died" before stage 2...
    torn = whole[-1][: len(whole[-1]) // 2]  # ...in the middle of appending stage 1's last line
    stage1.write_bytes(b"".join(whole[:-1]) + torn)
    for _ in range(2):  # the rerun appends after the cut; a second rerun must read it all
        summary = build_vggcaps(config_for(killed, server.base_url))
        assert summary.failed == 0 and summary.dataset_size == 3
    assert (killed / "vggcaps.jsonl").read_text() == (clean / "vggcaps.jsonl").read_text()
    fragments = list((killed / "work").glob("stage1.jsonl.torn-*"))
    assert [f.read_bytes() for f in fragments] == [torn]
    assert len(list(read_jsonl(stage1, skip_torn_tail=False))) == 3


def test_a_second_build_on_a_locked_folder_says_who_holds_it(tmp_path, server):
    make_extracted(tmp_path, clip_items(2))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from multi2cap.vggcaps.store import FolderLock\n"
            f"with FolderLock({str(tmp_path)!r}):\n"
            "    print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(app, caption_args(tmp_path, server.base_url))
        assert result.exit_code == 2, result.output
        assert f"pid {holder.pid} on {socket.gethostname()}" in " ".join(result.output.split())
        assert server.state.chat_seen == 0
    finally:
        holder.communicate("")
    # the holder is gone: the lock went with it
    assert build_vggcaps(config_for(tmp_path, server.base_url)).dataset_size == 2


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with FolderLock(tmp_path), pytest.raises(FolderLockedError, match=r"pid \d+ on "):
        FolderLock(tmp_path).__enter__()
    with FolderLock(tmp_path):  # released on exit
        pass


# ------------------------------------------------------------------ odd replies


def test_a_reply_as_a_list_of_parts_is_accepted(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    server.state.faults.append("content-parts")
    summary = build_vggcaps(config_for(tmp_path, server.base_url, concurrency=1))
    assert summary.failed == 0 and summary.retries == 0
    record = next(read_jsonl(tmp_path / "vggcaps.jsonl"))
    assert record["raw_caption"] == stage1_reply(record["category"])


@pytest.mark.parametrize("shape", ["content-int", "message-str", "choices-object"])
def test_an_odd_reply_shape_is_retried_then_a_failure_not_a_crash(tmp_path, server, shape):
    make_extracted(tmp_path, clip_items(2))
    server.state.faults.extend([shape] * 3)  # the first clip's stage 1: every try (1 + 2)
    summary = build_vggcaps(config_for(tmp_path, server.base_url, concurrency=1))
    assert summary.retries == 2 and summary.failed == 1 and summary.dataset_size == 1
    failure = next(read_jsonl(tmp_path / "failures.jsonl"))
    assert failure["stage"] == "stage1" and failure["reason"].startswith("malformed response")
    server.state.faults.extend([shape])  # once more on the rerun: retried, then fine
    again = build_vggcaps(config_for(tmp_path, server.base_url, concurrency=1))
    assert again.failed == 0 and again.retries == 1


def test_an_unreadable_retry_after_falls_back_to_the_backoff(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    server.state.faults.extend(["429-soon", "429-soon"])
    summary = build_vggcaps(config_for(tmp_path, server.base_url, concurrency=1))
    assert summary.failed == 0 and summary.retries == 2
    assert 0 < summary.retry_wait_s <= 2 * 0.002  # the backoff's delays, not a server's


def test_absurd_usage_is_clamped_warned_once_and_costed_from_the_request(tmp_path, server, caplog):
    caplog.set_level(logging.WARNING, logger="multi2cap.vggcaps.backends")
    make_extracted(tmp_path, clip_items(2))
    server.state.faults.extend(["usage-negative"] * 2)
    summary = build_vggcaps(config_for(tmp_path, server.base_url, concurrency=1))
    assert summary.failed == 0 and summary.cost_usd > 0
    record = next(read_jsonl(tmp_path / "vggcaps.jsonl"))
    clamped = record["usage"]["stage1"]
    # the request's own size: a prompt of a few hundred characters / 4 plus the image's 85
    assert 85 < clamped["prompt_tokens"] < 1000 and clamped["completion_tokens"] > 0
    assert summary.prompt_tokens > 0
    warnings = [r for r in caplog.records if "absurd token usage" in r.getMessage()]
    assert len(warnings) == 1


# ------------------------------------------------------------------ endpoint and options


def test_an_endpoint_that_is_down_stops_the_build_early_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    make_extracted(tmp_path, clip_items(20))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = config_for(tmp_path, f"http://127.0.0.1:{port}/v1", max_retries=6)
    with pytest.raises(BackendConfigError, match="could not be reached") as caught:
        build_vggcaps(config)
    assert API_KEY not in str(caught.value)
    # no failure record per clip: the build stopped instead of failing 20 clips x 7 tries
    failures = tmp_path / "work" / "failures_log.jsonl"
    assert not failures.exists() or len(list(read_jsonl(failures))) < 3


def test_rpm_zero_or_negative_is_refused_on_the_command_line(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    for value in ("0", "-3"):
        result = CliRunner().invoke(app, caption_args(tmp_path, server.base_url, "--rpm", value))
        assert result.exit_code == 2 and "rpm must be a positive" in result.output
    assert server.state.chat_seen == 0


def test_a_key_given_as_the_variable_name_is_never_echoed(tmp_path):
    make_extracted(tmp_path, clip_items(1))
    pasted = "sk-proj-PASTEDsecret0123456789abcdef"
    args = ["vggcaps", "caption", "--out", str(tmp_path), "--api-key-env", pasted, "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert pasted not in result.output and "PASTEDsecret" not in result.output
    assert "looks like an API key" in result.output and "NAME" in result.output
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(b"PASTEDsecret" in data for data in written)


# ------------------------------------------------------------------ failures.jsonl


def test_caption_writes_the_failures_file_it_points_at(tmp_path, server):
    make_extracted(tmp_path, clip_items(2))
    server.state.faults.extend(["500"] * 3)
    result = CliRunner().invoke(
        app, caption_args(tmp_path, server.base_url, "--concurrency", "1", "--max-retries", "2")
    )
    assert result.exit_code == 1, result.output
    failures = tmp_path / "failures.jsonl"
    # The console wraps a long path (under `pytest -n` tmp_path is longer) at 80 columns.
    assert str(failures) in result.output.replace("\n", "")
    assert [f["id"] for f in read_jsonl(failures)] == [clip_items(2)[0][0]]
    assert not (tmp_path / "vggcaps.jsonl").exists()  # no split was asked for
