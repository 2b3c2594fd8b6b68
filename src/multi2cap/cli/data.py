"""`multi2cap data`: turn caption datasets into manifests."""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from multi2cap.cli.errors import bad_input
from multi2cap.data.readers import FORMATS, DatasetFormatError, prepare
from multi2cap.data.readers.common import NOT_FOUND, OUTSIDE_ROOT
from multi2cap.io import check_output

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

# Printed in full up to this many; the rest go to --missing-out.
SHOWN_MISSING = 10


DatasetFormat = StrEnum("DatasetFormat", {name: name for name in FORMATS})


def prepare_command(
    format: DatasetFormat = typer.Option(..., "--format", help="Dataset format."),
    root: Path = typer.Option(
        ..., "--root", help="Dataset folder (for vggsound/vggcaps also the CSV/JSONL file)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest JSONL to write."),
    split: list[str] | None = typer.Option(
        None, "--split", help="Keep only this split (repeatable); default: all."
    ),
    media: Path | None = typer.Option(
        None, "--media", help="vggsound/vggcaps: folder of the clips (searched recursively)."
    ),
    missing_out: Path | None = typer.Option(
        None,
        "--missing-out",
        help="Write the records left out (media missing, unreadable or outside the root) (JSONL).",
    ),
    check_media: bool = typer.Option(
        True,
        "--check-media/--no-check-media",
        help="Probe each media file's header; empty and unreadable files are left out.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit with 1 when any record was left out for its media."
    ),
) -> None:
    """Read a caption dataset and write its manifest; list the clips left out and why (media
    missing, unreadable, or a path leaving the dataset's folder)."""
    check_output(out, "file", "--out")
    if missing_out is not None:
        check_output(missing_out, "file", "--missing-out")
    try:
        what = "reading and probing" if check_media else "reading"
        with err_console.status(f"{what} {format.value} under {root} ..."):
            report = prepare(format.value, root, out, split, media, missing_out, check_media)
    except (DatasetFormatError, ValueError) as err:
        bad_input(str(err))

    table = Table(title=escape(f"{report.format} -> {report.out}"))
    table.add_column("split")
    table.add_column("records", justify="right")
    table.add_column("left out (media)", justify="right")
    missing_per_split = Counter(item.split for item in report.missing)
    for name in sorted(set(report.per_split) | set(missing_per_split)):
        table.add_row(name, str(report.per_split.get(name, 0)), str(missing_per_split[name]))
    console.print(table)
    console.print(
        escape(f"{report.records} records, {report.captions} captions written to {report.out}")
    )
    if report.duplicates:
        console.print(
            f"[yellow]{len(report.duplicates)} duplicate row(s) skipped[/yellow] "
            + escape(
                f"(first kept), e.g. {report.duplicates[0].id} at {report.duplicates[0].source}"
            )
        )
    if report.missing:
        kinds = Counter(_kind(item.reason) for item in report.missing)
        console.print(
            f"[yellow]{len(report.missing)} record(s) left out: "
            + ", ".join(f"{kind} ({n})" for kind, n in kinds.items())
            + "[/yellow]"
            + (escape(f" (all listed in {report.missing_out})") if report.missing_out else "")
        )
        for item in report.missing[:SHOWN_MISSING]:
            console.print(
                escape(f"  {item.id} [{item.split}]: {item.path}: {item.reason}  ({item.source})")
            )
        if len(report.missing) > SHOWN_MISSING:
            console.print(f"  ... and {len(report.missing) - SHOWN_MISSING} more")
        if strict:
            raise typer.Exit(1)


def _kind(reason: str) -> str:
    """The summary line's group for a `MissingMedia.reason`."""
    if reason == NOT_FOUND:
        return "media missing"
    if reason.startswith(OUTSIDE_ROOT):
        return "path outside the dataset root"
    return "media unreadable"


def register(app: typer.Typer) -> None:
    """Add the `data` command group to the top-level app."""
    data_app = typer.Typer(help="Caption datasets: readers into manifests.", no_args_is_help=True)
    data_app.command("prepare")(prepare_command)
    app.add_typer(data_app, name="data")
