"""n-gram counting shared by BLEU and CIDEr-D (one pass per sentence, reused by both)."""

from __future__ import annotations

from collections import Counter

NgramCounts = list[Counter[tuple[str, ...]]]


def count_ngrams(words: list[str], n: int = 4) -> NgramCounts:
    """Counts of the 1..n-grams of a token list; element k holds the (k+1)-grams."""
    return [Counter(zip(*(words[i:] for i in range(k)), strict=False)) for k in range(1, n + 1)]
