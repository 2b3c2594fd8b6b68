"""Comparing captioning systems by human judgement: MOS per system with a paired test, and A/B
preference shares with a binomial interval and test (`multi2cap human` system-MOS and A/B
studies, docs/human.md "Comparing systems").

- **MOS per system**: `analysis.mos.summarize_ratings` on each system's ratings (the mean of the
  per-clip means, Student's t interval over clips cut to the 1-5 scale).
- **Paired test between two systems**: the Wilcoxon signed-rank test, two-sided, over the clips
  both systems were rated on, of the per-clip differences of the mean scores. Why: clips are the
  sampled unit (the unit of the CI too) and every rater rated both systems on each clip, so
  pairing by clip removes clip difficulty; the per-clip means of a few 1-5 ratings are discrete
  and skewed near the scale's ends, which the signed-rank test tolerates (it assumes symmetric
  differences, not normal ones). Clips whose difference is exactly 0 carry no evidence of
  direction and are dropped before ranking (Wilcoxon's own treatment, `zero_method="wilcox"`;
  their number is reported), as the A/B test drops ties. The p-value is exact for up to 50 clips
  without tied differences; with ties, an exhaustive permutation test up to 13 clips and the
  normal approximation with the tie correction above (scipy's `method="auto"`). The mean difference is reported with a paired-t 95 % interval as the effect
  size. With more than two systems every pair is tested and Holm's adjustment of the p-values is
  given beside the raw ones.
- **A/B preference**: each judgement prefers system A, system B or neither (a tie). Shares are
  over all judgements; the test is the two-sided exact binomial test of A's wins among the
  decisive judgements (ties left out: the sign test's convention, Dixon & Mood 1946) against 1/2,
  and A's share of the decisive judgements gets a Wilson 95 % interval (inside [0, 1], good
  coverage for small counts). Judgements are treated as independent, which they are not quite
  (each rater judges every clip): with few raters, read the p-value as optimistic.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from multi2cap.analysis.mos import MosSummary, Rating, mean_interval, summarize_ratings

TIE = "tie"


@dataclass(frozen=True)
class PairedTest:
    """System `a` against system `b` over the clips both were rated on (difference = a - b)."""

    a: str
    b: str
    n_items: int
    n_zero: int
    mean_difference: float
    ci_low: float
    ci_high: float
    wilcoxon_statistic: float
    p_value: float
    p_holm: float = float("nan")


@dataclass(frozen=True)
class SystemsSummary:
    """MOS of each system (in the order given) and the paired test of every pair."""

    systems: dict[str, MosSummary]
    pairs: list[PairedTest] = field(default_factory=list)


@dataclass(frozen=True)
class Preference:
    """One A/B judgement: `rater` preferred system `preferred` (or `TIE`) on `item`."""

    rater: str
    item: str
    preferred: str


@dataclass(frozen=True)
class PreferenceSummary:
    """Wins of each system and ties, shares, and the binomial test of A's decisive wins."""

    a: str
    b: str
    n: int
    wins_a: int
    wins_b: int
    ties: int
    share_a: float
    share_b: float
    share_tie: float
    decisive_share_a: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_test(ratings: Sequence[Rating], a: str, b: str, confidence: float = 0.95) -> PairedTest:
    """The Wilcoxon signed-rank test of the per-clip mean scores of `a` minus `b` (module doc)."""
    means: dict[str, dict[str, list[int]]] = {a: defaultdict(list), b: defaultdict(list)}
    for rating in ratings:
        if rating.system in means:
            means[rating.system][rating.item].append(rating.score)
    items = sorted(set(means[a]) & set(means[b]))
    nan = float("nan")
    if not items:
        return PairedTest(a, b, 0, 0, nan, nan, nan, nan, nan)
    diffs = np.array([np.mean(means[a][i]) - np.mean(means[b][i]) for i in items])
    mean, low, high = mean_interval(diffs, confidence, (-4.0, 4.0))
    n_zero = int(np.sum(np.isclose(diffs, 0.0)))
    nonzero = diffs[~np.isclose(diffs, 0.0)]
    if len(nonzero) == 0:
        statistic, p_value = nan, 1.0  # every clip scored the same: no evidence of a difference
    else:
        result = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return PairedTest(a, b, len(items), n_zero, mean, low, high, statistic, p_value)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def summarize_systems(
    ratings: Sequence[Rating], systems: Sequence[str] | None = None
) -> SystemsSummary:
    """MOS per system and the paired test of every pair, in `systems`' order (default: sorted)."""
    names = list(systems) if systems is not None else sorted({r.system for r in ratings})
    per_system = {}
    for name in names:
        own = [r for r in ratings if r.system == name]
        if own:
            per_system[name] = summarize_ratings(own)
    tests = [paired_test(ratings, a, b) for a, b in itertools.combinations(per_system, 2)]
    adjusted = holm([t.p_value for t in tests])
    pairs = [
        PairedTest(**{**t.__dict__, "p_holm": p}) for t, p in zip(tests, adjusted, strict=True)
    ]
    return SystemsSummary(per_system, pairs)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion (NaN for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize_preferences(
    preferences: Sequence[Preference], a: str, b: str, confidence: float = 0.95
) -> PreferenceSummary:
    """Shares of A, B and ties; Wilson interval and exact two-sided binomial test of A's share
    of the decisive judgements (ties left out). Raises ValueError for a judgement naming
    neither system nor a tie."""
    counts = {a: 0, b: 0, TIE: 0}
    for preference in preferences:
        if preference.preferred not in counts:
            raise ValueError(
                f"judgement of {preference.rater!r} on {preference.item!r} prefers "
                f"{preference.preferred!r}, neither {a!r}, {b!r} nor {TIE!r}"
            )
        counts[preference.preferred] += 1
    n = len(preferences)
    decisive = counts[a] + counts[b]
    nan = float("nan")
    low, high = wilson_interval(counts[a], decisive, confidence)
    p_value = (
        float(stats.binomtest(counts[a], decisive, 0.5, alternative="two-sided").pvalue)
        if decisive
        else nan
    )
    return PreferenceSummary(
        a=a,
        b=b,
        n=n,
        wins_a=counts[a],
        wins_b=counts[b],
        ties=counts[TIE],
        share_a=counts[a] / n if n else nan,
        share_b=counts[b] / n if n else nan,
        share_tie=counts[TIE] / n if n else nan,
        decisive_share_a=counts[a] / decisive if decisive else nan,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
    )
