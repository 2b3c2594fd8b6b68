"""Speed and agreement of multi2cap.metrics against pycocoevalcap 1.2, in the same process.

Generates a Clotho-evaluation-sized set (1,045 items x 5 references by default) of caption-like
sentences, PTB-tokenizes it once, then times BLEU-1..4, ROUGE-L and CIDEr-D (ours: one shared
n-gram table + the three metrics; pycocoevalcap: its Bleu, Rouge and Cider scorers) and METEOR
(ours: a warm `MeteorScorer`; pycocoevalcap: its `Meteor`, whose JVM also stays up between
calls). Prints medians, the ratio pycocoevalcap / ours, and the largest difference in values.

    .venv/bin/python benchmarks/bench_metrics.py [--items 1045] [--refs 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from multi2cap.metrics._ngrams import build_ngram_table
from multi2cap.metrics.bleu import bleu
from multi2cap.metrics.cider import cider_d
from multi2cap.metrics.meteor import MeteorScorer
from multi2cap.metrics.rouge import rouge_l
from multi2cap.metrics.tokenizer import ptb_tokenize

SUBJECTS = [
    "a dog", "a man", "a woman", "people", "a child", "birds", "a car", "a train", "rain",
    "the wind", "water", "a crowd", "an engine", "a bell", "a baby", "someone", "a machine",
    "thunder", "a motorcycle", "insects", "a group of people", "a small dog", "heavy rain",
]  # fmt: skip
VERBS = [
    "barks", "talks", "speaks loudly", "is running", "passes by", "falls", "blows", "chirp",
    "rings", "cries", "is hammering", "drips", "rumbles", "accelerates", "is laughing",
    "hums", "splashes", "sings", "whistles", "is typing", "knocks on a door", "idles",
]  # fmt: skip
PLACES = [
    "in the background", "on a metal roof", "in the distance", "on a busy street",
    "near a river", "inside a room", "in a forest", "at a train station", "outside",
    "on the road", "in a park", "nearby", "during a storm", "in a kitchen",
]  # fmt: skip
JOINS = ["while", "and", "as", "then", "before", "and then"]


def caption(rng: random.Random) -> str:
    """One caption-like sentence (3-20 words), capitalised and punctuated like Clotho's."""
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS)]
    if rng.random() < 0.6:
        parts.append(rng.choice(PLACES))
    if rng.random() < 0.6:
        parts += [rng.choice(JOINS), rng.choice(SUBJECTS), rng.choice(VERBS)]
        if rng.random() < 0.4:
            parts.append(rng.choice(PLACES))
    text = " ".join(parts)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "!", ""])


def make_set(n_items: int, n_refs: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    mrefs = [[caption(rng) for _ in range(n_refs)] for _ in range(n_items)]
    cands = [refs[0] if rng.random() < 0.05 else caption(rng) for refs in mrefs]
    return cands, mrefs


@dataclass
class Timing:
    """Median wall-clock and CPU (this process) seconds of repeated runs."""

    wall: float
    cpu: float

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.wall + other.wall, self.cpu + other.cpu)


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[Timing, Any]:
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus)), result


def max_diff(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))))


