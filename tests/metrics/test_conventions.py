"""aac-metrics conventions in the Python API: the result unpacks to (corpus, per-item), the set
names users type, `preprocess=` beside `tokenize=`, the vocabulary ratios and SPIDEr-max."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from multi2cap.metrics import (
    Evaluator,
    MetricUnavailableError,
    evaluate,
    metric_availability,
    resolve_metrics,
)
from multi2cap.metrics.vocab import vocab_stats

CANDS = ["a man is speaking", "rain falls"]
MREFS = [
    ["a man speaks", "someone speaks", "a man is speaking while a bird is chirping"],
    ["rain is falling hard on a surface"],
]


def test_the_result_unpacks_like_aac_metrics_and_keeps_its_attributes() -> None:
    result = evaluate(CANDS, MREFS, metrics="bleu,rouge_l", tokenize=False)
    corpus, sents = result
    assert corpus is result.corpus and sents is result.per_item
    assert result[0] is corpus and result[1] is sents and len(result) == 2
    assert set(corpus) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"}
    assert len(sents["rouge_l"]) == 2
    with pytest.raises(TypeError, match=r"indices are 0 \(corpus\) and 1 \(per_item\)"):
        result["bleu_1"]  # type: ignore[index]


def test_set_names_follow_aac_metrics() -> None:
    """aac-metrics' sets, with the parts its `spider`/`spider_fl`/`fense` also return named."""
    coco = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor")
    assert resolve_metrics("default") == (*coco, "cider_d", "spice", "spider")
    assert resolve_metrics("dcase2020") == resolve_metrics("default")
    assert resolve_metrics("dcase2023") == (
        "meteor",
        "cider_d",
        "spice",
        "spider",
        "spider_fl",
        "fer",
    )
    assert resolve_metrics("dcase2024") == (
        *("meteor", "cider_d", "spice", "spider", "spider_fl", "fer", "sbert_sim", "fense"),
        "vocab",
    )
    assert resolve_metrics("bleu") == coco[:4]
    assert resolve_metrics("bleu,meteor") == (*coco[:4], "meteor")
    assert "spider_max" not in resolve_metrics("all")  # several candidates: by name only
    assert "bert_score" in resolve_metrics("all")
    with pytest.raises(ValueError, match=r"or a set \(offline, paper, default, dcase2020"):
        resolve_metrics("dcase2025")


def test_what_the_dcase_sets_need_is_said_once_per_asset(
    monkeypatch: pytest.MonkeyPatch, java: str
) -> None:
    for env in ("MULTI2CAP_SPICE_LIB", "MULTI2CAP_SBERT_MODEL", "MULTI2CAP_FENSE_ECHECKER"):
        monkeypatch.delenv(env, raising=False)
    availability = metric_availability()
    missing = [k for k in resolve_metrics("dcase2024") if availability[k] is not None]
    assert missing == ["spice", "spider", "spider_fl", "fer", "sbert_sim", "fense"]
    with pytest.raises(MetricUnavailableError, match="cannot run here") as caught:
        Evaluator("dcase2024", sbert_model="/nonexistent/sbert")
    message = str(caught.value)
    assert message.count("assets download spice") == 1
    assert message.count("assets download fense") == 1
    assert message.count("assets download sbert") == 1


def test_preprocess_is_tokenize_under_aac_metrics_name() -> None:
    cands, mrefs = ["A dog.", "rain"], [["a dog"], ["rain"]]
    raw = evaluate(cands, mrefs, metrics="rouge_l", preprocess=False)
    assert raw.per_item["rouge_l"] == [0.0, 1.0]
    assert raw.settings["tokenize"] is False
    assert raw.corpus == evaluate(cands, mrefs, metrics="rouge_l", tokenize=False).corpus

    def lower_no_dots(sentences: list[str]) -> list[str]:
        return [re.sub(r"[.]", "", s.lower()) for s in sentences]

    custom = evaluate(cands, mrefs, metrics="rouge_l", preprocess=lower_no_dots)
    assert custom.per_item["rouge_l"] == [1.0, 1.0]
    assert custom.settings["tokenizer"] == "custom"
    with pytest.raises(ValueError, match="tokenize=True and preprocess=False disagree"):
        evaluate(cands, mrefs, metrics="rouge_l", tokenize=True, preprocess=False)
    with pytest.raises(ValueError, match="one sentence per input sentence"):
        evaluate(cands, mrefs, metrics="rouge_l", preprocess=lambda s: s[:1])


