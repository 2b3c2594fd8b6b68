"""BLEU-1..4 with coco-caption semantics (`pycocoevalcap.bleu`, `option="closest"`).

Per item: clipped n-gram precisions with the smoothing constants `tiny=1e-15`, `small=1e-9`
(why a perfect BLEU-1 reads 0.9999999999) and a brevity penalty against the reference length
closest to the candidate's (ties take the shorter). Corpus: the same formula on counts pooled
over all items, which is not the mean of the item scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from multi2cap.metrics._ngrams import NgramCounts

_TINY = 1e-15
_SMALL = 1e-9


def _bleu_from_counts(
    correct: Sequence[int], guess: Sequence[int], testlen: float, reflen: float
) -> list[float]:
    scores = []
    product = 1.0
    for k in range(len(correct)):
        product *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


def bleu(
    cand_counts: Sequence[NgramCounts],
    cand_lengths: Sequence[int],
    refs_counts: Sequence[Sequence[NgramCounts]],
    refs_lengths: Sequence[Sequence[int]],
    n: int = 4,
) -> tuple[list[float], list[list[float]]]:
    """BLEU-1..n from pre-counted n-grams (see `_ngrams.count_ngrams`).

    Returns (corpus scores `[bleu_1, ..., bleu_n]`, per-item scores `[[bleu_k per item] for k]`).
    """
    per_item: list[list[float]] = [[] for _ in range(n)]
    total_correct = [0] * n
    total_guess = [0] * n
    total_testlen = 0
    total_reflen = 0
    for cand, testlen, refs, reflens in zip(
        cand_counts, cand_lengths, refs_counts, refs_lengths, strict=True
    ):
        reflen = min((abs(length - testlen), length) for length in reflens)[1]
        guess = [max(0, testlen - k) for k in range(n)]
        correct = []
        for k in range(n):
            max_ref: Counter[tuple[str, ...]] = Counter()
            for ref in refs:
                max_ref |= ref[k]
            correct.append((cand[k] & max_ref).total())
        for k, score in enumerate(_bleu_from_counts(correct, guess, testlen, reflen)):
            per_item[k].append(score)
        total_testlen += testlen
        total_reflen += reflen
        for k in range(n):
            total_correct[k] += correct[k]
            total_guess[k] += guess[k]
    corpus = _bleu_from_counts(total_correct, total_guess, total_testlen, total_reflen)
    return corpus, per_item
