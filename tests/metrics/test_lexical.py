"""BLEU, ROUGE-L and CIDEr-D: equal to pycocoevalcap's scorers (to the bit on these inputs)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from multi2cap.metrics._ngrams import build_ngram_table
from multi2cap.metrics.bleu import bleu
from multi2cap.metrics.cider import cider_d
from multi2cap.metrics.rouge import lcs_length, rouge_l

WORDS = [
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
    "loudly",
]


def ours(cands: list[str], mrefs: list[list[str]]) -> dict[str, Any]:
    table = build_ngram_table(cands, mrefs)
    return {"bleu": bleu(table), "rouge_l": rouge_l(cands, mrefs), "cider_d": cider_d(table)}


def reference(cands: list[str], mrefs: list[list[str]]) -> dict[str, Any]:
    gts = {i: refs for i, refs in enumerate(mrefs)}
    res = {i: [c] for i, c in enumerate(cands)}
    b_corpus, b_items = Bleu(4).compute_score(gts, res, verbose=0)
    r_corpus, r_items = Rouge().compute_score(gts, res)
    c_corpus, c_items = Cider().compute_score(gts, res)
    return {
        "bleu": (b_corpus, b_items),
        "rouge_l": (r_corpus, list(r_items)),
        "cider_d": (c_corpus, list(c_items)),
    }


def random_set(seed: int, n_items: int) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))

    cands = [sentence() for _ in range(n_items)]
    mrefs = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(n_items)]
    return cands, mrefs


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_pycocoevalcap_on_random_sets(seed: int) -> None:
    cands, mrefs = random_set(seed, 150)
    cands[3] = cands[7] = mrefs[7][0]  # identical candidate and reference
    got, want = ours(cands, mrefs), reference(cands, mrefs)
    assert got["bleu"][0] == pytest.approx(want["bleu"][0], abs=1e-12, rel=0)
    for k in range(4):
        assert got["bleu"][1][k] == pytest.approx(want["bleu"][1][k], abs=1e-12, rel=0)
    for key in ("rouge_l", "cider_d"):
        assert got[key][0] == pytest.approx(want[key][0], abs=1e-12, rel=0)
        assert got[key][1] == pytest.approx(want[key][1], abs=1e-12, rel=0)


def test_oracle_from_pretokenized_references(oracle: dict[str, Any]) -> None:
    """Research note: lower-cased, punctuation-free references give the oracle without PTB."""
    mrefs = [
        [r.lower().replace(".", "").replace(",", "") for r in refs]
        for refs in oracle["mult_references"]
    ]
    got = ours(oracle["candidates"], mrefs)
    for k in range(4):
        key = f"bleu_{k + 1}"
        assert got["bleu"][0][k] == pytest.approx(oracle["corpus"][key], abs=1e-12, rel=0)
        assert got["bleu"][1][k] == pytest.approx(oracle["per_item"][key], abs=1e-12, rel=0)
    for key in ("rouge_l", "cider_d"):
        assert got[key][0] == pytest.approx(oracle["corpus"][key], abs=1e-12, rel=0)
        assert got[key][1] == pytest.approx(oracle["per_item"][key], abs=1e-12, rel=0)


def test_edge_cases_match_pycocoevalcap() -> None:
    """Empty candidate, empty reference, unicode and an exact match, next to ordinary items."""
    cands = ["", "a dog barks", "café naïve 日本 音", "rain on a roof", "x"]
    mrefs = [
        ["a dog barks", ""],
        ["a dog barks"],
        ["café naïve 日本 音 noise", "音"],
        ["rain falls on a roof", "rain on the roof"],
        ["y z"],
    ]
    got, want = ours(cands, mrefs), reference(cands, mrefs)
    assert got["cider_d"][1] == pytest.approx(want["cider_d"][1], abs=1e-12, rel=0)
    assert got["rouge_l"][1] == pytest.approx(want["rouge_l"][1], abs=1e-12, rel=0)
    for k in range(4):
        assert got["bleu"][1][k] == pytest.approx(want["bleu"][1][k], abs=1e-12, rel=0)
    assert got["bleu"][1][0][0] == 0.0  # empty candidate: brevity penalty exp(-huge)
    assert got["bleu"][1][0][1] == pytest.approx(1.0, abs=1e-9)  # identical: 0.999999999...
    assert got["rouge_l"][1][1] == pytest.approx(1.0)
    assert got["rouge_l"][1][4] == 0.0


def test_cider_needs_two_items() -> None:
    with pytest.raises(ValueError, match="at least 2 items"):
        cider_d(build_ngram_table(["a dog"], [["a dog"]]))


def _lcs_table(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = row[:]
        for j, y in enumerate(b, start=1):
            row[j] = prev[j - 1] + 1 if x == y else max(prev[j], row[j - 1])
    return row[-1]


def test_bit_parallel_lcs_equals_dynamic_programming() -> None:
    rng = random.Random(3)
    alphabet = list("abcde")
    for _ in range(300):
        a = [rng.choice(alphabet) for _ in range(rng.randint(0, 70))]
        b = [rng.choice(alphabet) for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == _lcs_table(a, b) == lcs_length(b, a)
    assert lcs_length(WORDS, WORDS) == len(WORDS)
    assert lcs_length(WORDS, []) == 0