def test_vocab_outputs_by_hand() -> None:
    cands = ["a dog barks", "a dog runs"]  # {a, dog, barks, runs}
    mrefs = [["a dog is barking", "the dog barks"], ["rain falls"]]
    stats = vocab_stats(cands, mrefs)
    # all references: {a, dog, is, barking, the, barks, rain, falls}
    assert stats["vocab"] == 4 and stats["vocab.mrefs_full"] == 8
    assert stats["vocab.ratio_full"] == 0.5
    # two draws (the most references of an item); item 1 always gives {rain, falls}, item 0
    # gives {a, dog, is, barking} (4 words) or {the, dog, barks} (3): a mean between 5 and 6.
    assert stats["vocab.mrefs_avg"] in (5.0, 5.5, 6.0)
    assert stats["vocab.ratio_avg"] == 4 / stats["vocab.mrefs_avg"]
    result = evaluate(cands, mrefs, metrics="vocab", tokenize=False)
    assert result.corpus == stats and result.per_item == {}


def test_vocab_reference_draws_are_aac_metrics_torch_draws() -> None:
    """aac-metrics draws one reference per item with `torch.randint(0, n, (), generator=g)`
    on a generator seeded 1234, `max(n)` times; our numpy draws must pick the same ones."""
    torch = pytest.importorskip("torch", reason="the cross-check runs torch's generator")
    mrefs = [[f"item{i} ref{j} word{i * 10 + j}" for j in range(1 + i % 5)] for i in range(40)]
    cands = ["x"] * 40
    generator = torch.Generator().manual_seed(1234)
    sizes = []
    for _ in range(max(len(refs) for refs in mrefs)):
        picked = [refs[int(torch.randint(0, len(refs), (), generator=generator))] for refs in mrefs]
        sizes.append(len({w for s in picked for w in s.split()}))
    assert vocab_stats(cands, mrefs)["vocab.mrefs_avg"] == pytest.approx(sum(sizes) / len(sizes))


def test_spider_max_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match=r"spider_max scores several candidates per item: pass"):
        Evaluator("spider_max", skip_unavailable=True).evaluate(None, MREFS)
    with pytest.raises(ValueError, match="mult_candidates given but no requested metric"):
        evaluate(CANDS, MREFS, metrics="bleu_1", tokenize=False, mult_candidates=[["a"], ["b"]])
    with pytest.raises(ValueError, match="item 1 has 1 candidates, item 0 has 2"):
        evaluate(
            None,
            MREFS,
            metrics="spider_max",
            skip_unavailable=True,
            mult_candidates=[["a", "b"], ["c"]],
        )
    with pytest.raises(
        ValueError, match=r"candidates: expected list\[str\] for bleu_1, found None"
    ):
        evaluate(None, MREFS, metrics="bleu_1")


def test_spider_max_picks_the_best_candidate_per_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPIDEr-max = per item, the SPIDEr of its best candidate, with that candidate's CIDEr-D and
    SPICE (aac-metrics' `spider_max`). SPICE cannot run here (no CoreNLP 3.6.0 jars), so a
    stand-in returns fixed SPICE values; CIDEr-D is the real one, checked against `evaluate`
    on each candidate slice. All candidates go to SPICE in one call (one JVM start)."""
    for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (tmp_path / name).write_bytes(b"")
    mcands = [
        ["a man speaks", "a bird is chirping", "a man is speaking"],
        ["rain falls hard", "wind blows", "rain"],
    ]
    spice_of = {"a man speaks": 0.4, "a bird is chirping": 0.9, "a man is speaking": 0.5}
    spice_of |= {"rain falls hard": 0.3, "wind blows": 0.0, "rain": 0.35}
    calls: list[list[str]] = []

    def stand_in(cands: list[str], mrefs: list[list[str]], *args: Any) -> tuple[float, list[float]]:
        calls.append(list(cands))
        scores = [spice_of[c] for c in cands]
        return sum(scores) / len(scores), scores

    monkeypatch.setattr("multi2cap.metrics.evaluator.spice", stand_in)
    result = evaluate(
        None,
        MREFS,
        metrics="spider_max",
        tokenize=False,
        spice_lib=str(tmp_path),
        mult_candidates=mcands,
    )
    assert calls == [[c for group in mcands for c in group]]
    cider = [
        evaluate([g[k] for g in mcands], MREFS, metrics="cider_d", tokenize=False).per_item[
            "cider_d"
        ]
        for k in range(3)
    ]
    for item in range(2):
        spider = [(cider[k][item] + spice_of[mcands[item][k]]) / 2 for k in range(3)]
        best = max(range(3), key=lambda k: (spider[k], -k))
        assert result.per_item["spider_max"][item] == pytest.approx(spider[best], abs=1e-12)
        assert result.per_item["cider_d_max"][item] == pytest.approx(cider[best][item], abs=1e-12)
        assert result.per_item["spice_max"][item] == spice_of[mcands[item][best]]
    assert list(result.corpus) == ["spider_max", "cider_d_max", "spice_max"]
    assert result.corpus["spider_max"] == pytest.approx(sum(result.per_item["spider_max"]) / 2)
