"""Benchmark: the AV-Grounding block's forward + backward, fused attention vs weights.

`AVGrounding(need_weights=False)` (training and captioning) lets `nn.MultiheadAttention` call
`F.scaled_dot_product_attention`; `need_weights=True` (the probes) materialises the head-averaged
weights (`(B, T', P)` under `--pool time`, `(B, P, T')` under `space`) through the unfused
softmax(QK^T)V path. Rows: the whole block (projections,
attention, FFN, pooling), and the attention alone (`nn.MultiheadAttention` on projected inputs). Shapes are the paper's: CED-base
tokens of a 10-s clip (T' = 62, d_a = 768), CLIP ViT-L/14 patches (P = 256, d_v = 1024),
d_g = 1024, 8 heads, K = 4. Both paths are timed in the same run, interleaved, and the ratio of
medians is printed (the machine is shared: quote ratios, not absolute times).

    .venv/bin/python benchmarks/bench_grounding.py [--batch 8] [--repeats 9] [--device cpu]
        [--pool space|time]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from multi2cap.model.grounding import AVGrounding

T, D_A, P, D_V, D_G, HEADS, K = 62, 768, 256, 1024, 1024, 8, 4
GRID = (16, 16)  # ViT-L/14 at 224 px


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--pool", default="space", choices=["space", "time"])
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    grounding = AVGrounding(D_A, D_V, D_G, HEADS, K, pool=args.pool).to(device, dtype).train()
    audio = torch.randn(args.batch, T, D_A, device=device, dtype=dtype, requires_grad=True)
    mask = torch.ones(args.batch, T, dtype=torch.bool, device=device)
    visual = torch.randn(args.batch, P, D_V, device=device, dtype=dtype)

    def train_step(need_weights: bool) -> Callable[[], None]:
        def step() -> None:
            grounding.zero_grad(set_to_none=True)
            out = grounding(audio, mask, visual, grid=GRID, need_weights=need_weights)
            out.g.float().square().mean().backward()

        return step

    def infer_step(need_weights: bool) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                grounding(audio, mask, visual, grid=GRID, need_weights=need_weights)

        return step

    queries, keys = (P, T) if args.pool == "space" else (T, P)
    q = torch.randn(args.batch, queries, D_G, device=device, dtype=dtype, requires_grad=True)
    kv = torch.randn(args.batch, keys, D_G, device=device, dtype=dtype, requires_grad=True)

    def attention_step(need_weights: bool) -> Callable[[], None]:
        def step() -> None:
            grounding.zero_grad(set_to_none=True)
            out, _ = grounding.attn(q, kv, kv, need_weights=need_weights)
            out.float().square().mean().backward()

        return step

    print(
        f"AV-Grounding (pool {args.pool}), batch {args.batch}, T'={T}, P={P}, d_g={D_G}, "
        f"{args.device} {args.dtype}"
    )
    print(f"{'':<22} {'weights (ms)':>13} {'fused (ms)':>11} {'ratio':>6}")
    rows = (
        ("block fwd + bwd", train_step),
        ("block fwd, no grad", infer_step),
        ("attention fwd + bwd", attention_step),
    )
    for label, make in rows:
        for warm in (True, False):
            make(warm)()
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for need in (True, False):
                times[need].append(_timed(make(need), device))
        slow, fast = (statistics.median(times[need]) * 1e3 for need in (True, False))
        print(f"{label:<22} {slow:>13.1f} {fast:>11.1f} {slow / fast:>6.2f}")


if __name__ == "__main__":
    main()
