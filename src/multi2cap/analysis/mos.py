"""Human ratings of captions (paper Figure 4): MOS with its 95 % CI and inter-rater agreement.

Ratings come as a CSV with the columns `rater,item,score` (extra columns are ignored), one row per
judgement, scores integers 1-5, or as JSON lines with those keys (`human export` writes both:
`ratings.jsonl` holds the exact values, `ratings.csv` is for spreadsheets, see docs/human.md).
Rows whose optional `gold` column is 1 are attention checks (the `human export` of a study with
gold items) and are left out. An optional `system` column names the system whose caption was
rated (a system-MOS study): one MOS is the MOS of one system, `analysis.systems` compares them.

- **MOS** is the mean of the per-item mean scores (equal to the mean of all ratings when every
  rater scored every item, the paper's design). Items are the sampled units, so the 95 %
  confidence interval is Student's t over the item means: MOS +- t(0.975, I-1) sd / sqrt(I),
  cut to the scale [1, 5] (the MOS cannot lie outside it, so the cut interval covers it at least
  as often; the figure and report then show the interval, not a +-).
- **Agreement** is Krippendorff's alpha (Krippendorff 2004, *Content Analysis*, ch. 11; the
  coincidence-matrix computation of Krippendorff 2011, "Computing Krippendorff's alpha
  reliability") with the ordinal difference function, the right one for a 1-5 opinion scale; it
  accepts missing ratings. The interval alpha is reported beside it.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import stats

SCORE_RANGE = (1, 5)
REQUIRED_COLUMNS = ("rater", "item", "score")


@dataclass(frozen=True)
class Rating:
    """One judgement: `rater` gave `item` the integer `score` (1-5)."""

    rater: str
    item: str
    score: int
    system: str = ""


@dataclass(frozen=True)
class MosSummary:
    """Everything Figure 4 and the report state about a set of ratings."""

    n_ratings: int
    n_items: int
    n_raters: int
    mos: float
    ci_low: float
    ci_high: float
    item_means: list[float]
    score_counts: dict[int, int]
    alpha_ordinal: float
    alpha_interval: float
    rater_means: dict[str, float] = field(default_factory=dict)

    @property
    def ci_half_width(self) -> float:
        """Half the interval's width (of the interval as cut to the scale)."""
        return (self.ci_high - self.ci_low) / 2

    @property
    def ci_cut(self) -> bool:
        """Whether the t interval reached past 1 or 5 and was cut there: then it is not
        symmetric, or (a MOS of 3 whose interval reached past both ends) it is the whole scale."""
        if math.isnan(self.ci_low):
            return False
        whole_scale = (self.ci_low, self.ci_high) == SCORE_RANGE
        return whole_scale or not math.isclose(
            self.mos - self.ci_low, self.ci_high - self.mos, abs_tol=1e-9
        )

    def headline(self) -> str:
        """`MOS 4.10 ± 0.09 (95 % CI)`, or the interval itself when it was cut to the scale."""
        if self.ci_cut:
            return (
                f"MOS {self.mos:.2f} (95 % CI [{self.ci_low:.2f}, {self.ci_high:.2f}], cut to "
                "the 1-5 scale)"
            )
        return f"MOS {self.mos:.2f} ± {self.ci_half_width:.2f} (95 % CI)"


