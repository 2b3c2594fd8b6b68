"""CED encoder throughput (`multi2cap.model.ced.CedEncoder`, random weights, real shapes).

For each architecture, the median over `--repeats` timed passes (after one warm-up) of a forward
pass, waveform to time tokens, front end included, under `torch.inference_mode()`:
- a batch of `--batch` 10-s clips (one chunk each: the VggCaps / AudioCaps case);
- a batch of the same size with Clotho-like lengths 15-30 s (2-3 chunks each, masked tails).
Printed: clips/s, seconds of audio per second, and the share of the time spent in the front end.
On CUDA the encoder runs under bf16 autocast. On a shared CPU the figures move with the
neighbours' load; the load average is printed.

    .venv/bin/python benchmarks/bench_ced.py [--archs test tiny base] [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from multi2cap.model.ced import CedConfig, CedEncoder

SR = 16000
ARCHS: dict[str, Callable[[], CedConfig]] = {
    "test": lambda: CedConfig(embed_dim=64, depth=2, num_heads=2),
    "tiny": CedConfig.tiny,
    "mini": CedConfig.mini,
    "small": CedConfig.small,
    "base": CedConfig.base,
}


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["test", "tiny", "base"], choices=ARCHS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    gen = torch.Generator().manual_seed(0)
    clotho_seconds = torch.linspace(15.0, 30.0, args.batch)
    batches = {
        "10 s": torch.full((args.batch,), 10 * SR),
        "15-30 s": (clotho_seconds * SR).long(),
    }
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{args.threads} thread(s)"
    print(f"device: {device} ({where}), cpus {os.cpu_count()}, load {os.getloadavg()}")
    print(f"{'arch':6s} {'input':8s} {'clips/s':>9s} {'audio s/s':>10s} {'front end':>10s}")
    for arch in args.archs:
        encoder = CedEncoder(ARCHS[arch]()).to(device).eval()
        for label, lengths in batches.items():
            waves = torch.randn(args.batch, int(lengths.max()), generator=gen) * 0.1
            waves, lengths = waves.to(device), lengths.to(device)
            with torch.inference_mode(), autocast:
                total = median_seconds(partial(encoder, waves, lengths), args.repeats, device)
                front = median_seconds(
                    partial(encoder.log_mel, waves, lengths), args.repeats, device
                )
            audio = float(lengths.sum()) / SR
            print(
                f"{arch:6s} {label:8s} {args.batch / total:9.1f} {audio / total:10.0f} "
                f"{front / total:10.0%}"
            )


if __name__ == "__main__":
    main()
