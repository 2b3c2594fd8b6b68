"""`multi2cap human create|serve|status|export|score`: the human-evaluation kit (paper section
3.3). Parsing and printing only; the work is in `multi2cap.human`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from multi2cap.cli.connection_options import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS

human_app = typer.Typer(
    help="Human evaluation: the MOS study (Figure 4) and two-stage human captions (Human rows).",
    no_args_is_help=True,
)
_out = Console()
_err = Console(stderr=True)


def _fail(error: Exception) -> None:
    _err.print(f"[red]error:[/red] {error}")
    raise typer.Exit(code=2)


@human_app.command("create")
def create(
    kind: str = typer.Option(..., "--kind", help="`mos` (rate captions 1-5) or `captions`."),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest JSONL with the clips."),
    out: Path = typer.Option(..., "--out", help="The study folder to create (must not exist)."),
    n: int = typer.Option(100, "--n", help="Items to sample (the paper: 100)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of the raters' orders."),
    split: str = typer.Option("test", "--split", help="Manifest split to sample from."),
    raters: int | None = typer.Option(
        None, "--raters", help="Number of raters r01..rNN (default: 10 for mos, 8 for captions)."
    ),
    rater_names: Path | None = typer.Option(
        None, "--rater-names", help="File with one rater name per line (instead of --raters)."
    ),
    gold: int = typer.Option(0, "--gold", help="Attention items (MOS): a caption of another clip."),
    base_url: str = typer.Option(
        "http://127.0.0.1:8080", "--base-url", help="Public address the links start with."
    ),
    listen_check: bool = typer.Option(
        True, "--listen-check/--no-listen-check", help="Refuse answers before the clip has played."
    ),
) -> None:
    """Sample the items, copy their media, create study.sqlite, links.csv and the admin link."""
    from multi2cap.human.study import create_study
    from multi2cap.human.study import rater_names as make_names
    from multi2cap.io import check_output

    if kind not in ("mos", "captions"):
        _fail(ValueError(f"--kind must be mos or captions, found {kind!r}"))
    check_output(out, "folder", "--out")
    try:
        names = make_names(raters, rater_names, kind)  # type: ignore[arg-type]
        with _err.status("sampling items and copying media"):
            study = create_study(
                kind,  # type: ignore[arg-type]
                manifest,
                out,
                n=n,
                seed=seed,
                split=split,
                raters=names,
                gold=gold,
                listen_check=listen_check,
                base_url=base_url,
            )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        _fail(error)
    s = study.settings
    _out.print(
        f"created {s.kind} study {study.path}: {s.n} items"
        + (f" + {s.gold} gold" if s.gold else "")
        + f", {len(s.raters)} raters, seed {s.seed}"
    )
    _out.print(f"rater links: {study.path / 'links.csv'} (send each rater their own)")
    _out.print(f"admin link (keep it private): {study.admin_link}")
    _out.print(f"next: multi2cap human serve {study.path}")


@human_app.command("serve")
def serve(
    study: Path = typer.Argument(..., help="The study folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback default)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    header_timeout_s: float = HEADER_TIMEOUT,
    body_timeout_s: float = BODY_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve the raters' pages and the admin page (Ctrl-C stops; answers are already saved)."""
    from multi2cap.human.server import exposure_warning, serve_study
    from multi2cap.webserver import ConnectionLimits

    warning = exposure_warning(host)
    if warning:
        _err.print(f"[yellow]warning:[/yellow] {warning}")
    _err.print(f"serving {study} on http://{host}:{port} (links: {study / 'links.csv'})")
    try:
        limits = ConnectionLimits(
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            max_connections=max_connections,
        )
        serve_study(study, host, port, limits)
    except (FileNotFoundError, ValueError) as error:
        _fail(error)


