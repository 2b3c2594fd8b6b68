"""The `openai-batch` backend against the loopback server's /v1/files and /v1/batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_loopback import LoopbackServer, stage1_reply, stage2_reply
from vgg_helpers import API_KEY, clip_items, make_extracted

from multi2cap.io import read_jsonl
from multi2cap.vggcaps.backends import BackendConfigError, OpenAISettings, RunStats
from multi2cap.vggcaps.batch import BatchRunner, write_batch_files
from multi2cap.vggcaps.caption import stage_request
from multi2cap.vggcaps.cost import Prices
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.prompts import load_prompts
from multi2cap.vggcaps.records import BatchSettings, BuildConfig, Identity

KEY_ENV = "M2C_TEST_OPENAI_KEY"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    with LoopbackServer(API_KEY) as srv:
        yield srv


def batch_config(out: Path, server: LoopbackServer) -> BuildConfig:
    return BuildConfig(
        out=out,
        backend="openai-batch",
        steps=("caption", "split"),
        progress=False,
        openai=OpenAISettings(base_url=server.base_url, api_key_env=KEY_ENV, max_retries=0),
        batch=BatchSettings(poll_interval_s=0.01),
    )


def test_batch_build_rounds_records_cost_and_no_key_in_files(tmp_path, server):
    make_extracted(tmp_path, clip_items(3))
    server.state.faults.extend(["leak", "500"])  # first stage-1 batch: a leak and a line error
    summary = build_vggcaps(batch_config(tmp_path, server))
    assert server.state.problems == []
    assert summary.exit_code == 0 and summary.dataset_size == 3
    events = list(read_jsonl(tmp_path / "work" / "batches.jsonl"))
    submitted = [e for e in events if e["event"] == "submitted"]
    assert [len(e["custom_ids"]) for e in submitted] == [3, 2, 3]  # stage 1, its re-ask, stage 2
    assert submitted[0]["custom_ids"][0] == f"{clip_items(3)[0][0]}:s1"
    assert {e["batch_id"] for e in events if e["event"] == "collected"} == {
        e["batch_id"] for e in submitted
    }
    records = list(read_jsonl(tmp_path / "vggcaps.jsonl"))
    for record in records:
        assert record["raw_caption"] == stage1_reply(record["category"])
        assert record["caption"] == stage2_reply(record["raw_caption"])
        assert record["backend"] == "openai-batch"
    leaked = next(r for r in read_jsonl(tmp_path / "work" / "stage1.jsonl") if r["rejected"])
    assert leaked["rejected"][0]["reason"].startswith("leaks")
    expected = Prices().cost(summary.prompt_tokens, summary.completion_tokens, batch=True)
    assert summary.cost_usd == pytest.approx(expected) and summary.cost_usd > 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path
    line = json.loads((tmp_path / submitted[0]["file"]).read_text().splitlines()[0])
    assert line["url"] == "/v1/chat/completions" and line["method"] == "POST"
    assert line["body"]["messages"][0]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )


def test_batch_files_respect_request_and_byte_limits(tmp_path):
    make_extracted(tmp_path, clip_items(3))
    prompts = load_prompts()
    records = list(read_jsonl(tmp_path / "work" / "extract.jsonl"))
    requests = [stage_request(r, 1, prompts, tmp_path) for r in records]
    settings = OpenAISettings()
    by_count = write_batch_files(requests, settings, BatchSettings(max_requests=2), tmp_path, "c")
    assert [len(ids) for _, ids in by_count] == [2, 1]
    one_line = len((tmp_path / "c-001.jsonl").read_bytes())
    by_bytes = write_batch_files(
        requests, settings, BatchSettings(max_bytes=one_line + 10), tmp_path, "b"
    )
    assert [len(ids) for _, ids in by_bytes] == [1, 1, 1]
    assert all(path.stat().st_size <= one_line + 10 for path, _ in by_bytes)
    with pytest.raises(ValueError, match="over the 100-byte batch file limit"):
        write_batch_files(requests, settings, BatchSettings(max_bytes=100), tmp_path, "x")


def test_a_submitted_batch_is_collected_not_paid_twice(tmp_path, server):
    make_extracted(tmp_path, clip_items(2))
    config = batch_config(tmp_path, server)
    identity = Identity("openai-batch", "gpt-4o", load_prompts())
    runner = BatchRunner(config, identity, RunStats())
    records = list(read_jsonl(tmp_path / "work" / "extract.jsonl"))
    runner.submit([stage_request(r, 1, identity.prompts, tmp_path) for r in records], 1)
    runner.close()  # the process "dies" here: submitted, never collected
    summary = build_vggcaps(config)
    assert summary.dataset_size == 2
    assert len(server.state.batches) == 2  # the open stage-1 batch, then stage 2


def test_a_rejected_key_stops_the_batch_build_cleanly(tmp_path, server, monkeypatch):
    make_extracted(tmp_path, clip_items(1))
    monkeypatch.setenv(KEY_ENV, "sk-wrong-batch-key")
    with pytest.raises(BackendConfigError, match="HTTP 401") as caught:
        build_vggcaps(batch_config(tmp_path, server))
    assert "sk-wrong-batch-key" not in str(caught.value)


def test_a_batch_still_running_at_the_deadline_stays_open_and_is_collected_later(tmp_path, server):
    make_extracted(tmp_path, clip_items(2))
    server.state.batch_polls_before_done = 10**6  # never done within this run
    config = batch_config(tmp_path, server)
    config.batch.max_wait_s = 0.05
    first = build_vggcaps(config)
    assert first.failed == 2 and first.dataset_size == 0 and first.exit_code == 1
    events = list(read_jsonl(tmp_path / "work" / "batches.jsonl"))
    assert [e["event"] for e in events] == ["submitted"]  # not marked collected
    reasons = {f["reason"] for f in read_jsonl(tmp_path / "failures.jsonl")}
    assert reasons == {
        f"batch {events[0]['batch_id']} still running after 0.05 s; rerun to collect it"
    }
    server.state.batch_polls_before_done = 0  # it finishes
    second = build_vggcaps(config)
    assert second.failed == 0 and second.dataset_size == 2
    # the open stage-1 batch was collected, not paid for again; then one stage-2 batch
    assert len(server.state.batches) == 2


def test_unreadable_batch_output_lines_are_reported_and_their_requests_asked_again(
    tmp_path, server, caplog
):
    make_extracted(tmp_path, clip_items(3))
    server.state.faults.extend(["garbage-line"])  # the first stage-1 line's answer
    summary = build_vggcaps(batch_config(tmp_path, server))
    assert summary.failed == 0 and summary.dataset_size == 3
    submitted = [
        e for e in read_jsonl(tmp_path / "work" / "batches.jsonl") if e["event"] == "submitted"
    ]
    assert [len(e["custom_ids"]) for e in submitted] == [3, 1, 3]  # its request re-asked
    problems = [r.getMessage() for r in caplog.records if "unreadable lines" in r.getMessage()]
    assert len(problems) == 1 and "no custom_id" in problems[0] and "not JSON" in problems[0]
