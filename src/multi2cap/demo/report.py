"""The demo's outputs: `report.md`, `captions.csv`, loss curves and a metrics chart (PNG)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from multi2cap.data.manifest import read_manifest
from multi2cap.io import atomic_write_text
from multi2cap.metrics import PAPER_LABELS

if TYPE_CHECKING:
    from multi2cap.demo.run import DemoConfig, ModelRun
    from multi2cap.demo.scenes import Scene

N_EXAMPLES = 5


def _metric_keys(runs: list[ModelRun]) -> list[str]:
    from multi2cap.demo.run import EVAL_METRICS

    return [k for k in EVAL_METRICS if all(k in r.scores for r in runs)]


def _cell(key: str, value: float) -> str:
    return f"{value:.0f}" if key == "vocab" else f"{100 * value:.1f}"


def results_markdown(runs: list[ModelRun]) -> str:
    """One row per system, metrics x100 as the paper prints them (vocab as a count)."""
    keys = _metric_keys(runs)
    labels = PAPER_LABELS
    lines = [
        "| system | " + " | ".join(labels.get(k, k) for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for run in runs:
        lines.append(f"| {run.name} | " + " | ".join(_cell(k, run.scores[k]) for k in keys) + " |")
    if len(runs) == 2:
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
    labels = PAPER_LABELS
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    for i, run in enumerate(runs):
        values = [100 * run.scores[k] for k in keys]
        bars = ax.bar(x + i * width, values, width, label=run.name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x + width * (len(runs) - 1) / 2, [labels.get(k, k) for k in keys])
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


def write_report(
    config: DemoConfig,
    scenes: list[Scene],
    manifests: dict[str, Path],
    runs: list[ModelRun],
    elapsed_s: float,
    timings: dict[str, float],
    probes: str,
) -> Path:
    out = config.workdir
    _plot_losses(runs, out / "loss_curves.png")
    _plot_metrics(runs, out / "metrics.png")
    write_captions_csv(runs, scenes, manifests["test"], out / "captions.csv")
    counts = {split: sum(s.split == split for s in scenes) for split in ("train", "val", "test")}
    vggcaps = read_manifest(manifests["pretrain"])[:3]
    lines = [
        "# multi2cap demo report",
        "",
        f"Scenes: {counts['train']} train / {counts['val']} validation / {counts['test']} test "
        "10-s clips composed from real Tux Paint recordings and pictures (source combinations "
        "never repeat across splits). Wall time: "
        f"{elapsed_s / 60:.1f} min on {_device()}.",
        "",
        "## Results on the test clips (audio only, metrics x100, vocab as a count)",
        "",
        results_markdown(runs),
        "",
        "Both systems have the same tiny random backbones, the same data and the same budget; "
        "`multi2cap` saw the frames during pre-training only, `audio_only_baseline` never did. "
        "These numbers come from this run and are not comparable with the paper's (different "
        "data, model size and scale).",
        "",
        "![metrics](metrics.png)",
        "",
        "![losses](loss_curves.png)",
        "",
        "## Probes of the grounding tokens (paper Table 4 and Figure 6, test clips)",
        "",
        "On the pre-trained `multi2cap` checkpoint, through the learned alignment projections "
        "(definitions in docs/probes.md; CLIP-score columns need a real CLIP model and are empty "
        "here). Tiny random backbones and small data: compare the ordering of the rows with the "
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
        "- `captions.csv`: every test clip, both systems' captions, references, picture, audio.",
        "- `runs/<system>/finetune/`: checkpoints (`multi2cap caption --checkpoint ...`), "
        "`recipe.yaml`, training logs.",
        "- `vggcaps/`: the builder's output (`vggcaps.jsonl`, `manifest.jsonl`, media).",
        "",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _device() -> str:
    import os

    return f"{os.cpu_count()} CPU cores"


def print_results(
    console: Console,
    config: DemoConfig,
    scenes: list[Scene],
    runs: list[ModelRun],
    report: Path,
) -> None:
    keys = _metric_keys(runs)
    labels = PAPER_LABELS
    table = Table(title="Test clips, captioned from audio alone (metrics x100)")
    table.add_column("system")
    for key in keys:
        table.add_column(labels.get(key, key), justify="right")
    for run in runs:
        table.add_row(run.name, *[_cell(k, run.scores[k]) for k in keys])
    console.print(table)
    examples = Table(title="Examples", show_lines=True)
    examples.add_column("clip")
    examples.add_column("picture / heard")
    for run in runs:
        examples.add_column(run.name)
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