@human_app.command("status")
def status(study: Path = typer.Argument(..., help="The study folder.")) -> None:
    """Progress per rater: answers, gold failures, last answer."""
    from multi2cap.human.store import StudyStore, open_study_db

    try:
        conn = open_study_db(study, readonly=True)
        try:
            store = StudyStore(conn)
            progress = store.progress()
        finally:
            conn.close()
    except (FileNotFoundError, ValueError) as error:
        _fail(error)
    table = Table(title=f"{study}: {store.kind} study, {store.settings['n']} items")
    for column in ("rater", "answers", "done %", "gold failed", "last answer (UTC)"):
        table.add_column(column, justify="left" if column == "rater" else "right")
    for p in progress:
        last = (
            datetime.fromtimestamp(p.last_answer_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if p.last_answer_at
            else "-"
        )
        gold = f"{p.gold_failed} / {p.gold_done}" if store.settings.get("gold") else "-"
        table.add_row(p.name, f"{p.done} / {p.total}", f"{100 * p.done / p.total:.0f}", gold, last)
    _out.print(table)
    done = sum(p.done for p in progress)
    total = sum(p.total for p in progress)
    _out.print(f"{done} / {total} answers ({100 * done / max(total, 1):.1f} %)")


@human_app.command("export")
def export(
    study: Path = typer.Argument(..., help="The study folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the exported files."),
) -> None:
    """ratings.csv (MOS) or captions_audio.csv, captions_audio_visual.csv, references.csv."""
    from multi2cap.human.export import export_study
    from multi2cap.io import check_output

    check_output(out, "folder", "--out")
    try:
        files = export_study(study, out)
    except (FileNotFoundError, ValueError) as error:
        _fail(error)
    for path in files:
        _out.print(f"wrote {path}")


@human_app.command("score")
def score(
    study: Path = typer.Argument(..., help="A captions study folder."),
    metrics: str = typer.Option("offline", "--metrics", "-m", help="`offline`, `paper` or keys."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the scores as JSON."),
    skip_unavailable: bool = typer.Option(
        False, "--skip-unavailable", help="Report metrics whose assets are missing as null."
    ),
) -> None:
    """The Human rows: each rater's captions per stage scored, mean over raters, x100."""
    import json

    from multi2cap.human.score import PAPER_HUMAN_ROWS, STAGE_LABELS, score_study
    from multi2cap.io import atomic_write_text, check_output
    from multi2cap.metrics import MetricUnavailableError
    from multi2cap.metrics.evaluator import PAPER_LABELS

    if output is not None:
        check_output(output, "file", "--output")

    try:
        with _err.status("scoring the raters' captions (METEOR's JVM takes 10-30 s to start)"):
            result = score_study(study, metrics, skip_unavailable=skip_unavailable)
    except (FileNotFoundError, ValueError, MetricUnavailableError) as error:
        _fail(error)
    if not result.rows:
        _fail(ValueError("no rater has captioned two items yet: nothing to score"))
    keys = list(next(iter(result.rows.values())))
    table = Table(title="Human rows (x100; paper = Table 2, VggCaps test)")
    table.add_column("row")
    for key in keys:
        table.add_column(PAPER_LABELS.get(key, key), justify="right")
    for stage in (1, 2):
        row = result.rows.get(stage)
        raters = len(result.per_rater[stage])
        if row is not None:
            cells = [f"{v:.0f}" if k == "vocab" else f"{100 * v:.1f}" for k, v in row.items()]
            table.add_row(f"Human, {STAGE_LABELS[stage]}, ours ({raters} raters)", *cells)
        paper = PAPER_HUMAN_ROWS[stage]
        table.add_row(
            f"Human, {STAGE_LABELS[stage]}, paper",
            *(f"{paper[k]:.1f}" if k in paper else "-" for k in keys),
        )
    _out.print(table)
    _out.print("vocab is a count, not x100; the paper's BL column is read as BLEU-1.")
    for reason in result.skipped:
        _err.print(f"[yellow]skipped:[/yellow] {reason}")
    for key, reason in result.unavailable.items():
        _err.print(f"[yellow]{key} unavailable:[/yellow] {reason}")
    if output is not None:
        atomic_write_text(output, json.dumps(result.to_json(), indent=2) + "\n")
        _out.print(f"raw scores written to {output}")


def register(app: typer.Typer) -> None:
    """Add the `human` group to the top-level app."""
    app.add_typer(human_app, name="human")
