"""BLEU-1..4 with coco-caption semantics (`pycocoevalcap.bleu`, `option="closest"`).

Per item: clipped n-gram precisions with the smoothing constants `tiny=1e-15`, `small=1e-9`
(why a perfect BLEU-1 reads 0.9999999999) and a brevity penalty against the reference length
closest to the candidate's (ties take the shorter). Corpus: the same formula on counts pooled
over all items, which is not the mean of the item scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from multi2cap.metrics._ngrams import NgramTable, lookup

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


def bleu(table: NgramTable) -> tuple[list[float], list[list[float]]]:
    """BLEU-1..n of every item and of the corpus from an n-gram table.

    Returns (corpus `[bleu_1, ..., bleu_n]`, per-item `[[bleu_k of each item] for k]`).
    """
    n, n_items = table.n, table.n_items
    ref_keys, ref_max = table.reference_max_counts
    cand = table.is_candidate()
    clipped = np.minimum(
        table.count[cand],
        lookup(ref_keys, ref_max, table.sent[cand] * table.n_grams + table.gram[cand]),
    )
    correct = np.bincount(
        table.sent[cand] * n + table.order[cand], weights=clipped, minlength=n_items * n
    ).reshape(n_items, n)
    testlens = table.lengths[:n_items]
    # The reference length closest to the candidate's, the shorter one on a tie.
    ref_lengths = table.lengths[n_items:]
    distance = np.abs(ref_lengths - testlens[table.ref_item])
    closeness = distance * (int(ref_lengths.max(initial=0)) + 1) + ref_lengths
    reflens = np.minimum.reduceat(closeness, table.ref_start) % (
        int(ref_lengths.max(initial=0)) + 1
    )

    per_item: list[list[float]] = [[] for _ in range(n)]
    for i in range(n_items):
        testlen = int(testlens[i])
        guess = [max(0, testlen - k) for k in range(n)]
        scores = _bleu_from_counts([int(c) for c in correct[i]], guess, testlen, int(reflens[i]))
        for k in range(n):
            per_item[k].append(scores[k])
    total_guess = [int(np.maximum(testlens - k, 0).sum()) for k in range(n)]
    corpus = _bleu_from_counts(
        [int(c) for c in correct.sum(axis=0)],
        total_guess,
        int(testlens.sum()),
        int(reflens.sum()),
    )
    return corpus, per_item
