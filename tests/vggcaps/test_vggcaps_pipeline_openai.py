"""The `openai` backend end to end against the loopback server: two stages, records, faults,
failures, resume, and the API key never written anywhere."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from openai_loopback import LoopbackServer, stage1_reply, stage2_reply
from vgg_helpers import API_KEY, clip_items, make_extracted

from multi2cap.data.manifest import read_manifest
from multi2cap.data.readers.vggcaps import read_vggcaps
from multi2cap.io import read_jsonl
from multi2cap.vggcaps.backends import BackendConfigError, OpenAISettings, RateLimiter
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.prompts import load_prompts
from multi2cap.vggcaps.records import BACKENDS, STEPS, VGGCAPS_COLUMNS, BuildConfig

KEY_ENV = "M2C_TEST_OPENAI_KEY"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    with LoopbackServer(API_KEY) as srv:
        yield srv


def config_for(out: Path, server: LoopbackServer, **openai: object) -> BuildConfig:
    settings = {
        "base_url": server.base_url,
        "api_key_env": KEY_ENV,
        "concurrency": 4,
        "timeout_s": 5.0,
        "max_retries": 4,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    } | openai
    return BuildConfig(
        out=out,
        backend="openai",
        openai=OpenAISettings(**settings),
        steps=("caption", "split"),
        progress=False,
    )


def test_two_stages_reach_the_server_and_records_follow_the_schema(tmp_path, server):
    make_extracted(tmp_path, clip_items(3))
    summary = build_vggcaps(config_for(tmp_path, server))
    assert server.state.problems == []
    assert summary.exit_code == 0 and summary.captioned == 3 and summary.failed == 0
    stages = sorted(r["stage"] for r in server.state.requests)
    assert stages == [1, 1, 1, 2, 2, 2]
    records = list(read_jsonl(tmp_path / "vggcaps.jsonl"))
    assert [r["id"] for r in records] == sorted(i for i, _ in clip_items(3))
    first = records[0]
    assert set(first) == {
        "id",
        "youtube_id",
        "start_s",
        "category",
        "vggsound_split",
        "split",
        "audio",
        "frame",
        "spectrogram",
        "duration_s",
        "raw_caption",
        "caption",
        "backend",
        "model",
        "prompt_version",
        "usage",
    }
    assert first["raw_caption"] == stage1_reply(first["category"])
    assert first["caption"] == stage2_reply(first["raw_caption"])
    assert first["youtube_id"] == "-x000000000" and first["start_s"] == 0.0
    assert first["backend"] == "openai" and first["model"] == "gpt-4o"
    assert first["prompt_version"] == load_prompts().version
    assert first["usage"] == {
        "stage1": {"prompt_tokens": 101, "completion_tokens": 21},
        "stage2": {"prompt_tokens": 102, "completion_tokens": 22},
    }
    assert summary.prompt_tokens == 3 * (101 + 102)
    # the stage-2 prompt carries the stage-1 caption, the stage-1 prompt the category
    prompts = [r["prompt"] for r in server.state.requests]
    assert any(first["raw_caption"] in p for p in prompts if p.startswith("Revise"))
    assert any("categorized into dog barking category." in p for p in prompts)
    manifest = read_manifest(tmp_path / "manifest.jsonl")
    assert [m.captions for m in manifest] == [[r["caption"]] for r in records]
    assert all(Path(m.image).is_file() and Path(m.audio).is_file() for m in manifest)
    assert {m.dataset for m in manifest} == {"vggcaps"}
    assert len(read_vggcaps(tmp_path).records) == 3
    last_run = json.loads((tmp_path / "work" / "last_run.json").read_text())
    assert last_run["captioned"] == 3 and last_run["prompt_tokens"] == summary.prompt_tokens
    assert list(first) == list(VGGCAPS_COLUMNS)  # the TypedDict's order, on disk too
    table = pq.read_table(tmp_path / "vggcaps.parquet").to_pydict()
    assert list(table)[:15] == [c for c in VGGCAPS_COLUMNS if c != "usage"]
    assert table["id"] == [r["id"] for r in records]
    assert table["stage2_completion_tokens"] == [22, 22, 22]


def test_transport_faults_are_retried_and_bad_outputs_reasked(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    server.state.timeout_sleep_s = 0.6
    server.state.faults.extend(["429", "500", "timeout", "malformed", "empty", "refusal", "leak"])
    config = config_for(
        tmp_path, server, concurrency=1, timeout_s=0.3, backoff_base_s=0.001, backoff_max_s=0.001
    )
    config.content_retries = 3
    summary = build_vggcaps(config)
    assert summary.exit_code == 0 and summary.captioned == 1
    assert summary.retries == 4  # 429, 500, timeout, malformed JSON
    stage1 = list(read_jsonl(tmp_path / "work" / "stage1.jsonl"))
    reasons = [r["reason"] for r in stage1[0]["rejected"]]
    assert reasons[0] == "empty output" and reasons[1] == "refusal"
    assert reasons[2].startswith("leaks the inputs") and "spectrogram" in reasons[2].lower()
    assert stage1[0]["attempts"] == 4
    # three rejected answers are paid for too
    assert stage1[0]["usage"]["prompt_tokens"] == 4 * 101


def test_retry_after_is_honoured_over_backoff(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    server.state.faults.extend(["429", "429"])
    config = config_for(tmp_path, server, concurrency=1, backoff_base_s=4.0, backoff_max_s=4.0)
    summary = build_vggcaps(config)
    assert summary.retries == 2 and summary.captioned == 1
    # the server asked for 20 ms twice; the 2-4 s backoff was not used
    assert summary.retry_wait_s == pytest.approx(0.04)


def test_failures_are_listed_counted_and_retried_on_rerun(tmp_path, server, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # the SDK's and the HTTP client's debug logs included
    make_extracted(tmp_path, clip_items(2))
    server.state.faults.extend(["500", "500"])
    summary = build_vggcaps(config_for(tmp_path, server, concurrency=1, max_retries=1))
    assert summary.failed == 1 and summary.exit_code == 1 and summary.dataset_size == 1
    failures = list(read_jsonl(tmp_path / "failures.jsonl"))
    assert [f["id"] for f in failures] == [clip_items(2)[0][0]]
    assert failures[0]["stage"] == "stage1" and "HTTP 500" in failures[0]["reason"]
    before = len(server.state.requests)
    again = build_vggcaps(config_for(tmp_path, server))
    assert again.failed == 0 and again.exit_code == 0 and again.dataset_size == 2
    assert len(server.state.requests) - before == 2  # only the failed clip, both stages
    assert list(read_jsonl(tmp_path / "failures.jsonl")) == []
    third = build_vggcaps(config_for(tmp_path, server))
    assert third.requests == 0 and third.skipped_done == 2
    stage2 = [r["key"] for r in read_jsonl(tmp_path / "work" / "stage2.jsonl")]
    assert len(stage2) == len(set(stage2)) == 2
    # the key is in the server's headers, and nowhere we wrote or printed
    assert any(h.get("authorization") == f"Bearer {API_KEY}" for h in server.state.headers_seen)
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(API_KEY.encode() in data for data in written)
    captured = capsys.readouterr()
    assert API_KEY not in captured.out + captured.err
    assert "HTTP" in caplog.text or "Request" in caplog.text  # the logs were captured
    assert API_KEY not in caplog.text


def test_rejections_exhausted_become_a_failure_with_the_outputs_kept(tmp_path, server):
    make_extracted(tmp_path, clip_items(1))
    server.state.faults.extend(["leak", "empty", "refusal"])
    summary = build_vggcaps(config_for(tmp_path, server, concurrency=1))
    assert summary.failed == 1
    failure = next(read_jsonl(tmp_path / "failures.jsonl"))
    assert failure["reason"].startswith("rejected 3 outputs; last: refusal")
    assert [r["reason"] for r in failure["rejected"]][1] == "empty output"
    assert "spectrogram" in failure["rejected"][0]["output"]


def test_missing_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("M2C_UNSET_KEY", raising=False)
    make_extracted(tmp_path, clip_items(1))
    config = BuildConfig(
        out=tmp_path,
        openai=OpenAISettings(api_key_env="M2C_UNSET_KEY"),
        steps=("caption",),
        progress=False,
    )
    with pytest.raises(BackendConfigError, match="M2C_UNSET_KEY"):
        build_vggcaps(config)


def test_rate_limiter_paces_from_the_start():
    async def run() -> None:
        # 30/min: the first request goes at once, the second waits its 2 s (a full bucket
        # used to let all 30 leave at t=0)
        limiter = RateLimiter(per_minute=30)
        await asyncio.wait_for(limiter.acquire(), timeout=1.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(limiter.acquire(), timeout=0.05)
        fast = RateLimiter(per_minute=6000)  # one second's worth (100) may leave at once
        for _ in range(100):
            await asyncio.wait_for(fast.acquire(), timeout=1.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fast.acquire(2.0), timeout=0.005)

    asyncio.run(run())


@pytest.mark.parametrize("value", [0, -5])
def test_a_rate_limit_of_zero_or_below_is_refused(value):
    with pytest.raises(ValueError, match="rpm must be a positive"):
        OpenAISettings(rpm=value)
    with pytest.raises(ValueError, match="tpm must be a positive"):
        OpenAISettings(tpm=value)
    with pytest.raises(ValueError, match="must be positive"):
        RateLimiter(value)


def test_records_are_json_lines_with_ascii_safe_ids(tmp_path, server):
    make_extracted(tmp_path, clip_items(2))
    build_vggcaps(config_for(tmp_path, server))
    for line in (tmp_path / "vggcaps.jsonl").read_text().splitlines():
        assert json.loads(line)["split"] in ("train", "test")


def test_split_of_an_empty_store_and_of_no_store(tmp_path):
    from multi2cap.vggcaps.finalize import finalize_dataset

    with pytest.raises(FileNotFoundError, match="vggcaps extract"):
        finalize_dataset(tmp_path / "nothing")
    (tmp_path / "empty" / "work").mkdir(parents=True)
    result = finalize_dataset(tmp_path / "empty")
    assert (result.records, result.test, result.failures) == (0, 0, 0)
    assert pq.read_table(tmp_path / "empty" / "vggcaps.parquet").num_rows == 0


@pytest.mark.parametrize("backend", ["openai", "offline", "openai-batch"])
def test_a_clip_with_unreadable_media_fails_alone(tmp_path, server, backend):
    records = make_extracted(tmp_path, clip_items(3))
    (tmp_path / records[1]["spectrogram"]).unlink()
    (tmp_path / records[1]["audio"]).write_bytes(b"not flac")
    config = config_for(tmp_path, server)
    config.backend = backend
    config.batch.poll_interval_s = 0.01
    summary = build_vggcaps(config)
    assert summary.dataset_size == 2 and summary.failed == 1 and summary.exit_code == 1
    failure = next(read_jsonl(tmp_path / "failures.jsonl"))
    assert failure["id"] == records[1]["id"] and "unreadable media" in failure["reason"]


def test_a_rejected_key_stops_the_build_with_a_reason_not_the_key(tmp_path, server, monkeypatch):
    make_extracted(tmp_path, clip_items(3))
    wrong = "sk-wrong-key-987654321"
    monkeypatch.setenv(KEY_ENV, wrong)
    with pytest.raises(BackendConfigError, match="HTTP 401") as caught:
        build_vggcaps(config_for(tmp_path, server))
    assert wrong not in str(caught.value) and API_KEY not in str(caught.value)
    assert not (tmp_path / "work" / "failures_log.jsonl").exists()


def test_choice_sets_come_from_their_literals(tmp_path):
    assert BACKENDS == ("openai", "openai-batch", "offline")
    assert STEPS == ("extract", "caption", "split")
    with pytest.raises(ValueError, match="backend must be one of"):
        BuildConfig(out=tmp_path, backend="anthropic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown steps"):
        BuildConfig(out=tmp_path, steps=("caption", "upload"))  # type: ignore[arg-type]
