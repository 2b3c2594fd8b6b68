"""`multi2cap caption`: caption audio files or folders with a trained checkpoint (parsing and
printing only; the work is in `multi2cap.model.inference`)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from multi2cap.cli.backbone_option import BACKBONE_OPTION, backbone_overrides
from multi2cap.cli.errors import EXIT_ITEMS_FAILED, bad_input
from multi2cap.metrics.clap import CLAP_MODEL_ENV
from multi2cap.model.caption_files import CaptionFormat

if TYPE_CHECKING:
    from multi2cap.model.rerank import ClapReranker

Rerank = StrEnum("Rerank", {name: name for name in ("none", "clap")})


def caption_command(
    inputs: list[Path] = typer.Argument(..., help="Audio/video files or folders (recursive)."),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", "-c", help="Checkpoint folder (config.yaml ...) or hub id org/name."
    ),
    num_beams: int | None = typer.Option(
        None,
        "--num-beams",
        "--beams",
        min=1,
        help="Beam size (default: the checkpoint's config; 1 = greedy).",
    ),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Files per batch."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Longest caption in tokens (default: config)."
    ),
    output: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        "--output",
        help="Write the captions here, in the format its extension names (.csv, .json, .jsonl) "
        "or --format (else print a table).",
    ),
    fmt: CaptionFormat | None = typer.Option(
        None,
        "--format",
        help="csv: file_name,caption,path; json: an array of those objects; jsonl: one per "
        "line; dcase: the DCASE submission CSV file_name,caption_predicted. Without --out, "
        "printed in this format.",
    ),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda:0."),
    backbone: list[str] | None = BACKBONE_OPTION,
    rerank: Rerank = typer.Option(
        "none",
        "--rerank",
        help="Re-rank candidates: `none` (the top beam) or `clap` (one beam search returns "
        "--candidates hypotheses; a CLAP model picks the one closest to the audio).",
    ),
    clap_model: str | None = typer.Option(
        None,
        "--clap-model",
        help="transformers CLAP model (hub id in the local cache, or folder) for --rerank clap "
        f"(env {CLAP_MODEL_ENV}).",
    ),
    candidates: int | None = typer.Option(
        None, "--candidates", min=1, help="Beam hypotheses per clip for --rerank (default 8)."
    ),
    sampled: int | None = typer.Option(
        None, "--sampled", min=0, help="Sampled candidates added per clip for --rerank (default 0)."
    ),
    rerank_scores: bool = typer.Option(
        False,
        "--rerank-scores",
        help="With --rerank: keep the CLAP score, ties and every candidate's score in the output "
        "(CSV columns clap_score, tied, candidates; a column in the printed table).",
    ),
) -> None:
    """Caption audio from sound alone (no image needed), with a Multi2Cap checkpoint.

    Every input is captioned or reported: unreadable files and folders without audio are listed
    (and written to `<output stem>.failures.jsonl`), and the exit code is 1 when any failed.
    """
    from multi2cap.fsnames import printable
    from multi2cap.io import check_output
    from multi2cap.model.caption_files import caption_format, format_captions, write_captions

    if output is not None:
        check_output(output, "file", "--out")  # before torch loads and the model
    try:  # a wrong name fails at once, not after the captioning
        if output is not None or fmt is not None:
            fmt = caption_format(output, fmt)
    except ValueError as error:
        bad_input(str(error))
    from multi2cap.model.inference import caption_files, collect_audio_files
    from multi2cap.model.multi2cap import Multi2Cap

    console = Console()
    err = Console(stderr=True)
    if rerank.value == "none" and (clap_model, candidates, sampled) != (None, None, None):
        bad_input("--clap-model, --candidates and --sampled apply with --rerank clap only")
    if rerank.value == "none" and rerank_scores:
        bad_input("--rerank-scores needs --rerank clap")
    collected = collect_audio_files(inputs)
    if not collected.files:
        bad_input("; ".join(p.error or "" for p in collected.problems) or "no input files")
    reranker = None
    if rerank.value == "clap":
        reranker = clap_reranker(clap_model, candidates, sampled, num_beams, device)
        num_beams = None  # the reranker's config holds the beam width
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
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            on_progress=lambda n: progress.advance(task, n),
            reranker=reranker,
        )

    results = collected.problems + results
    failed = [r for r in results if r.error is not None]
    if output is not None:
        failures = write_captions(results, output, fmt, rerank_scores=rerank_scores)
        console.print(
            escape(f"wrote {len(results) - len(failed)} captions ({fmt}) to {printable(output)}")
        )
        if failures is not None:
            err.print(escape(f"failures listed in {printable(failures)}"))
    elif fmt is not None:  # a caption file on stdout, nothing else there (pipes, redirects)
        sys.stdout.write(format_captions(results, fmt, rerank_scores=rerank_scores))
        sys.stdout.flush()
    else:
        table = Table("file", "caption", *(["CLAP score", "tied with"] if rerank_scores else []))
        for item in results:
            if item.caption is not None:
                cells = [escape(printable(item.path)), escape(item.caption)]
                if rerank_scores and item.rerank is not None:
                    cells += [f"{item.rerank.score:.4f}", escape("; ".join(item.rerank.tied))]
                table.add_row(*cells)
        console.print(table)
    for item in failed:
        err.print(f"[yellow]skipped[/yellow] {escape(item.error or '')}")
    if failed:
        err.print(f"{len(failed)} of {len(results)} inputs could not be captioned")
        raise typer.Exit(EXIT_ITEMS_FAILED)


def clap_reranker(
    clap_model: str | None,
    candidates: int | None,
    sampled: int | None,
    beams: int | None,
    device: str,
) -> ClapReranker:
    """The reranker of `--rerank clap` (`caption`, `serve`), or a bad-input exit naming the
    option at fault."""
    from pydantic import ValidationError

    from multi2cap.metrics.clap import resolve_clap_model
    from multi2cap.model.rerank import ClapReranker, RerankConfig

    fields = {"candidates": candidates, "sampled": sampled, "num_beams": beams}
    try:
        config = RerankConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        problem = error.errors()[0]["msg"].removeprefix("Value error, ")
        bad_input(f"--rerank clap: {problem} (options --num-beams, --candidates)")
    try:
        return ClapReranker(resolve_clap_model(clap_model), config, device=device)
    except (FileNotFoundError, ValueError, OSError) as error:
        bad_input(f"--clap-model: {error}")


def register(app: typer.Typer) -> None:
    """Add `multi2cap caption` to the top-level app."""
    app.command("caption")(caption_command)
