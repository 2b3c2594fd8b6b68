"""`multi2cap analyze model ...`: grounding probes and ablations of trained Multi2Cap models.

Parsing only; the analyses are `multi2cap.analysis.probes` (fidelity), `.tsne` (t-SNE),
`.k_sweep` (K sweep) and `.ablations` (alpha/beta grid, augmentation, grounding vs baseline).
Every command writes CSV + markdown tables (and figures) under `--out`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from multi2cap.cli.backbone_option import BACKBONE_OPTION, backbone_overrides
from multi2cap.cli.errors import bad_input
from multi2cap.cli.vocabulary import metrics_help

model_app = typer.Typer(
    help="Probe and ablate trained Multi2Cap models (paper Tables 4, 5, 8, 9, Figure 6).",
    no_args_is_help=True,
)
_console = Console(stderr=True)

_OUT = typer.Option(..., "--out", "-o", help="Folder for the tables (CSV + markdown) and figures.")
_DEVICE = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda:0.")
_BATCH = typer.Option(16, "--batch-size", min=1, help="Clips per forward pass.")


@contextmanager
def _expected_errors() -> Iterator[None]:
    """Bad input (missing files, invalid recipes, unusable checkpoints): message, exit 2."""
    from multi2cap.train import ConfigError

    try:
        yield
    except (ConfigError, FileNotFoundError, ValueError, OSError) as err:
        bad_input(str(err))


def _log(message: str) -> None:
    """One progress line per event, never wrapped (logs are grepped)."""
    _console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", soft_wrap=True)


def _written(files: list[Path]) -> None:
    for path in files:
        _console.print(f"wrote {path}")


def _records(manifest: Path) -> list[Any]:
    from multi2cap.data.manifest import read_manifest

    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    records = read_manifest(manifest)
    if not records:
        raise ValueError(f"{manifest} holds no records")
    return records


def _probe_set(
    checkpoint: Path,
    manifest: Path,
    batch_size: int,
    seed: int,
    device: str,
    backbone: list[str] | None,
) -> Any:
    from rich.progress import Progress

    from multi2cap.analysis.probes import collect_probe_set, load_probe_model

    backbones = backbone_overrides(backbone)
    records = _records(manifest)
    model = load_probe_model(checkpoint, device=device, backbones=backbones)
    with Progress(console=_console, transient=True) as progress:
        task = progress.add_task("embedding clips", total=len(records))
        return collect_probe_set(
            model,
            records,
            batch_size=batch_size,
            seed=seed,
            on_batch=lambda done: progress.update(task, completed=done),
        )


@model_app.command("fidelity")
def fidelity_command(
    checkpoint: Path = typer.Argument(..., help="Multi2Cap checkpoint folder (with grounding)."),
    manifest: Path = typer.Argument(..., help="Manifest whose records have frames (`image`)."),
    out: Path = _OUT,
    clip_model: str | None = typer.Option(
        None,
        "--clip-model",
        help="Full CLIP model (hub id or folder) for the CLIP score, e.g. "
        "openai/clip-vit-large-patch14; without it the CLIP columns are empty.",
    ),
    prompt: str = typer.Option(
        "a photo of {category}", "--prompt", help="Category prompt; {category} is replaced."
    ),
    ridge_alpha: float = typer.Option(1.0, "--ridge-alpha", help="Ridge penalty of the CLIP map."),
    seed: int = typer.Option(0, "--seed", help="Seeds the random vectors and the CLIP folds."),
    batch_size: int = _BATCH,
    device: str = _DEVICE,
    backbone: list[str] | None = BACKBONE_OPTION,
) -> None:
    """Table 4: R@1/R@5 against V_cls, CLIP score and attention entropy of g, g_hat, a_mean and
    random vectors."""
    from multi2cap.analysis.probes import ClipJointSpace, fidelity, write_fidelity

    if "{category}" not in prompt:
        bad_input("--prompt must contain {category}")
    with _expected_errors():
        probe = _probe_set(checkpoint, manifest, batch_size, seed, device, backbone)
        clip = ClipJointSpace(clip_model, device=device) if clip_model else None
        result = fidelity(probe, clip, prompt=prompt, ridge_alpha=ridge_alpha, seed=seed)
        files = write_fidelity(result, out, title=str(checkpoint))
    for row in result.rows:
        if row.r1 is not None:
            _console.print(f"{row.kind:>7}: R@1 {row.r1:5.1f}  R@5 {row.r5:5.1f}")
    _written(files)


@model_app.command("tsne")
def tsne_command(
    checkpoint: Path = typer.Argument(..., help="Multi2Cap checkpoint folder (with grounding)."),
    manifest: Path = typer.Argument(..., help="Manifest whose records have frames (`image`)."),
    out: Path = _OUT,
    by_category: bool = typer.Option(
        False, "--by-category", help="Add a panel coloured by the records' categories."
    ),
    perplexity: float | None = typer.Option(None, "--perplexity", help="Default min(30, (n-1)/3)."),
    seed: int = typer.Option(0, "--seed", help="Seeds t-SNE and the random vectors."),
    batch_size: int = _BATCH,
    device: str = _DEVICE,
    backbone: list[str] | None = BACKBONE_OPTION,
) -> None:
    """Figure 6: t-SNE of g, g_hat, a_mean, random vectors and V_cls in the L_align space."""
    from multi2cap.analysis.tsne import write_tsne

    with _expected_errors():
        probe = _probe_set(checkpoint, manifest, batch_size, seed, device, backbone)
        with _console.status("t-SNE"):
            files = write_tsne(
                probe, out, by_category=by_category, seed=seed, perplexity=perplexity
            )
    _written(files)


# ------------------------------------------------------------------------------ training runners
def _spec(
    recipe: Path | None,
    finetune_recipe: Path | None,
    eval_manifest: Path,
    overrides: list[str] | None,
    finetune_overrides: list[str] | None,
    metrics: str,
    num_beams: int | None,
    max_new_tokens: int | None,
    batch_size: int,
    device: str,
) -> Any:
    from multi2cap.analysis.ablations import AblationSpec

    if recipe is None:
        raise ValueError("--recipe (the base pre-training recipe) is required to train cells")
    for path in (recipe, finetune_recipe, eval_manifest):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"not found: {path}")
    return AblationSpec(
        pretrain_recipe=recipe,
        eval_manifest=eval_manifest,
        overrides=list(overrides or []),
        finetune_recipe=finetune_recipe,
        finetune_overrides=list(finetune_overrides or []),
        metrics=_resolve(metrics),
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
    )


_RECIPE = typer.Option(None, "--recipe", help="Base pre-training recipe (YAML).")
_FT_RECIPE = typer.Option(
    None, "--finetune-recipe", help="Fine-tuning recipe run after pre-training (optional)."
)
_EVAL = typer.Option(..., "--eval-manifest", help="Captioned manifest for the caption metrics.")
_SET = typer.Option(
    None,
    "--set",
    help="KEY=VALUE recipe override for every stage (repeatable), e.g. "
    "data.train_manifest=train.jsonl.",
)
_FT_SET = typer.Option(None, "--finetune-set", help="KEY=VALUE override for fine-tuning only.")
_METRICS = typer.Option(
    "bleu_1,bleu_4,rouge_l,meteor,cider_d,spice",
    "--metrics",
    help=metrics_help() + " Unavailable ones are reported, not fatal.",
)
_BEAMS = typer.Option(None, "--num-beams", help="Beam size (default: the model's).")
_NEW = typer.Option(None, "--max-new-tokens", help="Caption length cap (default: the model's).")
_EVAL_BATCH = typer.Option(8, "--eval-batch-size", min=1, help="Clips per captioning batch.")


def _run(build: Callable[[], list[Path]]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with _expected_errors():
        files = build()
    _written(files)


@model_app.command("k-sweep")
def k_sweep_command(
    out: Path = _OUT,
    eval_manifest: Path = _EVAL,
    probe_manifest: Path = typer.Option(
        ..., "--probe-manifest", help="Manifest with frames for V-CLS R@1 and the cost clip."
    ),
    k: list[int] | None = typer.Option(
        None,
        "--k",
        help="K values to train (repeatable); default 1, 4, 16, 64, 256 (the paper's, square "
        "grids of the patch map) unless --checkpoint is given.",
    ),
    pool: str = typer.Option(
        "space",
        "--pool",
        help="grounding.pool of the trained cells: space (the paper's reading, K must be a "
        "square) or time. Given checkpoints keep their own.",
    ),
    checkpoint: list[Path] | None = typer.Option(
        None, "--checkpoint", help="Evaluate these checkpoints instead of training (repeatable)."
    ),
    recipe: Path | None = _RECIPE,
    finetune_recipe: Path | None = _FT_RECIPE,
    overrides: list[str] | None = _SET,
    finetune_overrides: list[str] | None = _FT_SET,
    metrics: str = _METRICS,
    num_beams: int | None = _BEAMS,
    max_new_tokens: int | None = _NEW,
    eval_batch_size: int = _EVAL_BATCH,
    cost_seconds: float = typer.Option(10.0, "--cost-seconds", help="Clip length for cost, s."),
    latency_runs: int = typer.Option(5, "--latency-runs", min=1, help="Timed runs (median)."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed runs before timing."),
    device: str = _DEVICE,
    backbone: list[str] | None = BACKBONE_OPTION,
) -> None:
    """Table 5: caption metrics, V-CLS R@1, FLOPs (with the slope per grounding token beside
    the paper's) and latency per K (trained or given)."""
    from multi2cap.analysis import ablations as ab
    from multi2cap.analysis import k_sweep as ks
    from multi2cap.model.config import GROUNDING_POOLS, is_square

    if pool not in GROUNDING_POOLS:
        bad_input(f"--pool must be one of {', '.join(GROUNDING_POOLS)}, got {pool!r}")

    def build() -> list[Path]:
        if k and checkpoint:
            raise ValueError("give either --k values to train or --checkpoint folders, not both")
        if pool == "space" and any(not is_square(value) for value in k or ()):
            raise ValueError(
                f"--k {', '.join(map(str, k or ()))}: under --pool space every K must be a "
                "perfect square (1, 4, 16, 64, 256, ...: a sqrt(K) x sqrt(K) pooling of the "
                "patch grid); --pool time takes any K"
            )
        backbones = backbone_overrides(backbone)
        if backbones and not checkpoint:
            raise ValueError("--backbone applies to given --checkpoint folders only")
        cost = ks.CostSettings(
            probe_manifest=probe_manifest,
            seconds=cost_seconds,
            warmup=warmup,
            runs=latency_runs,
            max_new_tokens=max_new_tokens,
            device=device,
            backbones=backbones,
        )

        def measure(path: Path) -> dict[str, Any]:
            return ks.measure_cost(path, cost)

        if checkpoint:
            spec = ab.AblationSpec(
                eval_manifest=eval_manifest,
                metrics=_resolve(metrics),
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                batch_size=eval_batch_size,
                device=device,
                backbones=backbones,
            )
            results = ks.evaluate_checkpoints(spec, checkpoint, out, measure=measure, log=_log)
        else:
            spec = _spec(
                recipe,
                finetune_recipe,
                eval_manifest,
                overrides,
                finetune_overrides,
                metrics,
                num_beams,
                max_new_tokens,
                eval_batch_size,
                device,
            )
            cells = ks.k_cells(k or ks.PAPER_KS, pool)  # type: ignore[arg-type]
            results = ab.run_cells(spec, cells, out, measure=measure, log=_log)
        files = ks.write_k_sweep(results, out)
        slope = ks.sweep_slopes(results)["gflops_grounding"]
        measured = "n/a (one K)" if slope is None else f"{slope:.3g}"
        _console.print(
            f"grounding path: {measured} GFLOPs per grounding token "
            f"(paper, Table 5: {ks.paper_slope()[0]:.4f})"
        )
        return files

    _run(build)


def _resolve(metrics: str) -> tuple[str, ...]:
    from multi2cap.metrics import resolve_metrics

    return resolve_metrics(metrics)


@model_app.command("grid")
def grid_command(
    out: Path = _OUT,
    eval_manifest: Path = _EVAL,
    alpha: list[float] = typer.Option(..., "--alpha", help="alpha values (repeatable)."),
    beta: list[float] = typer.Option(..., "--beta", help="beta values (repeatable)."),
    table_metric: list[str] | None = typer.Option(
        None, "--table-metric", help="Metrics shown per grid cell (default cider_d and spice)."
    ),
    recipe: Path | None = _RECIPE,
    finetune_recipe: Path | None = _FT_RECIPE,
    overrides: list[str] | None = _SET,
    finetune_overrides: list[str] | None = _FT_SET,
    metrics: str = _METRICS,
    num_beams: int | None = _BEAMS,
    max_new_tokens: int | None = _NEW,
    eval_batch_size: int = _EVAL_BATCH,
    device: str = _DEVICE,
) -> None:
    """Table 8: train every (alpha, beta) cell (resumable) and tabulate CIDEr / SPICE."""
    from multi2cap.analysis import ablations as ab

    def build() -> list[Path]:
        spec = _spec(
            recipe,
            finetune_recipe,
            eval_manifest,
            overrides,
            finetune_overrides,
            metrics,
            num_beams,
            max_new_tokens,
            eval_batch_size,
            device,
        )
        shown = table_metric or ["cider_d", "spice"]
        unknown = [m for m in shown if m not in spec.metrics]
        if unknown:
            raise ValueError(f"--table-metric {unknown} not among --metrics {list(spec.metrics)}")
        results = ab.run_cells(spec, ab.grid_cells(alpha, beta), out, log=_log)
        return ab.write_grid(results, out, shown)

    _run(build)


@model_app.command("augment")
def augment_command(
    out: Path = _OUT,
    eval_manifest: Path = _EVAL,
    recipe: Path | None = _RECIPE,
    finetune_recipe: Path | None = _FT_RECIPE,
    overrides: list[str] | None = _SET,
    finetune_overrides: list[str] | None = _FT_SET,
    metrics: str = _METRICS,
    num_beams: int | None = _BEAMS,
    max_new_tokens: int | None = _NEW,
    eval_batch_size: int = _EVAL_BATCH,
    device: str = _DEVICE,
) -> None:
    """Table 9: the same recipe without and with the waveform augmentations (resumable)."""
    from multi2cap.analysis import ablations as ab

    def build() -> list[Path]:
        spec = _spec(
            recipe,
            finetune_recipe,
            eval_manifest,
            overrides,
            finetune_overrides,
            metrics,
            num_beams,
            max_new_tokens,
            eval_batch_size,
            device,
        )
        return ab.write_augment(ab.run_cells(spec, ab.augment_cells(), out, log=_log), out)

    _run(build)


@model_app.command("grounding-vs-baseline")
def grounding_vs_baseline_command(
    out: Path = _OUT,
    eval_manifest: Path = _EVAL,
    seed: list[int] = typer.Option([0, 1, 2], "--seed", help="Seeds (repeatable)."),
    recipe: Path | None = _RECIPE,
    finetune_recipe: Path | None = _FT_RECIPE,
    overrides: list[str] | None = _SET,
    finetune_overrides: list[str] | None = _FT_SET,
    metrics: str = _METRICS,
    num_beams: int | None = _BEAMS,
    max_new_tokens: int | None = _NEW,
    eval_batch_size: int = _EVAL_BATCH,
    device: str = _DEVICE,
) -> None:
    """Visual grounding vs the audio-only baseline on the same recipe, per seed: difference per
    metric with its mean and spread (resumable)."""
    from multi2cap.analysis import ablations as ab

    def build() -> list[Path]:
        spec = _spec(
            recipe,
            finetune_recipe,
            eval_manifest,
            overrides,
            finetune_overrides,
            metrics,
            num_beams,
            max_new_tokens,
            eval_batch_size,
            device,
        )
        results = ab.run_cells(spec, ab.baseline_cells(seed), out, log=_log)
        comparisons = ab.compare_arms(results)
        for c in comparisons:
            spread = "n/a" if c.diff_std is None else f"{100 * c.diff_std:.2f}"
            _console.print(f"{c.metric}: Δ {100 * c.diff_mean:+.2f} (std {spread}) x100")
        return ab.write_comparison(comparisons, out)

    _run(build)


def register(app: typer.Typer) -> None:
    """Add `model` to the `analyze` group (register after `multi2cap.cli.analyze`; `app` itself
    is not touched). Registering twice is harmless."""
    from multi2cap.cli.analyze import analyze_app

    if not any(group.typer_instance is model_app for group in analyze_app.registered_groups):
        analyze_app.add_typer(model_app, name="model")
