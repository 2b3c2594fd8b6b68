"""CIDEr-D with coco-caption semantics (`pycocoevalcap.cider`, which AAC papers call CIDEr).

For n = 1..4: TF-IDF vectors whose document frequencies are counted over the references of the
evaluated set (idf = log N_items - log max(1, df)), candidate weights clipped by the reference's,
cosine normalised, times a Gaussian length penalty exp(-delta^2 / (2 sigma^2)) with sigma = 6;
averaged over references and n, times 10. Corpus: mean over items. Because of the IDF, scores
depend on the whole evaluated set and need at least 2 items (with one, every IDF is 0).

The "length" in the penalty is coco-caption's: the number of bigrams, i.e. words - 1 (0 for an
empty caption), which only differs from the word count for empty captions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from multi2cap.metrics._ngrams import NgramCounts

_Vector = tuple[list[dict[tuple[str, ...], float]], list[float], int]


def _tfidf(counts: NgramCounts, log_n: float, log_df: dict[tuple[str, ...], float]) -> _Vector:
    """(TF-IDF weights per order, L2 norm per order, bigram count) of one sentence."""
    vectors = []
    norms = []
    for order in counts:
        vec = {gram: float(tf) * (log_n - log_df.get(gram, 0.0)) for gram, tf in order.items()}
        vectors.append(vec)
        norms.append(math.sqrt(sum(w * w for w in vec.values())))
    return vectors, norms, counts[1].total() if len(counts) > 1 else 0


def cider_d(
    cand_counts: Sequence[NgramCounts],
    refs_counts: Sequence[Sequence[NgramCounts]],
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """(corpus CIDEr-D, per-item scores) from pre-counted 1..4-grams; needs >= 2 items."""
    if len(cand_counts) < 2:
        raise ValueError("CIDEr-D needs at least 2 items: its IDF over one item is always 0")
    doc_freq: Counter[tuple[str, ...]] = Counter()
    for refs in refs_counts:
        doc_freq.update({gram for ref in refs for order in ref for gram in order})
    log_n = math.log(float(len(refs_counts)))
    log_df = {gram: math.log(float(df)) for gram, df in doc_freq.items()}
    two_sigma2 = 2 * sigma**2
    scores = []
    for cand, refs in zip(cand_counts, refs_counts, strict=True):
        vec, norm, length = _tfidf(cand, log_n, log_df)
        total = [0.0] * len(vec)
        for ref in refs:
            vec_ref, norm_ref, length_ref = _tfidf(ref, log_n, log_df)
            penalty = math.e ** (-(float(length - length_ref) ** 2) / two_sigma2)
            for k, (hyp_k, ref_k) in enumerate(zip(vec, vec_ref, strict=True)):
                val = 0.0
                for gram, weight in hyp_k.items():
                    ref_weight = ref_k.get(gram, 0.0)
                    val += min(weight, ref_weight) * ref_weight
                if norm[k] != 0 and norm_ref[k] != 0:
                    val /= norm[k] * norm_ref[k]
                total[k] += val * penalty
        mean = 0.0
        for value in total:
            mean += value
        scores.append(mean / len(total) / len(refs) * 10.0)
    return float(np.mean(np.array(scores))), scores
