"""`multi2cap demo --preference`: a preference stage (DPO on the model's own candidates,
`stage: preference`) after fine-tuning, for both systems, and its before / after figures.

The recipe follows the packaged `preference_clotho` (EGPL-AAC's Clotho setting: beta 0.05,
length-normalised log-probabilities, the one-sided chosen-caption anchor 0.01, the decoder's
LoRA only, 8 pairs per update, one epoch) with the learning rate scaled to the demo: EGPL-AAC
tunes at 2e-6, 1/50 of a usual 1e-4 LoRA fine-tuning rate; the demo fine-tunes at 5e-3, so it
tunes preferences at 1e-4. Candidates: the 3 hypotheses of one beam search of width 3 and 3
samples per clip, CIDEr-D against the clip's 5 references, a gap above 0.1 to make a pair.
The "before" figures are the fine-tuned checkpoint's (what the demo reports without the
option), the "after" figures the preference stage's `final/`, on the same test clips.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STAGE = "preference"
#: Training clips that get candidates in the full demo (all of them with --quick: 160).
CLIPS = 800
#: What the before / after comparison reports (raw scale).
KEYS = ("cider_d", "source_f1", "source_f1_faint")
LABELS = {"cider_d": "CIDEr-D", "source_f1": "Src-F1", "source_f1_faint": "Src-F1 faint"}


def preference_recipe(
    seed: int,
    manifests: dict[str, Path],
    init_from: Path,
    output_dir: Path,
    base: dict[str, Any],
    *,
    quick: bool,
) -> dict[str, Any]:
    """The preference stage's recipe, from the fine-tuning recipe `base` (data, evaluation and
    runtime settings) and the fine-tuned checkpoint `init_from`; candidates for every training
    clip with `quick`, else for `CLIPS` of them."""
    return {
        "stage": STAGE,
        "seed": seed,
        "init_from": str(init_from),
        "data": {**base["data"], "train_manifest": str(manifests["finetune"])},
        "augment": {"enabled": False},
        "preference": {
            "candidates": {
                "num_beams": 3,
                "beams": 3,
                "sampled": 3,
                "batch_size": 16,
                "max_clips": None if quick else CLIPS,
            },
            "scorer": "cider_d",
            "margin": 0.1,
            "beta": 0.05,
            "logp": "mean",
            "anchor_weight": 0.01,
            "anchor_tolerance": 0.02,
            "train": ["llm_lora"],
        },
        "optim": {
            "lr": 1e-4,
            "weight_decay": 0.0,
            "batch_size": 8,
            "micro_batch_size": 8,
            "epochs": 1,
            "warmup_epochs": 0.1,
        },
        "eval": {**base["eval"], "every_epochs": 1},
        "runtime": {**base["runtime"], "output_dir": str(output_dir)},
    }


def expected_steps(n_train: int, quick: bool) -> int:
    """At most one pair per clip, 8 per update: the progress line's total."""
    return max(1, (n_train if quick else min(CLIPS, n_train)) // 8)


def before_after(outcomes: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per system and `KEYS` metric: before and after over the seeds (mean, std, per seed) and
    the per-seed difference after - before, from the demo's `SeedOutcome`s (their runs'
    `scores` and `preference_scores`). Empty when no run was preference-tuned."""
    out: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        for run in outcome.runs:
            if not run.preference_scores:
                continue
            entry = out.setdefault(run.name, {k: {"before": [], "after": []} for k in KEYS})
            for key in KEYS:
                entry[key]["before"].append(run.scores[key])
                entry[key]["after"].append(run.preference_scores[key])
    for entry in out.values():
        for key in KEYS:
            before, after = entry[key]["before"], entry[key]["after"]
            diff = [a - b for a, b in zip(after, before, strict=True)]
            entry[key] = {
                "before": _stats(before),
                "after": _stats(after),
                "difference": _stats(diff),
            }
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "per_seed": values,
    }


def before_after_markdown(outcomes: Sequence[Any]) -> str:
    """One row per system and metric (x100): before, after, after - before (mean +- std over
    the seeds) and the per-seed differences."""
    summary = before_after(outcomes)
    seeds = ", ".join(str(o.seed) for o in outcomes)
    lines = [
        f"| system | metric (x100, seeds {seeds}) | before | after | after - before | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in summary.items():
        for key in KEYS:
            cell = entry[key]
            lines.append(
                f"| {name} | {LABELS[key]} | {_pm(cell['before'])} | {_pm(cell['after'])} | "
                f"{_pm(cell['difference'], sign=True)} | "
                + ", ".join(f"{100 * d:+.1f}" for d in cell["difference"]["per_seed"])
                + " |"
            )
    return "\n".join(lines)


def _pm(stats: dict[str, Any], sign: bool = False) -> str:
    mean = f"{100 * stats['mean']:+.1f}" if sign else f"{100 * stats['mean']:.1f}"
    return f"{mean} +- {100 * stats['std']:.1f}"
