"""`multi2cap analyze`: analyses of caption datasets (and, from other modules, of models).

`analyze_app` is the group; other CLI modules may add their own sub-groups to it, e.g.
`analyze_app.add_typer(model_app, name="model")`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from multi2cap.cli.errors import bad_input

analyze_app = typer.Typer(
    help="Dataset statistics (Table 1, Figures 2-4) and model analyses.", no_args_is_help=True
)
_console = Console(stderr=True)


@analyze_app.command("dataset")
def dataset(
    manifests: list[Path] = typer.Argument(..., help="One or more manifest JSONL files."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for report.md, stats.csv and figures."
    ),
    ratings: Path | None = typer.Option(
        None, "--ratings", help="CSV with columns rater,item,score (1-5) for Figure 4 (MOS)."
    ),
) -> None:
    """Table 1, readability and lexical diversity, word clouds and MOS for caption manifests."""
    from multi2cap.analysis.dataset_report import write_dataset_report
    from multi2cap.io import check_output

    check_output(out, "folder", "--out")
    try:
        with _console.status("analysing captions"):
            report = write_dataset_report(
                manifests, out, ratings=ratings, log=lambda message: _console.log(message)
            )
    except (FileNotFoundError, ValueError) as err:
        bad_input(str(err))
    for summary in report.summaries:
        _console.print(
            f"{summary.name}: {summary.rows:,} caption rows, {summary.n_audio:,} clips, "
            f"{summary.caption_len_mean or 0:.1f} words per caption"
        )
    if report.mos is not None:
        _console.print(
            f"{report.mos.headline()}, Krippendorff's alpha (ordinal) {report.mos.alpha_ordinal:.3f}"
        )
    _console.print(f"wrote {len(report.files)} files to {report.out_dir} (see report.md)")


def register(app: typer.Typer) -> None:
    """Add the `analyze` group to the top-level app."""
    app.add_typer(analyze_app, name="analyze")
