"""`multi2cap caption`: caption audio files or folders with a trained checkpoint (parsing and
printing only; the work is in `multi2cap.model.inference`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from multi2cap.cli.backbone_option import BACKBONE_OPTION, backbone_overrides
from multi2cap.cli.errors import EXIT_ITEMS_FAILED, bad_input


def caption_command(
    inputs: list[Path] = typer.Argument(..., help="Audio/video files or folders (recursive)."),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", "-c", help="Checkpoint folder (config.yaml ...) or hub id org/name."
    ),
    beams: int | None = typer.Option(
        None, "--beams", min=1, help="Beam size (default: the checkpoint's config; 1 = greedy)."
    ),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Files per batch."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Longest caption in tokens (default: config)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write CSV `file_name,caption,path` here (else print)."
    ),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda:0."),
    backbone: list[str] | None = BACKBONE_OPTION,
) -> None:
    """Caption audio from sound alone (no image needed), with a Multi2Cap checkpoint.

    Every input is captioned or reported: unreadable files and folders without audio are listed
    (and written to `<output stem>.failures.jsonl`), and the exit code is 1 when any failed.
    """
    from multi2cap.fsnames import printable
    from multi2cap.model.inference import caption_files, collect_audio_files, write_captions
    from multi2cap.model.multi2cap import Multi2Cap

    console = Console()
    err = Console(stderr=True)
    collected = collect_audio_files(inputs)
    if not collected.files:
        bad_input("; ".join(p.error or "" for p in collected.problems) or "no input files")
    try:
        backbones = backbone_overrides(backbone)
        model = Multi2Cap.from_pretrained(checkpoint, device=device, backbones=backbones)
    except (FileNotFoundError, ValueError, OSError) as error:
        bad_input(str(error))

    progress = Progress(
        TextColumn("captioning"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(), console=err, transient=True,
    )  # fmt: skip
    with progress:
        task = progress.add_task("caption", total=len(collected.files))
        results = caption_files(
            model,
            collected.files,
            batch_size=batch_size,
            num_beams=beams,
            max_new_tokens=max_new_tokens,
            on_progress=lambda n: progress.advance(task, n),
        )

    results = collected.problems + results
    failed = [r for r in results if r.error is not None]
    if output is not None:
        failures = write_captions(results, output)
        console.print(escape(f"wrote {len(results) - len(failed)} captions to {printable(output)}"))
        if failures is not None:
            err.print(escape(f"failures listed in {printable(failures)}"))
    else:
        table = Table("file", "caption")
        for item in results:
            if item.caption is not None:
                table.add_row(escape(printable(item.path)), escape(item.caption))
        console.print(table)
    for item in failed:
        err.print(f"[yellow]skipped[/yellow] {escape(item.error or '')}")
    if failed:
        err.print(f"{len(failed)} of {len(results)} inputs could not be captioned")
        raise typer.Exit(EXIT_ITEMS_FAILED)


def register(app: typer.Typer) -> None:
    """Add `multi2cap caption` to the top-level app."""
    app.command("caption")(caption_command)
