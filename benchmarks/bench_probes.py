"""Benchmark: cost of the grounding path at the paper's shapes, per K (the FLOPs column of
Table 5), and the speed of the Table 4 probe statistics at test-set size.

1. FLOPs (`torch.utils.flop_counter`) of segment pooling + AV-grounding + VFR +
   Ground Adapter for one 10-s clip at full-size shapes with random weights: CED-base tokens
   (T' = 62, d_a = 768), CLIP ViT-L/14 patches (P = 256, d_v = 1024), d_g = 1024, 8 heads, VFR
   hidden 2048, LLM width 3072 (Llama-3.2-3B). No LLM or encoder is run; see `k-sweep` for the
   whole-model prefill count on a real checkpoint.
2. Time of the retrieval ranks + cross-fitted ridge + t-SNE for N clips of random embeddings at
   those widths (the probe statistics after the model has run).

    .venv/bin/python benchmarks/bench_probes.py [--ks 1 4 16 64 256] [--clips 2000] [--repeats 5]

The development machine is 2 CPU cores shared with other jobs: quote medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from multi2cap.analysis.ablations import grounding_path_flops
from multi2cap.analysis.probes import cross_fitted_ridge, pooled, recall_at, retrieval_ranks
from multi2cap.model.adapter import GroundAdapter
from multi2cap.model.grounding import AVGrounding
from multi2cap.model.vfr import VisualFeatureReconstructor

T, D_A, P, D_V, D_G, HEADS, VFR_HIDDEN, D_LLM, ALIGN = 62, 768, 256, 1024, 1024, 8, 2048, 3072, 512


def grounding_cost(ks: list[int]) -> None:
    torch.manual_seed(0)
    adapter = GroundAdapter(D_A, D_LLM, D_G).eval()
    vfr = VisualFeatureReconstructor(D_A, VFR_HIDDEN, D_G).eval()
    tokens = torch.randn(1, T, D_A)
    mask = torch.ones(1, T, dtype=torch.bool)
    patches = torch.randn(1, P, D_V)
    print(f"grounding path FLOPs, one 10-s clip (T'={T}, P={P}), full-size shapes")
    print(f"{'K':>5} {'GFLOPs':>8} {'per extra token':>16}")
    previous: tuple[int, int] | None = None
    for k in ks:
        grounding = AVGrounding(D_A, D_V, D_G, HEADS, k).eval()
        flops = grounding_path_flops(grounding, vfr, adapter, tokens, mask, patches, k)
        slope = "" if previous is None else f"{(flops - previous[1]) / (k - previous[0]) / 1e9:.4f}"
        print(f"{k:>5} {flops / 1e9:>8.3f} {slope:>16}")
        previous = (k, flops)


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
    args = parser.parse_args()
    grounding_cost(args.ks)
    probe_statistics(args.clips, args.repeats)


if __name__ == "__main__":
    main()
