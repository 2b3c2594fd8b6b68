"""What a rating study found so far, as JSON: the admin page, `human export`'s `summary.json` and
`human summary` all show this one summary (statistics in `multi2cap.analysis.mos` and
`multi2cap.analysis.systems`; gold items are left out of every figure).

- `mos`: the MOS of the dataset's captions, its 95 % CI and Krippendorff's alpha.
- `system-mos`: the same per system, and every pair of systems' paired test.
- `ab`: the shares of A, B and ties, and the binomial test of A's decisive share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from multi2cap.analysis.mos import MosSummary, Rating, summarize_ratings
from multi2cap.analysis.systems import (
    TIE,
    Preference,
    summarize_preferences,
    summarize_systems,
)
from multi2cap.human.store import preferred_side

#: The labels of an A/B gold item's two captions: the clip's own, another clip's (`caption_b`).
GOLD_SIDES = ("own-clip", "other-clip")


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def ab_sides(row: Mapping[str, Any], systems: Sequence[str]) -> tuple[str, str]:
    """The labels of the captions an A/B answer's rater saw first ("A") and second ("B")."""
    labels = GOLD_SIDES if row["gold"] else (systems[0], systems[1])
    return (labels[1], labels[0]) if row["swapped"] else (labels[0], labels[1])


def preferred_label(row: Mapping[str, Any], systems: Sequence[str]) -> str:
    """An A/B answer un-randomised: the label of the caption preferred, or `TIE`."""
    side = preferred_side(row["choice"], row["swapped"])
    labels = GOLD_SIDES if row["gold"] else (systems[0], systems[1])
    return TIE if side == "tie" else labels[0 if side == "a" else 1]


def mos_json(summary: MosSummary) -> dict[str, Any]:
    return {
        "mos": _finite(summary.mos),
        "ci_low": _finite(summary.ci_low),
        "ci_high": _finite(summary.ci_high),
        "n_ratings": summary.n_ratings,
        "n_items": summary.n_items,
        "n_raters": summary.n_raters,
        "alpha_ordinal": _finite(summary.alpha_ordinal),
        "score_counts": summary.score_counts,
    }


def study_summary(
    kind: str, settings: Mapping[str, Any], answers: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The summary of `answers` (the store's `answer_rows`) for a study of `kind`."""
    real = [a for a in answers if not a["gold"]]
    out: dict[str, Any] = {"kind": kind, "n_answers": len(real), "gold_left_out": True}
    if kind == "mos" and real:
        out["mos"] = mos_json(
            summarize_ratings([Rating(a["rater"], a["item"], a["score"]) for a in real])
        )
    elif kind == "system-mos" and real:
        ratings = [Rating(a["rater"], a["item"], a["score"], a["system"]) for a in real]
        compared = summarize_systems(ratings, settings["systems"])
        out["systems"] = {name: mos_json(s) for name, s in compared.systems.items()}
        out["pairs"] = [
            {
                "a": t.a,
                "b": t.b,
                "test": "Wilcoxon signed-rank, two-sided, per-clip mean scores, zeros dropped",
                "n_items": t.n_items,
                "n_zero_differences": t.n_zero,
                "mean_difference": _finite(t.mean_difference),
                "ci_low": _finite(t.ci_low),
                "ci_high": _finite(t.ci_high),
                "statistic": _finite(t.wilcoxon_statistic),
                "p_value": _finite(t.p_value),
                "p_holm": _finite(t.p_holm),
            }
            for t in compared.pairs
        ]
    elif kind == "ab" and real:
        a, b = settings["systems"]
        prefs = [Preference(r["rater"], r["item"], preferred_label(r, (a, b))) for r in real]
        p = summarize_preferences(prefs, a, b)
        out["preference"] = {
            "a": a,
            "b": b,
            "n": p.n,
            "wins": {a: p.wins_a, b: p.wins_b, TIE: p.ties},
            "shares": {a: _finite(p.share_a), b: _finite(p.share_b), TIE: _finite(p.share_tie)},
            "decisive_share_a": _finite(p.decisive_share_a),
            "ci_low": _finite(p.ci_low),
            "ci_high": _finite(p.ci_high),
            "ci": "Wilson 95 %, of A's share of the decisive judgements (ties left out)",
            "p_value": _finite(p.p_value),
            "test": "exact binomial, two-sided, A's wins among decisive judgements vs 1/2",
        }
    return out
