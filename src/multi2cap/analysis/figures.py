"""Figures of the dataset report (paper Figures 2-4), drawn with matplotlib's Agg backend.

Every figure is written twice, as PNG (150 dpi) and SVG, through `multi2cap.io` so an interrupted
run never leaves a torn file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from multi2cap.analysis.text_stats import HIGHER_MEANS_MORE
from multi2cap.io import atomic_write_bytes

FIGURE_FORMATS = ("png", "svg")

METRIC_LABELS = {
    "flesch_kincaid": "Flesch-Kincaid",
    "coleman_liau": "Coleman-Liau",
    "dale_chall": "Dale-Chall",
    "spache": "Spache",
    "ttr": "TTR",
    "herdan_vm": "Herdan's Vm",
    "yule_k": "Yule's K",
    "simpson_d": "Simpson's D",
}


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write `fig` as `stem.png` and `stem.svg`; return the paths written."""
    written = []
    for fmt in FIGURE_FORMATS:
        buffer = io.BytesIO()
        # SVG text stays text (editable in a paper's figure, searchable), not glyph outlines.
        with plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight")
        path = stem.with_suffix(f".{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    plt.close(fig)
    return written


def normalise_0_10(values: Sequence[float]) -> list[float]:
    """Scale one metric's values across datasets to 0-10 by dividing by the largest magnitude.

    Bar heights stay proportional to the raw values (no min-max stretching, which would turn a
    1 % difference into a full-height bar), and the largest |value| becomes 10. NaN stays NaN.
    """
    finite = [abs(v) for v in values if not math.isnan(v)]
    top = max(finite, default=0.0)
    return [float("nan") if math.isnan(v) else (10.0 * v / top if top > 0 else 0.0) for v in values]


def _format_raw(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _metric_panel(
    ax: plt.Axes,
    datasets: Sequence[str],
    metrics: Sequence[str],
    values: Mapping[str, Mapping[str, float]],
    title: str,
    better: str,
    raw_scale: str | None = None,
) -> None:
    """Grouped bars, one group per metric, raw values printed on the bars. Heights: each
    metric scaled across the datasets (`normalise_0_10`), or with `raw_scale` ("linear", "log")
    the raw values on one axis of that scale."""
    n = len(datasets)
    width = 0.8 / max(n, 1)
    x = np.arange(len(metrics))
    colors = plt.get_cmap("tab10")
    for j, name in enumerate(datasets):
        raw = [values[name][m] for m in metrics]
        offsets = x - 0.4 + width * (j + 0.5)
        for metric_index, metric in enumerate(metrics):
            if raw_scale is None:
                height = normalise_0_10([values[d][metric] for d in datasets])[j]
            else:
                height = raw[metric_index]
            bar_height = 0.0 if math.isnan(height) else height
            ax.bar(
                offsets[metric_index],
                bar_height,
                width,
                color=colors(j % 10),
                label=name if metric_index == 0 else None,
            )
            ax.annotate(
                _format_raw(raw[metric_index]),
                (offsets[metric_index], max(bar_height, 0.0)),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                rotation=90 if n > 2 else 0,
                fontsize=7,
            )
    labels = [
        f"{METRIC_LABELS[m]}\n({'↑' if HIGHER_MEANS_MORE[m] else '↓'} {better})" for m in metrics
    ]
    ax.set_xticks(x, labels, fontsize=8)
    if raw_scale is None:
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 12.5)
        ax.set_ylabel("normalised score (0-10)")
    else:
        ax.set_yscale(raw_scale)
        ax.margins(y=0.15)
        ax.set_ylabel(f"raw value{' (log scale)' if raw_scale == 'log' else ''}")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right", ncols=min(n, 4))


def readability_diversity_figure(
    datasets: Sequence[str],
    values: Mapping[str, Mapping[str, float]],
    readability: Sequence[str],
    diversity: Sequence[str],
) -> Figure:
    """Figure 2: (a) readability, (b) lexical diversity, raw values printed on the bars.

    `values[dataset][metric]` holds the raw values. With several datasets each metric is scaled
    across them with `normalise_0_10`. With one, that scaling would set every bar to 10, so the
    bars show the raw values: readability on a linear axis (grade-level scores, which can be
    negative), diversity on a log axis (TTR, Vm and D lie in 0-1, Yule's K in the hundreds).
    """
    one = len(datasets) == 1
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    _metric_panel(
        axes[0], datasets, readability, values, "(a) Readability level", "harder",
        raw_scale="linear" if one else None,
    )  # fmt: skip
    _metric_panel(
        axes[1], datasets, diversity, values, "(b) Lexical diversity", "more diverse",
        raw_scale=_positive_scale(values[datasets[0]], diversity) if one else None,
    )  # fmt: skip
    fig.tight_layout()
    return fig


def _positive_scale(values: Mapping[str, float], metrics: Sequence[str]) -> str:
    """ "log" when every finite value is positive, else "symlog" (log around 0)."""
    finite = [values[m] for m in metrics if not math.isnan(values[m])]
    return "log" if finite and min(finite) > 0 else "symlog"


def plot_readability_diversity(
    datasets: Sequence[str],
    values: Mapping[str, Mapping[str, float]],
    readability: Sequence[str],
    diversity: Sequence[str],
    stem: Path,
) -> list[Path]:
    """Write Figure 2 (`readability_diversity_figure`) as `stem.png` and `stem.svg`."""
    return save_figure(readability_diversity_figure(datasets, values, readability, diversity), stem)


def plot_word_cloud(frequencies: Mapping[str, int], title: str, stem: Path) -> list[Path]:
    """Figure 3 for one dataset: a word cloud of content-word frequencies (seeded layout)."""
    from wordcloud import WordCloud

    fig, ax = plt.subplots(figsize=(8, 4.2))
    if frequencies:
        cloud = WordCloud(
            width=1000, height=500, background_color="white", random_state=0, max_words=200
        ).generate_from_frequencies(dict(frequencies))
        ax.imshow(cloud.to_array(), interpolation="bilinear")
    else:
        ax.text(0.5, 0.5, "no content words", ha="center", va="center")
    ax.set_axis_off()
    ax.set_title(title)
    return save_figure(fig, stem)


def plot_mos(
    score_counts: Mapping[int, int],
    item_means: Sequence[float],
    mos: float,
    ci: tuple[float, float],
    title: str,
    stem: Path,
) -> list[Path]:
    """Figure 4: distribution of the ratings (1-5) and of the per-item MOS, with the 95 % CI."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    scores = sorted(score_counts)
    counts = [score_counts[s] for s in scores]
    total = max(sum(counts), 1)
    bars = axes[0].bar(scores, counts, color="tab:blue")
    for bar, count in zip(bars, counts, strict=True):
        axes[0].text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            f"{count}\n({100 * count / total:.0f} %)",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes[0].set_xticks(scores)
    axes[0].set_xlabel("score")
    axes[0].set_ylabel("ratings")
    axes[0].set_ylim(0, max(counts, default=1) * 1.25)
    axes[0].set_title("Score distribution")

    axes[1].hist(item_means, bins=np.arange(1.0, 5.01, 0.25), color="tab:green", edgecolor="white")
    axes[1].axvspan(ci[0], ci[1], color="tab:red", alpha=0.2, label="95 % CI")
    axes[1].axvline(mos, color="tab:red", label=f"MOS {mos:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]")
    axes[1].set_xlim(1, 5)
    axes[1].set_xlabel("mean score per item")
    axes[1].set_ylabel("items")
    axes[1].set_title("Per-item MOS")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)
