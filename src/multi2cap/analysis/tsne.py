"""t-SNE of the grounding probe embeddings (paper Figure 6): V_cls, g, g_hat, a_mean and random
vectors of a `ProbeSet` (`multi2cap.analysis.probes.collect_probe_set`) in the L_align space."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multi2cap.analysis.probe_tables import markdown_table, write_table
from multi2cap.analysis.probes import KIND_LABELS, KINDS, ProbeSet, pooled


def tsne_coordinates(
    probe: ProbeSet, *, seed: int = 0, perplexity: float | None = None
) -> tuple[np.ndarray, list[str], list[int]]:
    """2-D t-SNE of the five kinds in the L_align shared space.

    Each clip contributes one point per kind (K tokens averaged, then L2-normalised), so the
    distances are cosine-like. Returns `(coords (5N, 2), kinds, clip row index)`; perplexity
    defaults to min(30, (5N - 1) / 3)."""
    from sklearn.manifold import TSNE

    points = np.concatenate([pooled(probe.shared[k]) for k in KINDS])
    kinds = [k for k in KINDS for _ in range(len(probe))]
    rows = [i for _ in KINDS for i in range(len(probe))]
    if perplexity is None:
        perplexity = min(30.0, max(1.0, (len(points) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(points.astype(np.float64)), kinds, rows


def write_tsne(
    probe: ProbeSet,
    out_dir: Path,
    *,
    by_category: bool = False,
    seed: int = 0,
    perplexity: float | None = None,
) -> list[Path]:
    """`tsne.csv` (id, kind, category, x, y) and `tsne.png`/`.svg`: points coloured by kind, and
    with `by_category` a second panel coloured by category (marker by kind)."""
    import matplotlib.pyplot as plt

    from multi2cap.analysis.figures import save_figure

    coords, kinds, rows = tsne_coordinates(probe, seed=seed, perplexity=perplexity)
    table = [
        {
            "id": probe.ids[i],
            "kind": kind,
            "category": probe.categories[i],
            "x": float(x),
            "y": float(y),
        }
        for (x, y), kind, i in zip(coords, kinds, rows, strict=True)
    ]
    columns = ["id", "kind", "category", "x", "y"]
    counts = markdown_table(["kind", "points"], [[KIND_LABELS[k], len(probe)] for k in KINDS])
    md = f"# t-SNE of the grounding tokens (Figure 6)\n\nSeed {seed}; see tsne.png.\n\n{counts}"
    files = write_table(out_dir, "tsne", columns, table, md)
    panels = 2 if by_category else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5), squeeze=False)
    markers = dict(zip(KINDS, "o^sxD", strict=True))
    kinds_arr = np.array(kinds)
    ax = axes[0][0]
    for kind in KINDS:
        sel = kinds_arr == kind
        ax.scatter(*coords[sel].T, s=14, marker=markers[kind], label=KIND_LABELS[kind])
    ax.set_title("t-SNE of V_cls and ground-token variants")
    ax.legend(fontsize=8)
    if by_category:
        ax = axes[0][1]
        cats = [str(probe.categories[i]) for i in rows]
        names = sorted(set(cats))
        cmap = plt.get_cmap("tab20", max(len(names), 1))
        colours = [cmap(names.index(c)) for c in cats]
        for kind in KINDS:
            sel = np.flatnonzero(kinds_arr == kind)
            ax.scatter(*coords[sel].T, s=14, marker=markers[kind], c=[colours[j] for j in sel])
        ax.set_title("coloured by category (marker = kind)")
    files += save_figure(fig, out_dir / "tsne")
    return files
