"""`multi2cap assets download`: fetch the metric assets no Python registry ships (parsing and
printing only; the work is in `multi2cap.metrics.install`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

assets_app = typer.Typer(
    help="Metric assets that no Python registry ships (SPICE's CoreNLP jars, SBERT, FENSE).",
    no_args_is_help=True,
)


class AssetChoice(StrEnum):
    spice = "spice"
    sbert = "sbert"
    fense = "fense"
    all = "all"


@assets_app.command("download")
def download(
    asset: AssetChoice = typer.Argument(
        AssetChoice.all,
        help="spice: Stanford CoreNLP 3.6.0 jars (Maven Central); sbert: "
        "paraphrase-TinyBERT-L6-v2 (Hugging Face hub); fense: the FENSE error detector "
        "(GitHub release) and its base BERT's config and tokenizer (hub); all: the three.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        "--dir",
        help="Assets folder (default: $MULTI2CAP_ASSETS_DIR, else ~/.cache/multi2cap/assets, "
        "which the metrics and `multi2cap info` search).",
    ),
    maven_url: str = typer.Option(
        "https://repo1.maven.org/maven2",
        "--maven-url",
        help="Base of a Maven repository layout (a mirror of Maven Central).",
    ),
    fense_url: str = typer.Option(
        "https://github.com",
        "--fense-url",
        help="Base of the FENSE release layout (a mirror of github.com).",
    ),
    hf_endpoint: str | None = typer.Option(
        None, "--hf-endpoint", help="Hugging Face hub or mirror (default: $HF_ENDPOINT, else hub)."
    ),
    retries: int = typer.Option(
        5, "--retries", min=1, help="Tries per file; waits 1, 2, 4, ... s between them."
    ),
    force: bool = typer.Option(False, "--force", help="Download again what is already there."),
) -> None:
    """Download metric assets once: resumable, verified, never half-installed."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from multi2cap.download import DownloadError, Retry
    from multi2cap.metrics.install import ASSETS, Installed, Sources, install
    from multi2cap.metrics.resources import ASSETS_DIR_ENV, assets_dir

    console = Console()
    err = Console(stderr=True)
    root = out or assets_dir()
    chosen = list(ASSETS) if asset is AssetChoice.all else [asset.value]
    sources = Sources(maven_url=maven_url, fense_url=fense_url, hf_endpoint=hf_endpoint)

    def report(label: str, outcome: Installed | DownloadError) -> None:
        if isinstance(outcome, DownloadError):
            # soft_wrap: an address is never broken across lines.
            err.print(f"[red]{escape(label)} failed:[/red] {escape(str(outcome))}", soft_wrap=True)
        elif outcome.skipped:
            where = escape(str(outcome.paths[0]))
            console.print(f"{escape(label)}: already there, {where}", soft_wrap=True)
        else:
            where = escape(", ".join(str(p) for p in outcome.paths))
            console.print(f"[green]{escape(label)} installed:[/green] {where}", soft_wrap=True)

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bars:
        tasks: dict[str, TaskID] = {}

        def progress(url: str, done: int, total: int | None) -> None:
            if url not in tasks:
                tasks[url] = bars.add_task(url.rsplit("/", 1)[-1], total=total)
            bars.update(tasks[url], completed=done, total=total)

        results = install(
            chosen,
            root=root,
            sources=sources,
            retry=Retry(attempts=retries),
            force=force,
            progress=progress,
            report=report,
        )
    failed = [name for name, outcome in results.items() if isinstance(outcome, DownloadError)]
    if len(failed) < len(results) and out is not None and out.resolve() != assets_dir().resolve():
        console.print(
            f"Set {ASSETS_DIR_ENV}={escape(str(out))} so that the metrics and `multi2cap info` "
            "find these assets.",
            soft_wrap=True,
        )
    if failed:
        err.print(f"{len(failed)} of {len(results)} asset(s) failed: {', '.join(failed)}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `multi2cap assets` to the top-level app."""
    app.add_typer(assets_app, name="assets")
