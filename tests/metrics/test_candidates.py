"""Several candidates per clip scored against the clip's references (`score_candidates`, what
ranks preference pairs): CIDEr-D's IDF is one document per clip whatever the candidate count,
so a candidate scores as it would alone; neural scorers are the Evaluator's per-item values;
a missing asset is an error naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multi2cap.metrics import MetricUnavailableError, evaluate
from multi2cap.metrics._ngrams import build_ngram_table
from multi2cap.metrics.candidates import score_candidates
from multi2cap.metrics.cider import cider_d, cider_d_groups
from multi2cap.metrics.clap import save_tiny_clap

REFERENCES = [
    ["a dog barks loudly", "a dog is barking"],
    ["rain falls on a tin roof", "heavy rain on a roof"],
    ["a bell rings twice", "a church bell rings"],
    ["birds sing in the morning", "birds chirp outside"],
]
GROUPS = [
    ["a dog barks", "a dog barks", "rain on a roof", "a bell"],
    ["rain falls on a roof", "a dog barks loudly"],
    [],  # no candidates: its references still count in the IDF
    ["birds sing", "birds sing in the morning", "a car"],
]


def _alone(item: int, candidate: str, others: list[str]) -> float:
    """coco-caption CIDEr-D of `candidate` as item `item`'s only candidate (the other items
    take `others`), on the same four reference sets."""
    cands = list(others)
    cands[item] = candidate
    _, scores = cider_d(build_ngram_table(cands, REFERENCES))
    return scores[item]


def test_cider_d_groups_scores_each_candidate_as_if_alone() -> None:
    scores = cider_d_groups(GROUPS, REFERENCES)
    assert [len(s) for s in scores] == [len(g) for g in GROUPS]
    fillers = ["x", "y", "z", "w"]
    for item, group in enumerate(GROUPS):
        for j, candidate in enumerate(group):
            assert scores[item][j] == pytest.approx(_alone(item, candidate, fillers), abs=1e-12)
    # Duplicates score the same; an exact reference scores highest in its group.
    assert scores[0][0] == scores[0][1]
    assert np.argmax(scores[3]) == 1 and scores[3][2] == 0.0


def test_cider_d_groups_with_one_candidate_each_is_coco_cider() -> None:
    singles = [["a dog barks"], ["rain on a roof"], ["a bell rings"], ["birds sing"]]
    _, expected = cider_d(build_ngram_table([g[0] for g in singles], REFERENCES))
    got = cider_d_groups(singles, REFERENCES)
    assert [g[0] for g in got] == pytest.approx(expected, abs=1e-12)
    # The documents argument: two items sharing a document count once in N and in the DF.
    table = build_ngram_table(
        ["a dog barks", "a dog", "rain"], [REFERENCES[0]] * 2 + [REFERENCES[1]]
    )
    _, shared = cider_d(table, documents=np.array([0, 0, 1]))
    _, alone = cider_d(build_ngram_table(["a dog barks", "rain"], REFERENCES[:2]))
    assert shared[0] == pytest.approx(alone[0]) and shared[2] == pytest.approx(alone[1])


def test_score_candidates_cider_d_is_evaluate_per_item() -> None:
    # PTB tokenization (punctuation, case) as `evaluate` applies it, then the same values.
    groups = [["A dog, barking!"], ["Rain falls on a roof."], ["a bell"], ["Birds sing."]]
    got = score_candidates(groups, REFERENCES, "cider_d", tokenizer_backend="python")
    result = evaluate([g[0] for g in groups], REFERENCES, ["cider_d"], tokenizer_backend="python")
    assert [g[0] for g in got] == pytest.approx(result.per_item["cider_d"], abs=1e-12)


def test_score_candidates_neural_scorer_is_the_evaluators(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="CLAP needs transformers")
    words = sorted({w for refs in REFERENCES for r in refs for w in r.split()} | {"car"})
    clap = save_tiny_clap(tmp_path / "clap", words)
    groups = [g for g in GROUPS if g]
    refs = [r for g, r in zip(GROUPS, REFERENCES, strict=True) if g]
    got = score_candidates(groups, refs, "clap_sim", clap_model=str(clap))
    flat = [c for g in groups for c in g]
    owners = [r for g, r in zip(groups, refs, strict=True) for _ in g]
    direct = evaluate(flat, owners, ["clap_sim"], clap_model=str(clap)).per_item
    (values,) = direct.values()
    assert [v for g in got for v in g] == pytest.approx(values, abs=1e-6)
    assert len(set(np.round(values, 6))) > 1  # a real ranking, not a constant


def test_a_missing_scorer_asset_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MULTI2CAP_CLAP_MODEL", raising=False)
    with pytest.raises(MetricUnavailableError, match="CLAP"):
        score_candidates(GROUPS, REFERENCES, "clap_sim")
    with pytest.raises(ValueError, match="audio path"):
        score_candidates(GROUPS, REFERENCES, "clap_sim_audio", clap_model="x")
    with pytest.raises(ValueError, match="unknown scorer"):
        score_candidates(GROUPS, REFERENCES, "bleu_4")  # type: ignore[arg-type]
