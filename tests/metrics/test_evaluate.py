"""`evaluate` / `Evaluator`: the oracle through the public API, reuse, edge cases, availability."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from multi2cap.metrics import (
    METRIC_KEYS,
    Evaluator,
    MetricUnavailableError,
    MetricWarning,
    asset_statuses,
    evaluate,
    metric_availability,
    resolve_metrics,
)

OFFLINE = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor", "cider_d")


def assert_oracle(result: Any, oracle: dict[str, Any]) -> None:
    for key in OFFLINE:
        assert result.corpus[key] == pytest.approx(oracle["corpus"][key], abs=1e-12, rel=0), key
        assert result.per_item[key] == pytest.approx(oracle["per_item"][key], abs=1e-12, rel=0)


def test_oracle_through_a_warm_evaluator(offline_evaluator: Evaluator, oracle: dict) -> None:
    first = offline_evaluator(oracle["candidates"], oracle["mult_references"])
    assert_oracle(first, oracle)
    assert first.unavailable == {}
    assert first.settings["tokenizer"] == "ptb-corenlp-3.4.1"
    # The pooled METEOR is not the mean of the items (research note, section 7.1).
    assert first.corpus["meteor"] != pytest.approx(sum(first.per_item["meteor"]) / 3)
    assert first.corpus["vocab"] == 21.0
    assert "vocab" not in first.per_item
    # Same JVM, same numbers on a second call (the trainer calls it every epoch).
    again = offline_evaluator.evaluate(oracle["candidates"], oracle["mult_references"])
    assert again.corpus == first.corpus


def test_edge_cases(offline_evaluator: Evaluator) -> None:
    cands = ["", "a dog barks", "...", "音楽 が 流れる (loud)", "A dog barks."]
    mrefs = [["a dog barks"], ["A dog barks."], ["wind blows"], ["音楽 が 流れる"], ["a dog barks"]]
    result = offline_evaluator(cands, mrefs)
    for key in OFFLINE:
        assert len(result.per_item[key]) == 5
    assert result.per_item["bleu_1"][0] == 0.0
    assert result.per_item["meteor"][0] == 0.0
    assert result.per_item["rouge_l"][2] == 0.0  # punctuation-only caption tokenizes to ""
    # Identical after tokenization: maximal BLEU-1 / ROUGE-L / METEOR.
    assert result.per_item["bleu_1"][1] == pytest.approx(1.0, abs=1e-9)
    assert result.per_item["rouge_l"][1] == 1.0
    assert result.per_item["rouge_l"][4] == 1.0
    assert result.per_item["meteor"][1] > 0.9


def test_thousands_of_items(offline_evaluator: Evaluator) -> None:
    rng = random.Random(0)
    words = [
        "a",
        "the",
        "dog",
        "man",
        "car",
        "rain",
        "roof",
        "bird",
        "barks",
        "speaks",
        "is",
        "while",
        "and",
        "then",
        "in",
        "on",
    ]

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))

    cands = [sentence() for _ in range(2000)]
    mrefs = [[sentence() for _ in range(5)] for _ in range(2000)]
    cands[1999] = mrefs[1999][2]
    result = offline_evaluator(cands, mrefs)
    assert all(len(v) == 2000 for v in result.per_item.values())
    assert result.per_item["meteor"][1999] > 0.9
    assert 0 < result.corpus["cider_d"] < 10


def test_one_item_scores_with_cider_left_out_and_a_warning(offline_evaluator: Evaluator) -> None:
    """aac-metrics raises on one item (its issue #5) and pycocoevalcap prints CIDEr 0.0; we score
    the rest, leave CIDEr-D (and what is built on it) out with the reason, and warn."""
    with pytest.warns(MetricWarning, match=r"cider_d left out on 1 item"):
        result = offline_evaluator(["a dog"], [["a dog barks"]])
    assert "cider_d" not in result.corpus
    assert result.corpus["bleu_1"] == pytest.approx(0.6065306597, abs=1e-9)  # 2/3 brevity
    assert 0 < result.corpus["meteor"] < 1 and result.corpus["vocab"] == 2
    assert "at least 2 items" in result.unavailable["cider_d"]
    assert "aac-metrics raises" in result.unavailable["cider_d"]
    corpus, per_item = result
    assert corpus is result.corpus and per_item["bleu_1"] == result.per_item["bleu_1"]
    ((keys, reason),) = result.unavailable_grouped()
    assert keys == ["cider_d"] and "at least 2 items" in reason
    # The evaluator is unchanged for the next, larger set.
    assert "cider_d" in offline_evaluator(["a dog", "rain"], [["a dog"], ["rain"]]).corpus


def test_one_item_raises_under_strict() -> None:
    with pytest.raises(MetricUnavailableError, match="cider_d: needs at least 2 items"):
        evaluate(
            ["a dog"], [["a dog barks"]], metrics="bleu_1,cider_d", strict=True, tokenize=False
        )


def test_unavailable_assets_strict_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MULTI2CAP_SPICE_LIB", raising=False)
    with pytest.raises(MetricUnavailableError, match="MULTI2CAP_SPICE_LIB"):
        Evaluator("spice,spider")
    result = evaluate(
        ["a dog", "rain"],
        [["a dog barks"], ["rain falls"]],
        metrics="spider,bleu_1",
        skip_unavailable=True,
        tokenize=False,
    )
    assert set(result.unavailable) == {"spider"}
    assert "stanford-corenlp-3.6.0-models.jar" in result.unavailable["spider"]
    assert list(result.corpus) == ["bleu_1"]


def test_missing_assets_are_named_once_each(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for env in ("MULTI2CAP_SPICE_LIB", "MULTI2CAP_SBERT_MODEL", "MULTI2CAP_FENSE_ECHECKER"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(MetricUnavailableError) as caught:
        Evaluator("paper", sbert_model=str(tmp_path / "no-sbert"))
    message = str(caught.value)
    assert message.startswith("5 requested metric(s) cannot run here:")
    assert message.count("MULTI2CAP_SPICE_LIB") == 1  # was 3: once per SPICE-based metric
    assert message.count("MULTI2CAP_FENSE_ECHECKER") == 1
    lines = message.splitlines()[1:]
    assert lines[0].startswith("- spice, spider, spider_fl: SPICE needs Stanford CoreNLP")
    assert any(line.startswith("- spider_fl, fense: FENSE error detector") for line in lines)
    assert len(message) < 1500


def test_type_errors_say_what_was_found() -> None:
    with pytest.raises(TypeError, match=r"candidates: expected list\[str\], found dict"):
        evaluate({"a": 1}, [["a"]], metrics="bleu_1", tokenize=False)
    with pytest.raises(TypeError, match=r"candidate 1: expected str, found int"):
        evaluate(["a", 3], [["a"], ["b"]], metrics="bleu_1", tokenize=False)
    with pytest.raises(TypeError, match=r"item 0: reference 1: expected str, found NoneType"):
        evaluate(["a"], [["a", None]], metrics="bleu_1", tokenize=False)
    with pytest.raises(
        TypeError, match=r"mult_references: expected list\[list\[str\]\], found str"
    ):
        evaluate(["a"], "a", metrics="bleu_1", tokenize=False)


def test_no_tokenize_scores_raw_text() -> None:
    result = evaluate(
        ["A dog.", "rain"], [["a dog"], ["rain"]], metrics="bleu_1,rouge_l", tokenize=False
    )
    assert result.per_item["rouge_l"] == [0.0, 1.0]  # "A dog." shares no token with "a dog"
    assert "tokenizer" not in result.settings


def test_metric_names_and_inputs() -> None:
    assert resolve_metrics("offline")[-1] == "vocab"
    assert resolve_metrics("meteor,bleu_1") == ("bleu_1", "meteor")
    assert set(resolve_metrics("paper")) >= {"spider_fl", "fense", "sbert_sim", "spice"}
    with pytest.raises(ValueError, match="unknown metric 'bleu_5'"):
        resolve_metrics("bleu_5")
    with pytest.raises(ValueError, match="2 candidates but 1"):
        evaluate(["a", "b"], [["a"]], metrics="bleu_1", tokenize=False)
    with pytest.raises(ValueError, match="item 1: references"):
        evaluate(["a", "b"], [["a"], []], metrics="bleu_1", tokenize=False)
    with pytest.raises(ValueError, match="no candidates"):
        evaluate([], [], metrics="bleu_1", tokenize=False)


def test_availability_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MULTI2CAP_FENSE_ECHECKER", raising=False)
    availability = metric_availability()
    assert set(availability) == set(METRIC_KEYS)
    for key in ("bleu_1", "rouge_l", "cider_d", "vocab"):
        assert availability[key] is None
    assert "MULTI2CAP_FENSE_ECHECKER" in availability["fer"]
    assert "MULTI2CAP_FENSE_ECHECKER" in availability["fense"]
    rows = {name: (ok, detail) for name, ok, detail in asset_statuses()}
    assert rows["FENSE error detector (echecker)"][0] is False
    assert any(ok for ok, _ in rows.values())  # the pycocoevalcap wheel is a dependency


def test_caption_file_type_errors_say_what_was_found(tmp_path: Path) -> None:
    from multi2cap.metrics.files import CaptionFileError, read_predictions, read_references

    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"id": "a", "caption": ["a dog"]}\n')
    with pytest.raises(CaptionFileError, match=r"p\.jsonl:1: `caption`: expected str, found list"):
        read_predictions(predictions)
    predictions.write_text('{"name": "a", "caption": "a dog"}\n')
    with pytest.raises(
        CaptionFileError,
        match=r"an `id` \(or `file_name`\) field, found keys \['caption', 'name'\]",
    ):
        read_predictions(predictions)
    references = tmp_path / "r.jsonl"
    references.write_text('{"id": "a", "captions": "a dog"}\n')
    with pytest.raises(CaptionFileError, match=r"`captions`: expected list\[str\], found str"):
        read_references(references)
