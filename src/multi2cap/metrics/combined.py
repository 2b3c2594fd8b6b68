"""Metrics built from other metrics' per-item scores (aac-metrics definitions)."""

from __future__ import annotations

from collections.abc import Sequence

#: FENSE and SPIDEr-FL multiply a caption's score by (1 - 0.9) when the echecker flags it.
FLUENCY_PENALTY = 0.9


def spider(cider_d: Sequence[float], spice: Sequence[float]) -> list[float]:
    """Per-item SPIDEr = (CIDEr-D + SPICE) / 2; the corpus value is the mean of these."""
    return [(c + s) / 2 for c, s in zip(cider_d, spice, strict=True)]


def fluency_penalized(
    scores: Sequence[float], fer: Sequence[float], penalty: float = FLUENCY_PENALTY
) -> list[float]:
    """score_i * (1 - penalty * fer_i): FENSE from SBERT-sim, SPIDEr-FL from SPIDEr."""
    return [s * (1 - penalty * f) for s, f in zip(scores, fer, strict=True)]
