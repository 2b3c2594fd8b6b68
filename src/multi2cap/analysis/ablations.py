"""Ablation runners: alpha/beta grid (Table 8), augmentation on/off (Table 9) and visual
grounding vs the audio-only baseline over seeds; the K sweep (Table 5) with its cost
measurements is `multi2cap.analysis.k_sweep`, on the same cells.

Every runner is a list of *cells*; a cell is one training run (pre-training from a base recipe,
then optionally audio-only fine-tuning from its final checkpoint) with a few recipe overrides,
evaluated audio-only on a caption manifest. Cells live in `<out>/cells/<name>/`:

    pretrain/   finetune/   the trainer's output folders (checkpoints/, final/, logs)
    captions.jsonl          one generated caption per evaluated clip
    result.json             metrics and measurements; written last, atomically

Resumption: a cell with `result.json` is skipped on a rerun; a stage whose `final/` exists is not
trained again; a stage with step checkpoints but no `final/` continues through the trainer's
`resume`, so an interrupted grid picks up where it stopped. Delete a cell's folder to redo it.

A cell's overrides apply to pre-training; fine-tuning gets them minus the `model.*` ones (its
architecture comes from the pre-trained checkpoint through `init_from`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from multi2cap.analysis.probe_tables import format_cell, markdown_table, write_table
from multi2cap.data.dataset import CaptionDataset, collate_captions
from multi2cap.data.manifest import read_manifest
from multi2cap.io import atomic_write_text, write_jsonl
from multi2cap.media.audio import SAMPLE_RATE
from multi2cap.metrics import PAPER_LABELS, higher_is_better
from multi2cap.model.config import CONFIG_FILE

DEFAULT_METRICS = ("bleu_1", "bleu_4", "rouge_l", "meteor", "cider_d", "spice")

#: Paper Table 8: alpha -> beta -> (CIDEr, SPICE), x100.
PAPER_TABLE8_BETAS = (0.01, 0.02, 0.05, 0.09, 0.10)
PAPER_TABLE8 = {
    0.01: ((53.5, 14.8), (53.7, 15.0), (54.0, 15.4), (53.6, 15.2), (53.4, 15.0)),
    0.02: ((53.6, 15.0), (54.0, 15.6), (54.2, 15.9), (53.9, 15.4), (53.7, 15.2)),
    0.05: ((53.4, 14.7), (53.8, 15.3), (54.0, 15.7), (53.6, 15.2), (53.3, 15.0)),
    0.09: ((53.0, 14.6), (53.4, 15.0), (53.7, 15.4), (53.5, 15.1), (53.2, 14.9)),
    0.10: ((52.9, 14.5), (53.3, 14.9), (53.6, 15.3), (53.4, 15.0), (53.5, 15.2)),
}
#: Paper Table 9: metric -> (without, with augmentation), x100.
PAPER_TABLE9 = {
    "bleu_1": (34.1, 34.3),
    "bleu_2": (18.7, 19.2),
    "bleu_3": (10.9, 11.6),
    "bleu_4": (6.9, 7.6),
    "rouge_l": (29.1, 29.1),
    "meteor": (12.7, 15.4),
    "cider_d": (51.8, 54.2),
    "spice": (14.2, 15.9),
    "spider": (33.0, 35.1),
    "spider_fl": (30.9, 33.3),
    "sbert_sim": (62.6, 65.4),
    "fense": (58.2, 58.9),
}
PAPER_NOTE = (
    "Paper values: full-size model (CED-base, CLIP ViT-L/14, a 3B+ LLM) pre-trained on VggCaps; "
    "a different model, data and scale from ours, shown only for orientation."
)

Log = Callable[[str], None]


@dataclass
class AblationSpec:
    """How every cell of an ablation trains and is evaluated.

    `pretrain_recipe` is needed to train cells (not to evaluate given checkpoints);
    `overrides` (dotted `key=value`, see `multi2cap.train.load_train_config`) apply to both
    stages, e.g. the data manifests; `finetune_recipe` None = pre-training only, evaluating its
    final checkpoint. `metrics` are evaluated with unavailable ones recorded, not fatal.
    `num_beams` / `max_new_tokens` None = the model's generation defaults. `backbones`: where
    given checkpoints' backbones are on this machine (`Multi2Cap.from_pretrained`)."""

    eval_manifest: Path
    pretrain_recipe: Path | None = None
    overrides: list[str] = field(default_factory=list)
    finetune_recipe: Path | None = None
    finetune_overrides: list[str] = field(default_factory=list)
    metrics: Sequence[str] = DEFAULT_METRICS
    num_beams: int | None = None
    max_new_tokens: int | None = None
    batch_size: int = 8
    device: str = "cpu"
    backbones: dict[str, str] = field(default_factory=dict)


