"""ROUGE-L with coco-caption semantics (`pycocoevalcap.rouge`).

Per item: precision and recall of the longest common subsequence (LCS) are each maximised over
the references separately, then combined as an F-measure with beta = 1.2. Corpus: mean over items.
Tokens come from `str.split(" ")` as in coco-caption, so an empty caption is one empty token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_BETA2 = 1.2**2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Hyyrö 2004): each token of `b` updates one integer whose bits stand for the
    positions of `a`, so the cost is O(len(b)) big-integer operations instead of a
    len(a) x len(b) table.
    """
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l_item(candidate: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure (beta 1.2) of one candidate against its references."""
    cand = candidate.split(" ")
    prec_max = 0.0
    rec_max = 0.0
    for reference in references:
        ref = reference.split(" ")
        lcs = lcs_length(ref, cand)
        prec_max = max(prec_max, lcs / float(len(cand)))
        rec_max = max(rec_max, lcs / float(len(ref)))
    if prec_max == 0 or rec_max == 0:
        return 0.0
    return ((1 + _BETA2) * prec_max * rec_max) / float(rec_max + _BETA2 * prec_max)


def rouge_l(
    candidates: Sequence[str], mult_references: Sequence[Sequence[str]]
) -> tuple[float, list[float]]:
    """(corpus ROUGE-L = mean of items, per-item scores) of tokenized captions."""
    scores = [rouge_l_item(c, refs) for c, refs in zip(candidates, mult_references, strict=True)]
    return float(np.mean(np.array(scores))), scores