def meteor_rows(
    cands: list[str],
    mrefs: list[list[str]],
    gts: dict[int, list[str]],
    res: dict[int, list[str]],
    repeats: int,
) -> list[tuple[str, Timing, Timing, float]]:
    """METEOR rows: JVM start + first call, then warm calls. Ours and pycocoevalcap's calls
    alternate so both see the same load; the JIT keeps compiling for the first few calls, so
    4 calls each are timed separately before the `repeats` warm ones."""
    from pycocoevalcap.meteor.meteor import Meteor

    ours: list[Any] = []
    coco: list[Any] = []

    def start_ours() -> Any:
        ours.append(MeteorScorer())
        return ours[0].score(cands, mrefs)

    def start_coco() -> Any:
        coco.append(Meteor())
        return coco[0].compute_score(gts, res)

    cold, first = median_time(start_ours, 1)
    p_cold, p_first = median_time(start_coco, 1)
    timings: dict[str, list[Timing]] = {"ours": [], "coco": []}
    values: dict[str, Any] = {}
    for _ in range(4 + repeats):
        timing, values["ours"] = median_time(lambda: ours[0].score(cands, mrefs), 1)
        timings["ours"].append(timing)
        timing, values["coco"] = median_time(lambda: coco[0].compute_score(gts, res), 1)
        timings["coco"].append(timing)
    ours[0].close()
    coco.clear()
    diff = max(
        max_diff(values["ours"][0], values["coco"][0]),
        max_diff(values["ours"][1], values["coco"][1]),
        max_diff(first[1], p_first[1]),
    )

    def median(series: list[Timing]) -> Timing:
        return Timing(
            statistics.median(t.wall for t in series), statistics.median(t.cpu for t in series)
        )

    return [
        ("METEOR, JVM start + first call", cold, p_cold, diff),
        ("METEOR, calls 2-5 (JIT warming)", median(timings["ours"][:4]),
         median(timings["coco"][:4]), diff),
        ("METEOR, warm call (6th on)", median(timings["ours"][4:]),
         median(timings["coco"][4:]), diff),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1045)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (two JVM starts)")
    args = parser.parse_args()

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    raw_cands, raw_mrefs = make_set(args.items, args.refs)
    start = time.perf_counter()
    tokens, backend = ptb_tokenize(raw_cands + [r for refs in raw_mrefs for r in refs])
    tokenize_s = time.perf_counter() - start
    cands = tokens[: args.items]
    mrefs = [
        tokens[args.items + i * args.refs : args.items + (i + 1) * args.refs]
        for i in range(args.items)
    ]
    gts = {i: refs for i, refs in enumerate(mrefs)}
    res = {i: [c] for i, c in enumerate(cands)}
    print(
        f"{args.items} items x {args.refs} references; PTB tokenization ({backend}) of "
        f"{len(tokens)} captions: {tokenize_s:.2f} s; medians of {args.repeats} runs "
        "(pycocoevalcap's n-gram scorers: 3 runs); CPU = this process's CPU time (JVM excluded)"
    )

    rows: list[tuple[str, Timing, Timing, float]] = []
    coco_repeats = min(3, args.repeats)
    t_table, table = median_time(lambda: build_ngram_table(cands, mrefs), args.repeats)
    t_bleu, ours_bleu = median_time(lambda: bleu(table), args.repeats)
    t_rouge, ours_rouge = median_time(lambda: rouge_l(cands, mrefs), args.repeats)
    t_cider, ours_cider = median_time(lambda: cider_d(table), args.repeats)
    p_bleu_t, p_bleu = median_time(lambda: Bleu(4).compute_score(gts, res, verbose=0), coco_repeats)
    p_rouge_t, p_rouge = median_time(lambda: Rouge().compute_score(gts, res), coco_repeats)
    p_cider_t, p_cider = median_time(lambda: Cider().compute_score(gts, res), coco_repeats)
    bleu_diff = max(
        max_diff(ours_bleu[0], p_bleu[0]),
        *(max_diff(ours_bleu[1][k], p_bleu[1][k]) for k in range(4)),
    )
    rows.append(("BLEU-1..4 (incl. n-gram table)", t_table + t_bleu, p_bleu_t, bleu_diff))
    rouge_diff = max(max_diff(ours_rouge[0], p_rouge[0]), max_diff(ours_rouge[1], p_rouge[1]))
    rows.append(("ROUGE-L", t_rouge, p_rouge_t, rouge_diff))
    cider_diff = max(max_diff(ours_cider[0], p_cider[0]), max_diff(ours_cider[1], p_cider[1]))
    rows.append(("CIDEr-D (incl. n-gram table)", t_table + t_cider, p_cider_t, cider_diff))
    rows.append(
        (
            "BLEU + ROUGE-L + CIDEr-D",
            t_table + t_bleu + t_rouge + t_cider,
            p_bleu_t + p_rouge_t + p_cider_t,
            max(bleu_diff, rouge_diff, cider_diff),
        )
    )

    if not args.no_meteor:
        rows += meteor_rows(cands, mrefs, gts, res, args.repeats)

    print(
        f"{'metric':32} {'ours wall':>9} {'coco wall':>9} {'ratio':>6} "
        f"{'ours CPU':>9} {'coco CPU':>9} {'ratio':>6} {'max |diff|':>10}"
    )
    for name, ours, coco_t, diff in rows:
        print(
            f"{name:32} {ours.wall:9.4f} {coco_t.wall:9.4f} {coco_t.wall / ours.wall:5.1f}x "
            f"{ours.cpu:9.4f} {coco_t.cpu:9.4f} {coco_t.cpu / max(ours.cpu, 1e-9):5.1f}x "
            f"{diff:10.2e}"
        )


if __name__ == "__main__":
    main()
