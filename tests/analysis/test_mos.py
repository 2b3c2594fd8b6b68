"""MOS, its confidence interval and Krippendorff's alpha against published and hand-made values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from multi2cap.analysis.mos import Rating, krippendorff_alpha, read_ratings, summarize_ratings

# Krippendorff (2011), "Computing Krippendorff's alpha reliability", section C: 4 observers,
# 12 units, missing values; the paper gives alpha 0.743 (nominal), 0.815 (ordinal),
# 0.849 (interval).
_RELIABILITY_DATA = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
UNITS = [[v for v in column if v is not None] for column in zip(*_RELIABILITY_DATA, strict=True)]


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_krippendorff_alpha_matches_published_example(level: str, published: float) -> None:
    assert krippendorff_alpha(UNITS, level) == pytest.approx(published, abs=5e-4)


def test_krippendorff_alpha_perfect_and_undefined() -> None:
    assert krippendorff_alpha([[1, 1], [3, 3, 3], [5, 5]]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([[4, 4], [4, 4]]))  # one value: no expected disagreement
    assert math.isnan(krippendorff_alpha([[4], [2]]))  # no unit has two ratings
    with pytest.raises(ValueError, match="unknown level"):
        krippendorff_alpha(UNITS, "ratio")  # type: ignore[arg-type]


def test_krippendorff_ordinal_two_raters_by_hand() -> None:
    # Units (1,2) and (2,1): coincidences o12 = o21 = 2; n1 = n2 = 2, n = 4.
    # Ordinal delta(1,2) = (n1 + n2 - (n1 + n2)/2)^2 = (4 - 2)^2 = 4.
    # alpha = 1 - (n - 1) * sum o*delta / sum n_c n_k delta = 1 - 3 * (2*2*4) / (2*(2*2*4))
    #       = 1 - 48/32 = -0.5
    assert krippendorff_alpha([[1, 2], [2, 1]], "ordinal") == pytest.approx(-0.5)


def test_summary_mos_ci_and_counts_by_hand() -> None:
    # Items a: 4, 5 -> 4.5; b: 3, 3 -> 3; c: 5, 4 -> 4.5. MOS = 4.0.
    # sd of (4.5, 3, 4.5) = sqrt(((0.5)^2 + 1 + 0.25)/2) = sqrt(0.75); sem = sqrt(0.75)/sqrt(3)
    # = 0.5; t(0.975, 2) = 4.302653 -> half width 2.1513
    ratings = [
        Rating("r1", "a", 4),
        Rating("r2", "a", 5),
        Rating("r1", "b", 3),
        Rating("r2", "b", 3),
        Rating("r1", "c", 5),
        Rating("r2", "c", 4),
    ]
    summary = summarize_ratings(ratings)
    assert summary.mos == pytest.approx(4.0)
    # The t interval 4.0 +- 2.1513 reaches 6.15: cut to the scale, [1.85, 5.0].
    assert summary.ci_low == pytest.approx(4.0 - 4.302653 * 0.5, rel=1e-6)
    assert summary.ci_high == 5.0 and summary.ci_cut
    assert summary.headline() == "MOS 4.00 (95 % CI [1.85, 5.00], cut to the 1-5 scale)"
    assert summary.score_counts == {1: 0, 2: 0, 3: 2, 4: 2, 5: 2}
    assert (summary.n_items, summary.n_raters, summary.n_ratings) == (3, 2, 6)
    assert summary.rater_means == {"r1": 4.0, "r2": 4.0}


def test_single_item_has_no_interval() -> None:
    summary = summarize_ratings([Rating("r1", "a", 4), Rating("r2", "a", 2)])
    assert summary.mos == 3.0
    assert math.isnan(summary.ci_low) and math.isnan(summary.ci_high)


def test_read_ratings_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "ratings.csv"
    good.write_text("item,rater,score,comment\nx,alice,5,ok\nx,bob,4.0,\n", encoding="utf-8")
    assert read_ratings(good) == [Rating("alice", "x", 5), Rating("bob", "x", 4)]

    cases = {
        "rater,item\nalice,x\n": "lacks column",
        "rater,item,score\nalice,x,6\n": r"ratings\.csv:2: score '6' is not an integer in 1-5",
        "rater,item,score\nalice,x,good\n": "is not a number",
        "rater,item,score\nalice,x,4\nalice,x,3\n": ":3: rater 'alice' rated item 'x' twice",
        "rater,item,score\n": "no ratings",
    }
    for text, message in cases.items():
        good.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            read_ratings(good)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        read_ratings(tmp_path / "missing.csv")


def test_the_interval_never_leaves_the_1_to_5_scale() -> None:
    """Near an end, or past both ends (a MOS of 3 over 2 items: 3 +- 25.4), the t interval is cut
    at the scale and said to be cut; inside it, it is printed as "± h"."""
    near_top = summarize_ratings(
        [Rating(r, f"i{i}", 5 if i else 4) for i in range(4) for r in ("r1", "r2")]
    )
    assert 1.0 <= near_top.ci_low <= near_top.ci_high == 5.0 and near_top.ci_cut
    wide = summarize_ratings([Rating("r", "a", 1), Rating("r", "b", 5)])
    assert (wide.ci_low, wide.ci_high, wide.ci_cut) == (1.0, 5.0, True)
    assert wide.headline() == "MOS 3.00 (95 % CI [1.00, 5.00], cut to the 1-5 scale)"
    inside = summarize_ratings([Rating("r", f"i{i}", 3 + i % 2) for i in range(40)])
    assert not inside.ci_cut and "±" in inside.headline()
