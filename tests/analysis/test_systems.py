"""Comparing systems by human judgement: the paired Wilcoxon test over clips, Holm's adjustment,
the A/B shares with Wilson's interval and the exact binomial test, each checked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from multi2cap.analysis.mos import Rating, read_ratings, summarize_ratings
from multi2cap.analysis.systems import (
    TIE,
    Preference,
    holm,
    paired_test,
    summarize_preferences,
    summarize_systems,
    wilson_interval,
)


def _ratings(system: str, scores: dict[str, tuple[int, ...]]) -> list[Rating]:
    return [
        Rating(f"r{k}", item, score, system)
        for item, row in scores.items()
        for k, score in enumerate(row)
    ]


def test_paired_wilcoxon_over_clip_means_by_hand() -> None:
    # Clip means: a = 5, 4.5, 4, 3.5, 5, 3; b = 3, 3, 3, 3, 3, 3 -> differences 2, 1.5, 1, 0.5,
    # 2, 0 (one zero, dropped). The five non-zero differences are all positive: W = 0, and with
    # ties among them (2, 2) scipy uses the normal approximation; without ties the exact
    # two-sided p of 5 positive signs is 2 / 2^5.
    a = _ratings("a", {"c1": (5, 5), "c2": (4, 5), "c3": (4, 4), "c4": (3, 4), "c5": (5, 5),
                       "c6": (3, 3)})  # fmt: skip
    b = _ratings("b", {c: (3, 3) for c in ("c1", "c2", "c3", "c4", "c5", "c6")})
    test = paired_test(a + b, "a", "b")
    assert (test.n_items, test.n_zero) == (6, 1)
    assert test.mean_difference == pytest.approx(7 / 6)
    assert test.wilcoxon_statistic == 0.0
    assert test.p_value < 0.1
    # Clip means a = 3.5, 4, 4.5, 5, 5 against b = 3, 3, 3, 3, 2: distinct positive differences
    # 0.5, 1, 1.5, 2, 3, so the exact two-sided p of five positive signs: 2 / 2^5.
    a = _ratings("a", {"c1": (4, 3), "c2": (4, 4), "c3": (5, 4), "c4": (5, 5), "c5": (5, 5)})
    b = _ratings("b", {"c1": (3, 3), "c2": (3, 3), "c3": (3, 3), "c4": (3, 3), "c5": (2, 2)})
    exact = paired_test(a + b, "a", "b")
    assert exact.p_value == pytest.approx(2 / 32)
    assert paired_test(a + b, "b", "a").mean_difference == pytest.approx(-1.6)


def test_paired_test_with_no_difference_and_no_common_clip() -> None:
    same = _ratings("a", {"c1": (4, 4), "c2": (2, 3)}) + _ratings("b", {"c1": (4, 4),
                                                                       "c2": (3, 2)})  # fmt: skip
    test = paired_test(same, "a", "b")
    assert test.n_zero == 2 and test.p_value == 1.0 and test.mean_difference == 0.0
    apart = _ratings("a", {"c1": (4,)}) + _ratings("b", {"c2": (4,)})
    assert paired_test(apart, "a", "b").n_items == 0


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.03, 0.04: x3 = 0.03, x2 = 0.06, x1 = 0.04 -> kept monotone 0.06.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_summarize_systems_mos_in_scale_and_every_pair() -> None:
    ratings = (
        _ratings("x", {"c1": (5, 5), "c2": (5, 4), "c3": (5, 5)})
        + _ratings("y", {"c1": (1, 2), "c2": (1, 1), "c3": (3, 1)})
        + _ratings("z", {"c1": (3, 3), "c2": (3, 4), "c3": (2, 3)})
    )
    summary = summarize_systems(ratings, ["x", "y", "z"])
    assert list(summary.systems) == ["x", "y", "z"]
    for mos in summary.systems.values():
        assert 1 <= mos.ci_low <= mos.mos <= mos.ci_high <= 5  # never outside the scale
    assert summary.systems["x"].ci_high == 5.0  # the t interval reached past 5
    assert [(t.a, t.b) for t in summary.pairs] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert all(t.p_holm >= t.p_value for t in summary.pairs)
    with pytest.raises(ValueError, match="ratings of 3 systems"):
        summarize_ratings(ratings)


def test_wilson_and_binomial_by_hand() -> None:
    prefs = (
        [Preference(f"r{i}", f"c{i}", "a") for i in range(30)]
        + [Preference(f"r{i}", f"d{i}", "b") for i in range(10)]
        + [Preference(f"r{i}", f"e{i}", TIE) for i in range(10)]
    )
    s = summarize_preferences(prefs, "a", "b")
    assert (s.n, s.wins_a, s.wins_b, s.ties) == (50, 30, 10, 10)
    assert (s.share_a, s.share_b, s.share_tie) == (0.6, 0.2, 0.2)
    assert s.decisive_share_a == 0.75  # ties left out
    # Exact two-sided binomial p of 30 of 40 at 1/2: 2 * P(X >= 30).
    tail = sum(math.comb(40, k) for k in range(30, 41)) / 2**40
    assert s.p_value == pytest.approx(2 * tail, rel=1e-9)
    # Wilson: centre (p + z^2/2n) / (1 + z^2/n), half z/(1 + z^2/n) sqrt(p(1-p)/n + z^2/4n^2).
    z, n, p = 1.959963984540054, 40, 0.75
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (s.ci_low, s.ci_high) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    only_ties = summarize_preferences([Preference("r", "c", TIE)], "a", "b")
    assert math.isnan(only_ties.p_value) and only_ties.share_tie == 1.0
    with pytest.raises(ValueError, match="prefers 'c', neither 'a', 'b' nor 'tie'"):
        summarize_preferences([Preference("r", "x", "c")], "a", "b")


def test_read_ratings_jsonl_and_system_column(tmp_path: Path) -> None:
    jsonl = tmp_path / "ratings.jsonl"
    jsonl.write_text(
        '{"rater": "r1", "item": "-x", "system": "s1", "score": 4, "gold": 0}\n'
        '{"rater": "r1", "item": "-x", "system": "s2", "score": 2, "gold": 0}\n'
        '{"rater": "r1", "item": "gold-01", "system": "", "score": 5, "gold": 1}\n',
        encoding="utf-8",
    )
    assert read_ratings(jsonl) == [Rating("r1", "-x", 4, "s1"), Rating("r1", "-x", 2, "s2")]
    jsonl.write_text('{"rater": "r1", "item": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"ratings\.jsonl:1: lacks key\(s\) \['score'\]"):
        read_ratings(jsonl)
    csv_file = tmp_path / "ratings.csv"
    csv_file.write_text("rater,item,system,score\nr1,x,s1,3\nr1,x,s1,4\n", encoding="utf-8")
    with pytest.raises(ValueError, match="rated item 'x' of system 's1' twice"):
        read_ratings(csv_file)
