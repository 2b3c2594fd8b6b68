"""Figure 2's 0-10 scaling and the raw values printed on its bars."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from multi2cap.analysis.figures import normalise_0_10, plot_readability_diversity
from multi2cap.analysis.text_stats import DIVERSITY_METRICS, READABILITY_METRICS


def test_normalise_divides_by_the_largest_magnitude() -> None:
    assert normalise_0_10([2.0, 4.0]) == [5.0, 10.0]
    assert normalise_0_10([-1.0, 2.0]) == [-5.0, 10.0]
    assert normalise_0_10([0.0, 0.0]) == [0.0, 0.0]
    assert normalise_0_10([3.0]) == [10.0]
    scaled = normalise_0_10([float("nan"), 8.0])
    assert math.isnan(scaled[0]) and scaled[1] == 10.0


def test_figure2_prints_raw_values_and_directions(tmp_path: Path) -> None:
    metrics = READABILITY_METRICS + DIVERSITY_METRICS
    values = {
        "short": dict(
            zip(metrics, [1.29, 2.996, 5.7115, 1.869, 0.9, 0.0943, 200.0, 0.0222], strict=True)
        ),
        "long": {m: float("nan") if m == "simpson_d" else 2.0 for m in metrics},
    }
    paths = plot_readability_diversity(
        ["short", "long"], values, READABILITY_METRICS, DIVERSITY_METRICS, tmp_path / "figure2"
    )
    assert [p.suffix for p in paths] == [".png", ".svg"]
    svg = paths[1].read_text(encoding="utf-8")
    for raw in ("1.29", "3", "5.71", "1.87", "0.9", "0.0943", "200", "0.0222", "n/a"):
        assert f">{raw}<" in svg
    assert "more diverse" in svg and "harder" in svg
    assert paths[0].stat().st_size > 20_000


def _bar_heights(fig: Figure) -> list[float]:
    return [patch.get_height() for ax in fig.axes for patch in ax.patches]


def test_one_dataset_shows_raw_values_not_bars_all_at_10(tmp_path: Path) -> None:
    """Scaled across one dataset every metric was 10: the figure said nothing. One dataset now
    gets its raw values (readability on a linear axis, diversity on a log one); two keep the
    0-10 scaling."""
    from multi2cap.analysis.figures import readability_diversity_figure

    metrics = READABILITY_METRICS + DIVERSITY_METRICS
    raw = dict(zip(metrics, [1.29, 2.996, 5.7115, 1.869, 0.9, 0.0943, 200.0, 0.0222], strict=True))
    one = readability_diversity_figure(
        ["clotho"], {"clotho": raw}, READABILITY_METRICS, DIVERSITY_METRICS
    )
    assert _bar_heights(one) == [raw[m] for m in metrics]
    assert [ax.get_ylabel() for ax in one.axes] == ["raw value", "raw value (log scale)"]
    assert [ax.get_yscale() for ax in one.axes] == ["linear", "log"]
    two = readability_diversity_figure(
        ["clotho", "other"], {"clotho": raw, "other": {m: v / 2 for m, v in raw.items()}},
        READABILITY_METRICS, DIVERSITY_METRICS,
    )  # fmt: skip
    assert sorted(set(_bar_heights(two))) == [5.0, 10.0]
    paths = plot_readability_diversity(
        ["clotho"], {"clotho": raw}, READABILITY_METRICS, DIVERSITY_METRICS, tmp_path / "figure2"
    )
    svg = paths[1].read_text(encoding="utf-8")
    assert ">200<" in svg and ">0.0943<" in svg and "normalised" not in svg