@dataclass
class Cell:
    """One training run: folder `name`, the ablated settings `labels`, recipe `overrides`."""

    name: str
    labels: dict[str, Any]
    overrides: list[str]


@dataclass
class CellResult:
    """What a cell produced: raw metric values (aac-metrics scale, None when unavailable)."""

    name: str
    labels: dict[str, Any]
    checkpoint: str
    pretrain_checkpoint: str
    metrics: dict[str, float | None]
    unavailable: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


RESULT_FILE = "result.json"


def run_cells(
    spec: AblationSpec,
    cells: Sequence[Cell],
    out_dir: Path,
    *,
    measure: Callable[[Path], dict[str, Any]] | None = None,
    log: Log | None = None,
) -> list[CellResult]:
    """Train and evaluate each cell (skipping finished ones); `measure(checkpoint)` adds extra
    per-cell measurements (e.g. FLOPs) to `CellResult.extra`."""
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"cell names must be unique: {names}")
    say = log or (lambda _: None)
    results = []
    for i, cell in enumerate(cells, 1):
        folder = out_dir / "cells" / cell.name
        done = folder / RESULT_FILE
        if done.is_file():
            say(f"cell {i}/{len(cells)} {cell.name}: finished earlier, skipped")
            results.append(CellResult(**json.loads(done.read_text(encoding="utf-8"))))
            continue
        say(f"cell {i}/{len(cells)} {cell.name}: {' '.join(cell.overrides) or 'base recipe'}")
        started = time.perf_counter()
        result = _run_cell(spec, cell, folder, measure, say)
        result.extra["cell_seconds"] = time.perf_counter() - started
        atomic_write_text(done, json.dumps(asdict(result), indent=2) + "\n")
        results.append(result)
    return results


def _run_cell(
    spec: AblationSpec,
    cell: Cell,
    folder: Path,
    measure: Callable[[Path], dict[str, Any]] | None,
    say: Log,
) -> CellResult:
    if spec.pretrain_recipe is None:
        raise ValueError(
            "training cells needs a pre-training recipe (AblationSpec.pretrain_recipe)"
        )
    pretrained = train_stage(
        spec.pretrain_recipe, [*spec.overrides, *cell.overrides], folder / "pretrain", say
    )
    checkpoint = pretrained
    if spec.finetune_recipe is not None:
        kept = [o for o in cell.overrides if not o.strip().startswith("model.")]
        checkpoint = train_stage(
            spec.finetune_recipe,
            [*spec.overrides, *spec.finetune_overrides, *kept, f"init_from={pretrained}"],
            folder / "finetune",
            say,
        )
    say(f"{cell.name}: evaluating {checkpoint}")
    metrics, unavailable = caption_metrics(
        checkpoint, spec, captions_path=folder / "captions.jsonl"
    )
    extra = measure(checkpoint) if measure is not None else {}
    return CellResult(
        name=cell.name,
        labels=cell.labels,
        checkpoint=str(checkpoint),
        pretrain_checkpoint=str(pretrained),
        metrics=metrics,
        unavailable=unavailable,
        extra=extra,
    )


def train_stage(recipe: Path, overrides: list[str], out: Path, say: Log) -> Path:
    """Train one stage into `out` (resuming from its newest step checkpoint, if any) and return
    its `final/` checkpoint; a stage whose `final/` exists is returned untouched."""
    from multi2cap.train import load_train_config, train
    from multi2cap.train.state import list_checkpoints

    final = out / "final"
    if (final / CONFIG_FILE).is_file():
        say(f"{out.name}: already trained")
        return final
    config = load_train_config(recipe, overrides, output_dir=out)
    resume = bool(list_checkpoints(out / "checkpoints"))
    say(f"{out.name}: {'resuming' if resume else 'training'} ({recipe.name})")
    result = train(config, resume=resume)
    return result.final_checkpoint


