"""Figure 2's 0-10 scaling and the raw values printed on its bars."""

from __future__ import annotations

import math
from pathlib import Path

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
