"""ROUGE-L with coco-caption semantics (`pycocoevalcap.rouge`).

Per item: precision and recall of the longest common subsequence (LCS) are each maximised over
the references separately, then combined as an F-measure with beta = 1.2. Corpus: mean over items.
Tokens come from `str.split(" ")` as in coco-caption, so an empty caption is one empty token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_BETA2 = 1.2**2


def _position_masks(tokens: Sequence[str]) -> dict[str, int]:
    """token -> integer whose bit i is set where tokens[i] is that token."""
    masks: dict[str, int] = {}
    for i, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << i)
    return masks


def _lcs_with_masks(masks: dict[str, int], length: int, other: Sequence[str]) -> int:
    """LCS length of the sequence behind `masks` (of `length` tokens) and `other`.

    Bit-parallel (Hyyrö 2004): each token of `other` updates one integer whose bits stand for
    the positions of the first sequence, so the cost is O(len(other)) big-integer operations
    instead of a len x len table.
    """
    full = (1 << length) - 1
    v = full
    for token in other:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return length - v.bit_count()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    return _lcs_with_masks(_position_masks(a), len(a), b)


def rouge_l_item(candidate: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure (beta 1.2) of one candidate against its references."""
    cand = candidate.split(" ")
    masks = _position_masks(cand)
    prec_max = 0.0
    rec_max = 0.0
    for reference in references:
        ref = reference.split(" ")
        lcs = _lcs_with_masks(masks, len(cand), ref)
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