def caption_metrics(
    checkpoint: Path, spec: AblationSpec, captions_path: Path | None = None
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Caption `spec.eval_manifest` audio-only with `checkpoint` and score it.

    Returns raw corpus values (None for an unavailable metric) and the reasons for those."""
    from multi2cap.metrics import evaluate
    from multi2cap.model.multi2cap import Multi2Cap

    records = [r for r in read_manifest(spec.eval_manifest) if r.captions]
    if not records:
        raise ValueError(f"{spec.eval_manifest}: no record with reference captions to evaluate")
    model = Multi2Cap.from_pretrained(checkpoint, device=spec.device, backbones=spec.backbones)
    loader = DataLoader(
        CaptionDataset(records, train=False),
        batch_size=spec.batch_size,
        collate_fn=collate_captions,
    )
    ids: list[str] = []
    candidates: list[str] = []
    references: list[list[str]] = []
    for batch in loader:
        waves = [batch["audio"][i, : int(n)] for i, n in enumerate(batch["audio_lengths"])]
        candidates += model.caption(
            waves,
            sampling_rate=SAMPLE_RATE,  # the data module's rate
            num_beams=spec.num_beams,
            max_new_tokens=spec.max_new_tokens,
        )
        references += batch["references"]
        ids += batch["ids"]
    if captions_path is not None:
        write_jsonl(
            captions_path,
            [
                {"id": i, "caption": c, "references": r}
                for i, c, r in zip(ids, candidates, references, strict=True)
            ],
        )
    result = evaluate(candidates, references, list(spec.metrics), skip_unavailable=True)
    metrics = {k: result.corpus.get(k) for k in spec.metrics}
    return metrics, dict(result.unavailable)


# ---------------------------------------------------------------------------------- helpers
def x100(key: str, value: float | None) -> float | None:
    """Printed scale: metrics x100 as the paper prints them (vocab is a count)."""
    if value is None or key == "vocab":
        return value
    return 100.0 * value


def metric_keys(results: Sequence[CellResult]) -> list[str]:
    keys: list[str] = []
    for r in results:
        keys += [k for k in r.metrics if k not in keys]
    return keys


# ---------------------------------------------------------------------------------- grids
def grid_cells(alphas: Sequence[float], betas: Sequence[float]) -> list[Cell]:
    """One cell per (alpha, beta): `model.alpha`, `model.beta` (pre-training loss weights)."""
    return [
        Cell(
            f"alpha_{a:g}_beta_{b:g}",
            {"alpha": a, "beta": b},
            [f"model.alpha={a}", f"model.beta={b}"],
        )
        for a in alphas
        for b in betas
    ]


def write_grid(
    results: Sequence[CellResult],
    out_dir: Path,
    table_metrics: Sequence[str] = ("cider_d", "spice"),
) -> list[Path]:
    """`grid.csv` (one row per cell, raw values) and `grid.md`: alpha rows x beta columns, each
    cell `m1 / m2 / ...` of `table_metrics` x100, as the paper's Table 8."""
    alphas = sorted({r.labels["alpha"] for r in results})
    betas = sorted({r.labels["beta"] for r in results})
    by_cell = {(r.labels["alpha"], r.labels["beta"]): r for r in results}
    keys = metric_keys(results)
    rows = [{"alpha": r.labels["alpha"], "beta": r.labels["beta"], **r.metrics} for r in results]
    body = []
    for a in alphas:
        line: list[Any] = [f"{a:g}"]
        for b in betas:
            r = by_cell.get((a, b))
            line.append(
                " / ".join(format_cell(x100(m, r.metrics.get(m))) for m in table_metrics)
                if r is not None
                else "–"
            )
        body.append(line)
    labels = " / ".join(PAPER_LABELS.get(m, m) for m in table_metrics)
    table = markdown_table(["α \\ β", *(f"{b:g}" for b in betas)], body)
    paper = markdown_table(
        ["α \\ β", *(f"{b:g}" for b in PAPER_TABLE8_BETAS)],
        [[f"{a:g}", *(f"{c} / {s}" for c, s in cells)] for a, cells in PAPER_TABLE8.items()],
    )
    md = (
        f"# alpha / beta grid (Table 8)\n\nEach cell: {labels} (x100, audio-only evaluation).\n\n"
        f"{table}\n{PAPER_NOTE} Paper cells: CIDEr / SPICE.\n\n{paper}"
    )
    return write_table(out_dir, "grid", ["alpha", "beta", *keys], rows, md)


def augment_cells() -> list[Cell]:
    """Without and with the four waveform augmentations (both stages)."""
    return [
        Cell("no_augment", {"augment": False}, ["augment.enabled=false"]),
        Cell("augment", {"augment": True}, ["augment.enabled=true"]),
    ]


def write_augment(results: Sequence[CellResult], out_dir: Path) -> list[Path]:
    """`augment.csv` / `augment.md`: one row per metric, columns without / with (x100)."""
    by_flag = {bool(r.labels["augment"]): r for r in results}
    keys = metric_keys(results)
    rows = [
        {
            "metric": k,
            "without": by_flag[False].metrics.get(k) if False in by_flag else None,
            "with": by_flag[True].metrics.get(k) if True in by_flag else None,
        }
        for k in keys
    ]
    body = [
        [
            PAPER_LABELS.get(r["metric"], r["metric"]),
            x100(r["metric"], r["without"]),
            x100(r["metric"], r["with"]),
        ]
        for r in rows
    ]
    paper = markdown_table(
        ["", "w/o augment", "w/ augment"],
        [[PAPER_LABELS[k], *v] for k, v in PAPER_TABLE9.items()],
    )
    md = (
        "# Audio augmentation on/off (Table 9)\n\nMetrics x100, audio-only evaluation.\n\n"
        f"{markdown_table(['', 'w/o augment', 'w/ augment'], body)}\n{PAPER_NOTE}\n\n{paper}"
    )
    return write_table(out_dir, "augment", ["metric", "without", "with"], rows, md)


# ---------------------------------------------------------------------------------- baseline
def baseline_cells(seeds: Sequence[int]) -> list[Cell]:
    """Per seed, the grounding model and the audio-only baseline (`model.grounding=false`) on
    the same recipe: same data, steps, batch, schedule and seed."""
    cells = []
    for seed in seeds:
        cells.append(
            Cell(f"grounding_seed{seed}", {"arm": "grounding", "seed": seed}, [f"seed={seed}"])
        )
        cells.append(
            Cell(
                f"baseline_seed{seed}",
                {"arm": "baseline", "seed": seed},
                [f"seed={seed}", "model.grounding=false"],
            )
        )
    return cells


@dataclass
class Comparison:
    """One metric over seeds: per-seed values of each arm and of the difference (grounding minus
    baseline, raw scale); std is the sample standard deviation (n - 1), None for one seed; `wins`
    counts the seeds where grounding is better in the metric's direction (lower FER wins)."""

    metric: str
    seeds: list[int]
    grounding: list[float]
    baseline: list[float]
    diff: list[float]
    diff_mean: float
    diff_std: float | None
    wins: int


def compare_arms(results: Sequence[CellResult]) -> list[Comparison]:
    """Pair the grounding and baseline cells by seed and summarise each metric; seeds where
    either arm lacks the metric are left out of that metric."""
    arms: dict[str, dict[int, CellResult]] = {"grounding": {}, "baseline": {}}
    for r in results:
        arms[r.labels["arm"]][int(r.labels["seed"])] = r
    seeds = sorted(set(arms["grounding"]) & set(arms["baseline"]))
    out = []
    for metric in metric_keys(results):
        pairs = [
            (s, arms["grounding"][s].metrics.get(metric), arms["baseline"][s].metrics.get(metric))
            for s in seeds
        ]
        pairs = [(s, g, b) for s, g, b in pairs if g is not None and b is not None]
        if not pairs:
            continue
        diff = [g - b for _, g, b in pairs]
        out.append(
            Comparison(
                metric=metric,
                seeds=[s for s, _, _ in pairs],
                grounding=[g for _, g, _ in pairs],
                baseline=[b for _, _, b in pairs],
                diff=diff,
                diff_mean=float(np.mean(diff)),
                diff_std=float(np.std(diff, ddof=1)) if len(diff) > 1 else None,
                wins=sum((d > 0) if higher_is_better(metric) else (d < 0) for d in diff),
            )
        )
    return out


def write_comparison(comparisons: Sequence[Comparison], out_dir: Path) -> list[Path]:
    """`grounding_vs_baseline.csv` (raw, per-seed lists as `;`-joined) and `.md` (x100)."""
    rows = []
    body = []
    for c in comparisons:
        rows.append(
            {
                "metric": c.metric,
                "seeds": ";".join(map(str, c.seeds)),
                "grounding": ";".join(f"{v:.6g}" for v in c.grounding),
                "baseline": ";".join(f"{v:.6g}" for v in c.baseline),
                "diff": ";".join(f"{v:.6g}" for v in c.diff),
                "diff_mean": c.diff_mean,
                "diff_std": c.diff_std,
                "wins": c.wins,
            }
        )
        scale = 1.0 if c.metric == "vocab" else 100.0
        body.append(
            [
                PAPER_LABELS.get(c.metric, c.metric),
                _mean_std(c.grounding, scale),
                _mean_std(c.baseline, scale),
                scale * c.diff_mean,
                None if c.diff_std is None else scale * c.diff_std,
                f"{c.wins}/{len(c.diff)}",
                ", ".join(f"{scale * d:+.1f}" for d in c.diff),
            ]
        )
    columns = ["metric", "seeds", "grounding", "baseline", "diff", "diff_mean", "diff_std", "wins"]
    table = markdown_table(
        ["", "grounding", "audio-only", "Δ mean", "Δ std", "wins", "Δ per seed"], body
    )
    md = (
        "# Visual grounding vs the audio-only baseline\n\nSame recipe, data, steps and seed per "
        "pair; metrics x100 (mean ± sample std over seeds); Δ = grounding − baseline; wins = "
        f"seeds where grounding scores better (higher, or lower for FER).\n\n{table}"
    )
    return write_table(out_dir, "grounding_vs_baseline", columns, rows, md)


def _mean_std(values: Sequence[float], scale: float) -> str:
    mean = scale * float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {scale * float(np.std(values, ddof=1)):.1f}"
