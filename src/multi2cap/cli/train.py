"""`multi2cap train`: run a training recipe (parsing only; the loop is `multi2cap.train.train`)."""

from __future__ import annotations

from pathlib import Path

import typer

from multi2cap.cli.errors import bad_input
from multi2cap.recipes import recipe_names


def register(app: typer.Typer) -> None:
    """Add `multi2cap train` to the top-level app."""
    app.command(
        "train",
        help=(
            "Pre-train or fine-tune Multi2Cap from a recipe (one shipped with multi2cap, by "
            "name, or a YAML file). Extra KEY=VALUE arguments override recipe fields by dotted "
            "path, e.g. optim.lr=1e-4. Multi-GPU: torchrun --nproc_per_node N -m multi2cap "
            "train --config ... (DDP; add runtime.strategy=fsdp to shard the model with FSDP2)."
        ),
    )(train_command)


def train_command(
    overrides: list[str] | None = typer.Argument(
        None, metavar="[KEY=VALUE]...", help="Dotted overrides of recipe fields."
    ),
    config: Path = typer.Option(
        ...,
        "--config",
        "-c",
        help=f"A recipe shipped with multi2cap ({', '.join(recipe_names())}) or a YAML file.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest checkpoint in the output folder."
    ),
    output_dir: Path | None = typer.Option(
        None, "--out", "-o", "--output-dir", help="Run folder (overrides runtime.output_dir)."
    ),
) -> None:
    """Parse, validate, run and summarise; expected errors exit 2 without a traceback."""
    import logging

    from rich.console import Console

    from multi2cap.train import ConfigError, load_train_config, train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        recipe = load_train_config(config, overrides or [], output_dir=output_dir)
        result = train(recipe, resume=resume)
    except (ConfigError, OSError, ValueError) as err:  # bad recipe, data, asset or hub id
        bad_input(str(err))
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one summary per run, not one per device
        return
    out = Console()
    if result.stop_reason is not None:
        out.print(
            f"[yellow]stopped[/yellow] ({result.stop_reason}) after step {result.global_step}; "
            f"checkpoint in {result.output_dir / 'checkpoints'}: continue with --resume"
        )
        return
    out.print(
        f"[green]done[/green]: {result.global_step} steps, {result.epochs_completed} epochs; "
        f"final checkpoint {result.final_checkpoint}"
    )
    if result.best_checkpoint is not None:
        out.print(
            f"best checkpoint {result.best_checkpoint} ({result.best_metric} = "
            f"{result.best_score:.4f})"
        )
    if result.skipped_clips:
        out.print(
            f"[yellow]{result.skipped_clips} unreadable clip(s) skipped[/yellow]: ids in "
            f"{result.output_dir / 'skipped.jsonl'}, reasons in the log"
        )
    out.print(f"logs: {result.output_dir / 'train_log.csv'}, {result.output_dir / 'tensorboard'}")
