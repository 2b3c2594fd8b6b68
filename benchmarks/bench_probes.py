"""Benchmark: cost of the grounding path at the paper's shapes, per K (the FLOPs column of
Table 5), and the speed of the Table 4 probe statistics at test-set size.

1. FLOPs (`multi2cap.analysis.k_sweep.flop_counter`: matrix products and attention, 2 per
   multiply-add, element-wise work not counted) of the AV-grounding (g), the VFR (g_hat) and
   the Ground Adapter for one 10-s clip at full-size shapes, under each `grounding.pool`:
   CED-base tokens (T' = 62, d_a = 768), CLIP ViT-L/14 patches (P = 256 on a 16 x 16 grid,
   d_v = 1024), d_g = 1024, 8 heads, VFR hidden 2048, LLM width 3072 (Llama-3.2-3B). Counted on
   meta tensors (shapes only: exact, instant, no memory). No LLM or encoder is run; see
   `k-sweep` for the whole-model prefill count on a real checkpoint. The slope per grounding
   token is printed beside the paper's (Table 5).
2. Time of the retrieval ranks + cross-fitted ridge + t-SNE for N clips of random embeddings at
   those widths (the probe statistics after the model has run).

    .venv/bin/python benchmarks/bench_probes.py [--ks 1 4 16 64 256] [--clips 2000] [--repeats 5]
        [--flops-only]

The development machine is 2 CPU cores shared with other jobs: quote medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from multi2cap.analysis.k_sweep import flops_slope, grounding_path_flops, paper_slope
from multi2cap.analysis.probes import cross_fitted_ridge, pooled, recall_at, retrieval_ranks
from multi2cap.model.adapter import GroundAdapter
from multi2cap.model.grounding import AVGrounding
from multi2cap.model.vfr import VisualFeatureReconstructor

T, D_A, P, D_V, D_G, HEADS, VFR_HIDDEN, D_LLM, ALIGN = 62, 768, 256, 1024, 1024, 8, 2048, 3072, 512
GRID = (16, 16)


def grounding_cost(ks: list[int], pool: str) -> None:
    with torch.device("meta"):
        adapter = GroundAdapter(D_A, D_LLM, D_G).eval()
        tokens = torch.randn(1, T, D_A)
        mask = torch.ones(1, T, dtype=torch.bool)
        patches = torch.randn(1, P, D_V)
    print(f"\ngrounding path GFLOPs, one 10-s clip (T'={T}, P={P}), full-size shapes, pool {pool}")
    print(f"{'K':>5} {'AV-grounding':>13} {'VFR':>8} {'adapter':>8} {'total':>8}")
    totals = []
    for k in ks:
        with torch.device("meta"):
            grounding = AVGrounding(D_A, D_V, D_G, HEADS, k, pool=pool).eval()
            vfr = VisualFeatureReconstructor(D_A, VFR_HIDDEN, D_G, k=k, pool=pool).eval()
        parts = grounding_path_flops(grounding, vfr, adapter, tokens, mask, patches, GRID)
        total = sum(parts.values()) / 1e9
        totals.append(total)
        cells = (parts[p] / 1e9 for p in ("av_grounding", "vfr", "adapter"))
        print(
            f"{k:>5} "
            + " ".join(f"{v:>{w}.3f}" for v, w in zip(cells, (13, 8, 8), strict=True))
            + f" {total:>8.3f}"
        )
    slope = flops_slope(ks, totals)
    paper, _ = paper_slope()
    print(f"slope: {slope:.4f} GFLOPs per grounding token (paper, Table 5: {paper:.4f})")


def probe_statistics(n: int, repeats: int) -> None:
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(0)
    queries = rng.normal(size=(n, 4, ALIGN)).astype(np.float32)
    gallery = rng.normal(size=(n, ALIGN)).astype(np.float32)
    native = rng.normal(size=(n, 4, D_G)).astype(np.float32)
    images = rng.normal(size=(n, 768)).astype(np.float32)
    timings: dict[str, list[float]] = {"ranks": [], "ridge": []}
    for _ in range(repeats):
        start = time.perf_counter()
        ranks = retrieval_ranks(queries, gallery)
        timings["ranks"].append(time.perf_counter() - start)
        start = time.perf_counter()
        cross_fitted_ridge(pooled(native), images)
        timings["ridge"].append(time.perf_counter() - start)
    start = time.perf_counter()
    points = np.concatenate([pooled(queries)] * 5)
    TSNE(n_components=2, init="pca", random_state=0).fit_transform(points)
    tsne = time.perf_counter() - start
    print(f"\nprobe statistics for {n} clips (random embeddings; R@1 {recall_at(ranks, 1):.2f} %)")
    for name, values in timings.items():
        print(f"{name:>6}: median {statistics.median(values):.3f} s over {repeats}")
    print(f"  tsne: {tsne:.1f} s (one run, {5 * n} points)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flops-only", action="store_true", help="skip the probe statistics")
    args = parser.parse_args()
    grounding_cost(args.ks, "space")
    grounding_cost([k for k in args.ks if k <= T], "time")  # time: K <= T' segments make sense
    if not args.flops_only:
        probe_statistics(args.clips, args.repeats)


if __name__ == "__main__":
    main()
