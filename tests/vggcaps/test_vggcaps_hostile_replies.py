"""Endpoints that trickle, flood or loop (issue 26, items 1 and 2), on loopback: `--timeout`
bounds the whole request, the bytes read are capped, a looping reply cut at the token cap is
re-asked, rejected replies are kept short, and post-processing runs off the event loop.

The review's attacks, scaled down: one byte every 0.05-0.1 s instead of every second, a 0.5-s
timeout instead of 3 s, 300-kB replies instead of 20 MB. Each build runs in a thread with a
bound, so a regression fails the test instead of hanging the suite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openai_loopback import LoopbackServer, stage1_reply
from vgg_helpers import API_KEY, clip_items, make_extracted

from multi2cap.io import read_jsonl
from multi2cap.vggcaps import caption
from multi2cap.vggcaps.backends import OpenAISettings
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.records import BuildConfig, BuildSummary

KEY_ENV = "M2C_TEST_OPENAI_KEY"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    with LoopbackServer(API_KEY) as srv:
        yield srv


def config_for(out: Path, base_url: str, **openai: Any) -> BuildConfig:
    settings = {
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "concurrency": 1,
        "timeout_s": 0.5,
        "max_retries": 1,
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


def bounded(work: Callable[[], BuildSummary], seconds: float) -> tuple[BuildSummary, float]:
    """Run `work` in a thread; fail (instead of hanging) when it is not done in `seconds`."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["summary"] = work()
        except BaseException as err:  # handed to the test below
            result["error"] = err

    start = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - start
    assert not thread.is_alive(), f"the build still ran after {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["summary"], elapsed


# ------------------------------------------------------------------ item 1: --timeout


@pytest.mark.parametrize("fault", ["trickle", "trickle-body"])
def test_a_trickling_reply_is_cut_at_the_timeout_and_retried(tmp_path, server, fault):
    make_extracted(tmp_path, clip_items(1))
    server.state.trickle_s = 0.05  # the ~700-byte answer would take ~35 s at this pace
    server.state.faults.extend([fault, fault])
    config = config_for(tmp_path, server.base_url, timeout_s=0.5, max_retries=2)
    summary, elapsed = bounded(lambda: build_vggcaps(config), 20)
    # two tries cut at 0.5 s each, retried per the policy, the third answered at once
    assert summary.failed == 0 and summary.retries == 2, summary
    assert server.state.chat_seen == 4  # 3 tries of stage 1, 1 of stage 2
    assert elapsed < 10


def test_a_reply_that_trickles_forever_costs_one_clip_not_the_build(tmp_path, server):
    make_extracted(tmp_path, clip_items(3))
    server.state.trickle_s = 0.1
    server.state.faults.extend(["trickle-forever"] * 2)  # the first clip's stage 1, both tries
    config = config_for(tmp_path, server.base_url, timeout_s=0.5, max_retries=1)
    summary, _ = bounded(lambda: build_vggcaps(config), 30)
    assert (summary.failed, summary.dataset_size, summary.retries) == (1, 2, 1)
    failure = next(read_jsonl(tmp_path / "failures.jsonl"))
    assert failure["stage"] == "stage1"
    assert failure["reason"] == "timed out after 0.5 s; gave up after 2 tries"


# ------------------------------------------------------------------ item 2: reply size


@pytest.mark.parametrize("fault", ["huge", "huge-chunked", "endless"])
def test_a_reply_over_the_byte_limit_is_not_read_and_is_retried(tmp_path, server, fault):
    make_extracted(tmp_path, clip_items(1))
    server.state.huge_bytes = 300_000
    server.state.faults.extend([fault])
    # a generous timeout: the cap, not the deadline, must stop the endless body
    config = config_for(tmp_path, server.base_url, timeout_s=30.0, max_reply_bytes=100_000)
    summary, elapsed = bounded(lambda: build_vggcaps(config), 20)
    assert summary.failed == 0 and summary.retries == 1, summary
    record = next(read_jsonl(tmp_path / "vggcaps.jsonl"))
    assert record["raw_caption"] == stage1_reply(record["category"])
    assert elapsed < 15


def test_the_byte_limit_failure_names_the_limit(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    server.state.huge_bytes = 300_000
    server.state.faults.extend(["huge-chunked"] * 2)
    config = config_for(tmp_path, server.base_url, max_reply_bytes=100_000)
    summary, _ = bounded(lambda: build_vggcaps(config), 20)
    assert summary.failed == 1
    reason = next(read_jsonl(tmp_path / "failures.jsonl"))["reason"]
    assert reason.startswith("reply over the 100,000-byte limit") and "2 tries" in reason


def test_a_compressed_reply_is_refused_since_its_size_cannot_be_bounded(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    server.state.faults.extend(["gzip", "gzip"])
    summary, _ = bounded(lambda: build_vggcaps(config_for(tmp_path, server.base_url)), 20)
    assert summary.failed == 1
    assert "compressed with 'gzip'" in next(read_jsonl(tmp_path / "failures.jsonl"))["reason"]
    # the client asked for an uncompressed reply
    assert {h.get("accept-encoding") for h in server.state.headers_seen} == {"identity"}


# ------------------------------------------------------------------ item 2: loops, junk


def test_a_reply_looping_to_the_token_cap_is_rejected_and_reasked(tmp_path, server):
    make_extracted(tmp_path, clip_items(2))
    server.state.faults.extend(["loop"])
    summary, _ = bounded(lambda: build_vggcaps(config_for(tmp_path, server.base_url)), 20)
    assert summary.failed == 0 and summary.dataset_size == 2
    records = list(read_jsonl(tmp_path / "vggcaps.jsonl"))
    assert not any(" la" in r["raw_caption"] or " la" in r["caption"] for r in records)
    first = next(read_jsonl(tmp_path / "work" / "stage1.jsonl"))
    assert first["attempts"] == 2
    (rejected,) = first["rejected"]
    assert rejected["reason"].startswith("cut off at the token cap while repeating itself")
    assert rejected["output_chars"] == len("A dog barks in the yard. " + "la " * 290)


def test_rejected_replies_are_kept_cut_with_their_size(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    server.state.huge_bytes = 300_000
    server.state.faults.extend(["huge"] * 3)  # read (under the 1-MB default), then rejected
    summary, _ = bounded(lambda: build_vggcaps(config_for(tmp_path, server.base_url)), 30)
    assert summary.failed == 1
    failure = next(read_jsonl(tmp_path / "failures.jsonl"))
    assert failure["reason"].startswith("rejected 3 outputs; last: leaks the inputs")
    assert [len(r["output"]) for r in failure["rejected"]] == [4096] * 3
    assert all(r["output_chars"] > 300_000 for r in failure["rejected"])
    # 3 x 300 kB of junk would be ~1.8 MB of work and output files
    written = sum(p.stat().st_size for p in tmp_path.rglob("*.jsonl"))
    assert written < 60_000


def test_post_processing_runs_off_the_event_loop(tmp_path, server, monkeypatch):
    make_extracted(tmp_path, clip_items(2))
    threads: list[int] = []
    real = caption.postprocess

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(caption, "postprocess", recording)
    # build_vggcaps runs its event loop in the calling thread: this one
    summary = build_vggcaps(config_for(tmp_path, server.base_url))
    assert summary.dataset_size == 2 and len(threads) == 4
    assert threading.get_ident() not in threads
