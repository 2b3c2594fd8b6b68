"""Captioning speed of the tiny Multi2Cap on this machine (CPU): latency for one 10-s clip and
throughput for a batch, greedy and beam search. Random weights; the decoder always runs to
`--max-new-tokens` or EOS, so the figures are for the given length budget.

    .venv/bin/python benchmarks/bench_caption.py [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from multi2cap.model import Multi2Cap, Multi2CapConfig


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Multi2Cap(Multi2CapConfig.tiny(["a dog barks while rain falls"]), load_vision=False)
    model.eval()
    t = torch.arange(160_000) / 16_000
    clip = 0.3 * torch.sin(2 * math.pi * 440 * t)
    batch = [clip * (0.5 + i / args.batch) for i in range(args.batch)]
    print(f"tiny Multi2Cap, CPU, {args.threads} thread(s), median of {args.repeats}")
    for beams in (1, 3):
        options = dict(sampling_rate=16_000, num_beams=beams, max_new_tokens=args.max_new_tokens)
        one = median_seconds(lambda: model.caption(clip, **options), args.repeats)  # noqa: B023
        many = median_seconds(
            lambda: model.caption(batch, batch_size=args.batch, **options),  # noqa: B023
            args.repeats,
        )
        print(
            f"beams={beams}: one 10-s clip {one * 1e3:.1f} ms; batch of {args.batch} "
            f"{many * 1e3:.1f} ms = {args.batch / many:.1f} clips/s"
        )


if __name__ == "__main__":
    main()