def read_ratings(path: str | os.PathLike[str]) -> list[Rating]:
    """Read a ratings CSV or JSONL file (`.jsonl`); a bad header, score or duplicate raises
    ValueError naming the file and line."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"ratings file not found: {source}")
    ratings: list[Rating] = []
    seen: set[tuple[str, str, str]] = set()
    for line, row in _rating_rows(source):
        if str(row.get("gold") or "").strip() in ("1", "true", "True"):
            continue
        rater, item, raw = (str(row.get(c) or "").strip() for c in REQUIRED_COLUMNS)
        system = str(row.get("system") or "").strip()
        if not rater or not item:
            raise ValueError(f"{source}:{line}: empty rater or item")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{source}:{line}: score {raw!r} is not a number") from None
        if not value.is_integer() or not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
            raise ValueError(f"{source}:{line}: score {raw!r} is not an integer in 1-5")
        if (rater, item, system) in seen:
            of = f" of system {system!r}" if system else ""
            raise ValueError(f"{source}:{line}: rater {rater!r} rated item {item!r}{of} twice")
        seen.add((rater, item, system))
        ratings.append(Rating(rater, item, int(value), system))
    if not ratings:
        raise ValueError(f"{source}: no ratings")
    return ratings


def _rating_rows(source: Path) -> list[tuple[int, dict[str, object]]]:
    """(line, row) of a ratings file: JSON lines for `.jsonl`, else CSV with a header."""
    if source.suffix.lower() == ".jsonl":
        rows = []
        with open(source, encoding="utf-8-sig") as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{source}:{line}: invalid JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{source}:{line}: expected a JSON object per line")
                missing = [c for c in REQUIRED_COLUMNS if c not in row]
                if missing:
                    raise ValueError(f"{source}:{line}: lacks key(s) {missing}")
                rows.append((line, row))
        return rows
    with open(source, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{source}: header lacks column(s) {missing}; need {REQUIRED_COLUMNS}")
        reader.fieldnames = header
        return [(line, dict(row)) for line, row in enumerate(reader, start=2)]


def krippendorff_alpha(
    units: Sequence[Sequence[float]],
    level: Literal["nominal", "ordinal", "interval"] = "ordinal",
) -> float:
    """Krippendorff's alpha over `units`, each the list of values it received (missing omitted).

    Units with fewer than two values are not pairable and are ignored. Returns NaN when no unit is
    pairable or when every value is the same (no expected disagreement).
    """
    pairable = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u})
    if not pairable or len(values) < 2:
        return float("nan")
    index = {v: i for i, v in enumerate(values)}
    k = len(values)
    coincidence = np.zeros((k, k))
    for unit in pairable:
        counts = np.bincount([index[v] for v in unit], minlength=k).astype(np.float64)
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    marginals = coincidence.sum(axis=1)
    n = marginals.sum()
    grid_c, grid_k = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    if level == "nominal":
        delta = (grid_c != grid_k).astype(np.float64)
    elif level == "interval":
        v = np.asarray(values, dtype=np.float64)
        delta = (v[grid_c] - v[grid_k]) ** 2
    elif level == "ordinal":
        cumulative = np.concatenate([[0.0], np.cumsum(marginals)])
        low, high = np.minimum(grid_c, grid_k), np.maximum(grid_c, grid_k)
        between = cumulative[high + 1] - cumulative[low]
        delta = (between - (marginals[grid_c] + marginals[grid_k]) / 2) ** 2
    else:
        raise ValueError(f"unknown level {level!r}; use nominal, ordinal or interval")
    observed = float(np.sum(coincidence * delta))
    expected = float(np.sum(np.outer(marginals, marginals) * delta)) / (n - 1)
    if expected == 0:
        return float("nan")
    return 1.0 - observed / expected


def mean_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of `values`, cut to `bounds` when
    given (a mean of values inside the bounds lies inside them). NaN bounds for one value."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, float("nan"), float("nan")
    sem = float(array.std(ddof=1)) / math.sqrt(len(array))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(array) - 1)) * sem
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high


def summarize_ratings(ratings: Sequence[Rating], confidence: float = 0.95) -> MosSummary:
    """MOS, its confidence interval over items, score counts and Krippendorff's alpha."""
    if not ratings:
        raise ValueError("no ratings to summarise")
    systems = sorted({r.system for r in ratings})
    if len(systems) > 1:
        raise ValueError(
            f"ratings of {len(systems)} systems ({', '.join(systems)}): one MOS per system "
            "(`multi2cap human summary`, `multi2cap.analysis.systems`)"
        )
    by_item: dict[str, list[int]] = defaultdict(list)
    by_rater: dict[str, list[int]] = defaultdict(list)
    for rating in ratings:
        by_item[rating.item].append(rating.score)
        by_rater[rating.rater].append(rating.score)
    item_means = np.array([np.mean(scores) for scores in by_item.values()])
    mos, ci_low, ci_high = mean_interval(item_means, confidence, SCORE_RANGE)
    counts = Counter(r.score for r in ratings)
    units = list(by_item.values())
    return MosSummary(
        n_ratings=len(ratings),
        n_items=len(by_item),
        n_raters=len(by_rater),
        mos=mos,
        ci_low=ci_low,
        ci_high=ci_high,
        item_means=[float(m) for m in item_means],
        score_counts={s: counts.get(s, 0) for s in range(SCORE_RANGE[0], SCORE_RANGE[1] + 1)},
        alpha_ordinal=krippendorff_alpha(units, "ordinal"),
        alpha_interval=krippendorff_alpha(units, "interval"),
        rater_means={r: float(np.mean(s)) for r, s in sorted(by_rater.items())},
    )


def mos_markdown(summary: MosSummary, figure: Mapping[str, str] | None = None) -> str:
    """The report's Figure 4 section."""
    lines = [
        "## Figure 4: human ratings (MOS)",
        "",
        f"- Ratings: {summary.n_ratings} from {summary.n_raters} raters on {summary.n_items} items.",
        f"- **{summary.headline()}**: 95 % CI [{summary.ci_low:.2f}, {summary.ci_high:.2f}], "
        "Student's t over the per-item means, cut to the 1-5 scale.",
        f"- Inter-rater agreement: Krippendorff's alpha (ordinal) = {summary.alpha_ordinal:.3f}; "
        f"(interval) = {summary.alpha_interval:.3f}. 1 = perfect agreement, 0 = chance.",
        "",
        "| score | " + " | ".join(str(s) for s in summary.score_counts) + " |",
        "|---|" + "---|" * len(summary.score_counts),
        "| ratings | " + " | ".join(str(c) for c in summary.score_counts.values()) + " |",
        "",
    ]
    if figure:
        lines += [f"![Figure 4: MOS]({figure['png']})", ""]
    return "\n".join(lines)
