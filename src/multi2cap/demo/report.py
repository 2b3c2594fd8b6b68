"""The demo's outputs: `report.md`, `results.json`, `captions.csv`, loss curves and a metrics
chart (PNG). Tables print metrics x100 as the paper does; `results.json` keeps aac-metrics' raw
scale (fractions) for every metric and source score."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from multi2cap.data.manifest import read_manifest
from multi2cap.demo.config import EVAL_METRICS
from multi2cap.demo.preference import KEYS as PREFERENCE_KEYS
from multi2cap.demo.preference import LABELS as PREFERENCE_LABELS
from multi2cap.demo.preference import before_after, before_after_markdown
from multi2cap.io import atomic_write_text
from multi2cap.metrics import PAPER_LABELS

if TYPE_CHECKING:
    from multi2cap.demo.config import DemoConfig
    from multi2cap.demo.scenes import Scene
    from multi2cap.demo.training import ModelRun, SeedOutcome

N_EXAMPLES = 5
SOURCE_KEYS = ("source_f1", "source_f1_faint")
SOURCE_LABELS = {"source_f1": "Src-F1", "source_f1_faint": "Src-F1 faint"}
SEED_KEYS = ("cider_d", "source_f1", "source_f1_faint")
SMOKE_TEST = (
    "Smoke test (--quick): a tiny scene set and training budget that check that every stage "
    "runs end to end. These numbers say nothing about the method; run the demo without --quick "
    "for its results."
)
NO_DIFFERENCE = (
    "No difference between the systems is reported: the stage-0 audio tagger names no source of "
    "the test clips (Src-F1 0.0), so the audio encoder both systems share learnt nothing and a "
    "difference between them would be noise."
)


def tagger_learnt(outcomes: list[SeedOutcome]) -> bool:
    """Whether the stage-0 audio tagger of every seed names some source right (F1 above 0). When
    it does not, the frozen encoder both systems start from learnt nothing: their scores still
    tell that the stages ran, a difference between them tells nothing."""
    return all(o.tagger.get("source_f1", 0.0) > 0.0 for o in outcomes)


def notices(config: DemoConfig | None, outcomes: list[SeedOutcome]) -> list[str]:
    """What the reader must know before the numbers (`SMOKE_TEST`, `NO_DIFFERENCE`)."""
    found = [SMOKE_TEST] if config is not None and config.quick else []
    return found + ([] if tagger_learnt(outcomes) else [NO_DIFFERENCE])


def _label(key: str) -> str:
    return SOURCE_LABELS.get(key) or PAPER_LABELS.get(key, key)


def _metric_keys(runs: list[ModelRun]) -> list[str]:
    keys = [*EVAL_METRICS, *SOURCE_KEYS]
    return [k for k in keys if all(k in r.scores for r in runs)]


def _cell(key: str, value: float) -> str:
    return f"{value:.0f}" if key == "vocab" else f"{100 * value:.1f}"


def results_markdown(runs: list[ModelRun], difference: bool = True) -> str:
    """One row per system, metrics x100 as the paper prints them (vocab as a count), and with
    two systems and `difference` their difference."""
    keys = _metric_keys(runs)
    lines = [
        "| system | " + " | ".join(_label(k) for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for run in runs:
        lines.append(f"| {run.name} | " + " | ".join(_cell(k, run.scores[k]) for k in keys) + " |")
    if len(runs) == 2 and difference:
        a, b = runs
        lines.append(
            f"| difference ({a.name} - {b.name}) | "
            + " | ".join(_cell(k, a.scores[k] - b.scores[k]) if k != "vocab" else "" for k in keys)
            + " |"
        )
    return "\n".join(lines)


def _plot_losses(runs: list[ModelRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for ax, stage in zip(axes, ("pretrain", "finetune"), strict=True):
        for run in runs:
            rows = [r for r in run.history if r.get("kind") == "train" and r["stage"] == stage]
            if rows:
                ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=run.name)
                if stage == "pretrain" and any(r.get("loss_vfr") for r in rows):
                    ax.plot(
                        [r["step"] for r in rows],
                        [r.get("loss_cap", float("nan")) for r in rows],
                        linestyle="--",
                        label=f"{run.name} (L_cap only)",
                    )
        ax.set_title(f"{stage} loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_metrics(runs: list[ModelRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in _metric_keys(runs) if k != "vocab"]
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    for i, run in enumerate(runs):
        values = [100 * run.scores[k] for k in keys]
        bars = ax.bar(x + i * width, values, width, label=run.name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x + width * (len(runs) - 1) / 2, [_label(k) for k in keys])
    ax.set_ylabel("score x100")
    ax.set_title("Test clips, audio only (offline metrics)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_captions_csv(
    runs: list[ModelRun], scenes: list[Scene], test_manifest: Path, path: Path
) -> None:
    by_id = {s.id: s for s in scenes}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["id", *[f"caption_{r.name}" for r in runs], "references", "in_picture", "heard"]
    )
    for record in read_manifest(test_manifest):
        scene = by_id[record.id]
        writer.writerow(
            [
                record.id,
                *[r.captions.get(record.id, "") for r in runs],
                " | ".join(record.captions),
                "; ".join(scene.visible),
                "; ".join(
                    p.name + (" (faint)" if p.faint else "") for p in scene.sources if p.audible
                ),
            ]
        )
    atomic_write_text(path, buffer.getvalue())


def _examples(runs: list[ModelRun], scenes: list[Scene], test_manifest: Path) -> list[dict]:
    by_id = {s.id: s for s in scenes}
    records = read_manifest(test_manifest)[:N_EXAMPLES]
    return [
        {
            "id": r.id,
            "captions": {run.name: run.captions.get(r.id, "") for run in runs},
            "references": r.captions[:2],
            "picture": ", ".join(by_id[r.id].visible),
            "heard": ", ".join(
                p.name + (" (faint)" if p.faint else "") for p in by_id[r.id].sources if p.audible
            ),
        }
        for r in records
    ]


def seed_summary(outcomes: list[SeedOutcome]) -> dict[str, dict[str, Any]]:
    """Per metric of `SEED_KEYS`: each system's mean and std over the seeds, and the per-seed
    difference multi2cap - baseline with its mean and std (raw scale)."""
    summary: dict[str, dict[str, Any]] = {}
    for key in SEED_KEYS:
        per_system: dict[str, list[float]] = {}
        for outcome in outcomes:
            for run in outcome.runs:
                per_system.setdefault(run.name, []).append(run.scores[key])
        names = list(per_system)
        entry: dict[str, Any] = {
            name: {"mean": statistics.fmean(v), "std": _std(v), "per_seed": v}
            for name, v in per_system.items()
        }
        if len(names) == 2:
            diff = [a - b for a, b in zip(per_system[names[0]], per_system[names[1]], strict=True)]
            entry["difference"] = {
                "mean": statistics.fmean(diff),
                "std": _std(diff),
                "per_seed": diff,
            }
        summary[key] = entry
    return summary


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def seeds_markdown(outcomes: list[SeedOutcome], difference: bool = True) -> str:
    """Mean +- std over the training seeds (x100), and with `difference` the per-seed
    difference."""
    summary = seed_summary(outcomes)
    names = [run.name for run in outcomes[0].runs]
    seeds = ", ".join(str(o.seed) for o in outcomes)
    extra = [f"difference ({names[0]} - {names[-1]})", "per-seed difference"] if difference else []
    lines = [
        f"| metric (x100, seeds {seeds}) | " + " | ".join([*names, *extra]) + " |",
        "|---|" + "---|" * (len(names) + len(extra)),
    ]
    for key, entry in summary.items():
        cells = [f"{100 * entry[n]['mean']:.1f} +- {100 * entry[n]['std']:.1f}" for n in names]
        if difference:
            diff = entry.get("difference", {"mean": 0.0, "std": 0.0, "per_seed": []})
            cells.append(f"{100 * diff['mean']:+.1f} +- {100 * diff['std']:.1f}")
            cells.append(", ".join(f"{100 * d:+.1f}" for d in diff["per_seed"]))
        lines.append(f"| {_label(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results_json(
    path: Path,
    outcomes: list[SeedOutcome],
    probe: dict[str, Any],
    timings: dict[str, float],
    elapsed_s: float,
    backbones: str = "stage0",
) -> Path:
    """`results.json`: the first seed's scores per system (aac-metrics' raw scale, source scores
    as fractions), the stage-0 tagger's, the probe, wall times, the backbone mode and, with
    several seeds, their summary."""
    first = outcomes[0]
    results: dict[str, Any] = {
        "backbones": backbones,
        "systems": {run.name: dict(run.scores) for run in first.runs},
        "stage0_audio_tagger": first.tagger,
        "probe": probe,
        "wall_s": {**timings, "total": elapsed_s},
        "seed": first.seed,
    }
    tuned = before_after(outcomes)
    if tuned:  # --preference: before (fine-tuned) and after (preference stage), every seed
        results["preference"] = tuned
    if len(outcomes) > 1:
        results["seeds"] = {
            "seeds": [o.seed for o in outcomes],
            "per_seed": [
                {
                    "seed": o.seed,
                    "systems": {r.name: dict(r.scores) for r in o.runs},
                    "wall_s": o.wall_s,
                }
                for o in outcomes
            ],
            "summary": seed_summary(outcomes),
        }
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    return path


def write_report(
    config: DemoConfig,
    scenes: list[Scene],
    manifests: dict[str, Path],
    outcomes: list[SeedOutcome],
    elapsed_s: float,
    timings: dict[str, float],
    probes: str,
) -> Path:
    out = config.workdir
    runs = outcomes[0].runs
    _plot_losses(runs, out / "loss_curves.png")
    _plot_metrics(runs, out / "metrics.png")
    write_captions_csv(runs, scenes, manifests["test"], out / "captions.csv")
    counts = {split: sum(s.split == split for s in scenes) for split in ("train", "val", "test")}
    vggcaps = read_manifest(manifests["pretrain"])[:3]
    tagger = outcomes[0].tagger
    difference = tagger_learnt(outcomes)
    lines = [
        "# multi2cap demo report",
        "",
        *[f"> {notice}\n" for notice in notices(config, outcomes)],
        f"Scenes: {counts['train']} train / {counts['val']} validation / {counts['test']} test "
        "10-s clips composed from real Tux Paint recordings and pictures (source combinations "
        "never repeat across splits). Wall time: "
        f"{elapsed_s / 60:.1f} min on {_device()}.",
        "",
        "## Results on the test clips (audio only, metrics x100, vocab as a count)",
        "",
        results_markdown(runs, difference),
        "",
        "Src-F1: F1 of the sources each caption names against the sources mixed into the clip "
        "(micro-averaged over clips; names and synonyms from `sources.csv`); Src-F1 faint: the "
        f"same on the {int(runs[0].scores.get('source_n_faint_clips', 0))} clips with a faint "
        "source. " + _backbones_sentence(config) + " Both systems have the same data and budget; "
        "`multi2cap` saw the frames during pre-training only, `audio_only_baseline` never did. "
        "The stage-0 audio tagger alone names the test clips' sources with F1 "
        f"{100 * tagger['source_f1']:.1f} (faint subset {100 * tagger['source_f1_faint']:.1f}): "
        "what the frozen encoder knows. Not comparable with the paper's numbers (different data, "
        "model size and scale).",
        "",
    ]
    if len(outcomes) > 1:
        lines += [
            f"## Over {len(outcomes)} training seeds (same scenes)",
            "",
            seeds_markdown(outcomes, difference),
            "",
        ]
    if before_after(outcomes):
        lines += [
            "## Preference tuning (DPO on each model's own candidates)",
            "",
            "Before: the fine-tuned checkpoint (the rows above); after: the same model after the "
            "preference stage (`runs/<system>/preference/`: candidates, pairs and logs), "
            "captioned the same way on the same test clips. Recipe and reading: docs/demo.md.",
            "",
            before_after_markdown(outcomes),
            "",
        ]
    lines += [
        "![metrics](metrics.png)",
        "",
        "![losses](loss_curves.png)",
        "",
        "## Probes of the grounding tokens (paper Table 4 and Figure 6, test clips)",
        "",
        "On the pre-trained `multi2cap` checkpoint, through the learned alignment projections "
        "(definitions in docs/probes.md; CLIP-score columns need a real CLIP model and are empty "
        "here). Tiny backbones and small data: compare the ordering of the rows with the "
        "paper's, not the values.",
        "",
        probes,
        "",
        "![t-SNE](probes/tsne.png)",
        "",
        "## VggCaps-style training captions (first three)",
        "",
        *[f"- `{r.id}` ({r.category}): {r.captions[0]}" for r in vggcaps],
        "",
        "## Five test clips",
        "",
    ]
    for example in _examples(runs, scenes, manifests["test"]):
        lines.append(
            f"**{example['id']}** — picture: {example['picture']}; heard: {example['heard']}"
        )
        lines.append("")
        for name, caption in example["captions"].items():
            lines.append(f"- {name}: {caption}")
        lines.append(f"- references: {' / '.join(example['references'])}")
        lines.append("")
    lines += [
        "## Where the time went",
        "",
        *[f"- {stage}: {seconds:.0f} s" for stage, seconds in timings.items()],
        "",
        "## Files",
        "",
        "- `results.json`: every score above in aac-metrics' raw scale, the probe, wall times.",
        "- `captions.csv`: every test clip, both systems' captions, references, picture, audio.",
        "- `backbones/`: the stage-0 backbones (`audio_ced/`, `vision_clip/`, `llm/`), ordinary "
        "folders the recipes load by path.",
        "- `runs/<system>/finetune/`: checkpoints (`multi2cap caption --checkpoint ...`), "
        "`recipe.yaml`, training logs.",
        "- `vggcaps/`: the builder's output (`vggcaps.jsonl`, `manifest.jsonl`, media).",
        "",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _backbones_sentence(config: DemoConfig) -> str:
    if config.backbones == "pretrained":
        return (
            "Decoder: the real SmolLM2-135M-Instruct (fp32, LoRA r 8 on q/v, audio prefix pooled "
            "to 4 tokens), for both systems; audio encoder and vision tower from stage 0 "
            "(pretrained in this run on the training split, each on its own modality)."
        )
    return (
        "Both systems start from the same stage-0 backbones (pretrained in this run on the "
        "training split, each on its own modality; the decoder a word-level LM)."
    )


def _device() -> str:
    import os

    return f"{os.cpu_count()} CPU cores"


def print_results(
    console: Console,
    config: DemoConfig,
    scenes: list[Scene],
    outcomes: list[SeedOutcome],
    report: Path,
) -> None:
    runs = outcomes[0].runs
    keys = _metric_keys(runs)
    difference = tagger_learnt(outcomes)
    for notice in notices(config, outcomes):
        console.print(f"[yellow]{escape(notice)}[/yellow]")
    # One row per metric: a column per system fits an 80-column terminal (a column per metric,
    # as report.md has, cut the system names to "aud…").
    table = Table(title="Test clips, captioned from audio alone (metrics x100)")
    table.add_column("metric")
    for run in runs:
        table.add_column(run.name, justify="right")
    table.add_column("[dim]stage-0 audio tagger[/dim]", justify="right")
    tagger = outcomes[0].tagger
    for key in keys:
        table.add_row(
            _label(key),
            *[_cell(key, run.scores[key]) for run in runs],
            _cell(key, tagger[key]) if key in tagger else "",
        )
    console.print(table)
    if len(outcomes) > 1:
        summary = seed_summary(outcomes)
        seeds = Table(title=f"Over {len(outcomes)} training seeds (x100, mean +- std)")
        seeds.add_column("metric")
        names = [run.name for run in runs]
        for name in names:
            seeds.add_column(name, justify="right", overflow="fold")
        if difference:
            seeds.add_column("difference", justify="right")
            seeds.add_column("per seed", justify="right")
        for key, entry in summary.items():
            cells = [f"{100 * entry[n]['mean']:.1f} +- {100 * entry[n]['std']:.1f}" for n in names]
            if difference:
                diff = entry["difference"]
                cells.append(f"{100 * diff['mean']:+.1f} +- {100 * diff['std']:.1f}")
                cells.append(", ".join(f"{100 * d:+.1f}" for d in diff["per_seed"]))
            seeds.add_row(_label(key), *cells)
        console.print(seeds)
    tuned = before_after(outcomes)
    if tuned:
        table = Table(title="Preference tuning: before -> after (x100, mean over seeds)")
        table.add_column("system")
        for key in PREFERENCE_KEYS:
            table.add_column(PREFERENCE_LABELS[key], justify="right")
        for name, entry in tuned.items():
            table.add_row(
                name,
                *[
                    f"{100 * entry[k]['before']['mean']:.1f} -> "
                    f"{100 * entry[k]['after']['mean']:.1f}"
                    for k in PREFERENCE_KEYS
                ],
            )
        console.print(table)
    examples = Table(title="Examples", show_lines=True)
    examples.add_column("clip")
    examples.add_column("picture / heard")
    for run in runs:
        examples.add_column(run.name, overflow="fold")
    examples.add_column("a reference")
    by_id = {s.id: s for s in scenes}
    for example_id in list(runs[0].captions)[:N_EXAMPLES]:
        scene = by_id[example_id]
        heard = ", ".join(
            p.name + (" (faint)" if p.faint else "") for p in scene.sources if p.audible
        )
        examples.add_row(
            example_id,
            f"{', '.join(scene.visible)}\n[dim]heard: {heard}[/dim]",
            *[run.captions[example_id] for run in runs],
            scene.references[0],
        )
    console.print(examples)
    console.print(f"Report: {report}")
