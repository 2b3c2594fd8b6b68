"""`multi2cap human create|serve|status|export|summary|score`: the human-evaluation kit (paper
section 3.3, and the comparisons of systems AAC papers run). Parsing and printing only; the work
is in `multi2cap.human`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from multi2cap.cli.connection_options import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS
from multi2cap.cli.vocabulary import metrics_help
from multi2cap.human.store import StudyKind

human_app = typer.Typer(
    help="Human evaluation: MOS of the dataset's or systems' captions (Figure 4), A/B preference "
    "between two systems, and two-stage human captions (Human rows).",
    no_args_is_help=True,
)
_out = Console()
_err = Console(stderr=True)


def _fail(error: Exception) -> None:
    _err.print(f"[red]error:[/red] {error}")
    raise typer.Exit(code=2)


@human_app.command("create")
def create(
    kind: StudyKind = typer.Option(
        ...,
        "--kind",
        help="Study: mos = rate the manifest's captions 1-5; captions = raters write captions "
        "(audio, then with the frame); system-mos = rate one or more systems' captions 1-5 "
        "(--system, blind, interleaved); ab = choose the better of two systems' captions "
        "(--system A, --system B; sides randomised).",
    ),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest JSONL with the clips."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="The study folder to create (must not exist)."
    ),
    system: list[str] = typer.Option(
        [],
        "--system",
        help="NAME=FILE: a system's captions (any file `multi2cap caption` writes: CSV, JSON, "
        "JSONL, DCASE), matched to the manifest by id or audio file name. Repeat: 1+ for "
        "system-mos, 2 for ab (A, then B). Names are never shown to raters.",
    ),
    n: int = typer.Option(100, "--n", help="Items to sample (the paper: 100)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of the raters' orders."),
    split: str = typer.Option("test", "--split", help="Manifest split to sample from."),
    raters: int | None = typer.Option(
        None, "--raters", help="Number of raters r01..rNN (default: 10 for mos, 8 for captions)."
    ),
    rater_names: Path | None = typer.Option(
        None, "--rater-names", help="File with one rater name per line (instead of --raters)."
    ),
    gold: int = typer.Option(
        0, "--gold", help="Attention items (mos, system-mos, ab): a caption of another clip."
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="Public address the links start with (a proxy's); default: the links follow the "
        "address `human serve` listens on.",
    ),
    listen_check: bool = typer.Option(
        True, "--listen-check/--no-listen-check", help="Refuse answers before the clip has played."
    ),
) -> None:
    """Sample the items, copy their media, create study.sqlite, links.csv and the admin link."""
    from multi2cap.human.study import create_study
    from multi2cap.human.study import rater_names as make_names
    from multi2cap.human.systems import parse_system
    from multi2cap.io import check_output

    check_output(out, "folder", "--out")
    try:
        systems: dict[str, Path] = {}
        for spec in system:
            name, file = parse_system(spec)
            if name in systems:
                raise ValueError(f"--system {name} given twice")
            systems[name] = file
        names = make_names(raters, rater_names, kind)
        with _err.status("sampling items and copying media"):
            study = create_study(
                kind,
                manifest,
                out,
                n=n,
                seed=seed,
                split=split,
                raters=names,
                gold=gold,
                listen_check=listen_check,
                base_url=base_url,
                systems=systems,
            )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        _fail(error)
    s = study.settings
    _out.print(
        f"created {s.kind} study {study.path}: {s.n} {'clips' if s.systems else 'items'}"
        + (f" + {s.gold} gold" if s.gold else "")
        + f", {len(s.raters)} raters, seed {s.seed}"
        + (f"; systems {', '.join(s.systems)}" if s.systems else "")
    )
    _out.print(f"rater links: {study.path / 'links.csv'} (send each rater their own)")
    _out.print(f"admin link (keep it private): {study.admin_link}")
    if s.base_url is None:
        _out.print("the links follow the server: `human serve` rewrites them for its address")
    _out.print(f"next: multi2cap human serve {study.path}")


@human_app.command("serve")
def serve(
    study: Path = typer.Argument(..., help="The study folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback default)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="The address raters reach this server at (a proxy's): links.csv and "
        "admin_link.txt are rewritten for it. Default: the study's --base-url, else "
        "http://HOST:PORT.",
    ),
    header_timeout_s: float = HEADER_TIMEOUT,
    body_timeout_s: float = BODY_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve the raters' pages and the admin page (Ctrl-C stops; answers are already saved).

    The links in links.csv and admin_link.txt are made to reach this server (rewritten for its
    address), or the server refuses to start when they cannot (docs/human.md)."""
    from multi2cap.human.server import exposure_warning, prepare_links, serve_study
    from multi2cap.webserver import ConnectionLimits

    warning = exposure_warning(host)
    if warning:
        _err.print(f"[yellow]warning:[/yellow] {warning}")
    try:
        public, rewritten = prepare_links(study, host, port, base_url)
        if rewritten:
            _err.print(f"links for {public}: {study / 'links.csv'}, {study / 'admin_link.txt'}")
        elif rewritten is None:
            _err.print(f"[yellow]warning:[/yellow] {study / 'links.csv'} is missing: no links")
        _err.print(f"serving {study} on http://{host}:{port} (links: {study / 'links.csv'})")
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
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the exported files."),
) -> None:
    """JSON lines for programs and CSV for spreadsheets: ratings (MOS, system-MOS), preferences
    (A/B) or captions and references (captions study); summary.json for the rating studies."""
    import json

    from multi2cap.human.export import export_study
    from multi2cap.io import check_output

    check_output(out, "folder", "--out")
    try:
        files = export_study(study, out)
    except (FileNotFoundError, ValueError) as error:
        _fail(error)
    for path in files:
        _out.print(f"wrote {path}")
    summary = Path(out) / "summary.json"
    if summary.is_file():
        _print_summary(json.loads(summary.read_text(encoding="utf-8")))


@human_app.command("summary")
def summary(
    study: Path = typer.Argument(..., help="A mos, system-mos or ab study folder."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the summary as JSON."),
) -> None:
    """The study's findings so far, gold items left out: MOS with its 95 % CI; per system with
    the paired Wilcoxon test of every pair; or the A/B shares with a Wilson CI and an exact
    binomial p-value (docs/human.md)."""
    import json

    from multi2cap.human.store import StudyStore, open_study_db
    from multi2cap.human.summary import study_summary
    from multi2cap.io import atomic_write_text

    try:
        conn = open_study_db(study, readonly=True)
        try:
            store = StudyStore(conn)
            if store.kind == "captions":
                raise ValueError(f"{study} is a captions study: `human score` scores it")
            result = study_summary(store.kind, store.settings, store.answer_rows())
        finally:
            conn.close()
    except (FileNotFoundError, ValueError) as error:
        _fail(error)
    _print_summary(result)
    if out is not None:
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        _out.print(f"summary written to {out}")


def _ci(low: float | None, high: float | None, digits: int = 2) -> str:
    return "n/a" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _print_summary(result: dict) -> None:
    """The summary's tables (`human/summary.py`'s JSON)."""
    if not result.get("n_answers"):
        _out.print("no answers yet (gold items left out)")
        return
    if "mos" in result:
        m = result["mos"]
        _out.print(
            f"MOS {m['mos']:.2f}, 95 % CI {_ci(m['ci_low'], m['ci_high'])}, from "
            f"{m['n_ratings']} ratings of {m['n_items']} items by {m['n_raters']} raters"
        )
    if "systems" in result:
        table = Table(title="MOS per system (95 % CI: Student's t over clips, cut to 1-5)")
        for column in ("system", "MOS", "95 % CI", "ratings", "clips"):
            table.add_column(column, justify="left" if column == "system" else "right")
        for name, m in result["systems"].items():
            ci = _ci(m["ci_low"], m["ci_high"])
            table.add_row(name, f"{m['mos']:.2f}", ci, str(m["n_ratings"]), str(m["n_items"]))
        _out.print(table)
        if result["pairs"]:
            pairs = Table(title="Paired tests (Wilcoxon signed-rank over clips, two-sided)")
            for column in ("a - b", "mean diff", "95 % CI", "p", "p (Holm)", "clips (ties)"):
                pairs.add_column(column, justify="left" if column == "a - b" else "right")
            for t in result["pairs"]:
                diff = "n/a" if t["mean_difference"] is None else f"{t['mean_difference']:+.2f}"
                pairs.add_row(
                    f"{t['a']} - {t['b']}",
                    diff,
                    _ci(t["ci_low"], t["ci_high"]),
                    _p(t["p_value"]),
                    _p(t["p_holm"]),
                    f"{t['n_items']} ({t['n_zero_differences']})",
                )
            _out.print(pairs)
    if "preference" in result:
        p = result["preference"]
        a, b = p["a"], p["b"]
        shares = ", ".join(
            f"{label} {p['wins'][label]} ({100 * p['shares'][label]:.1f} %)"
            for label in (a, b, "tie")
        )
        _out.print(f"A/B preference over {p['n']} judgements: {shares}")
        share = p["decisive_share_a"]
        _out.print(
            f"{a} preferred in {'n/a' if share is None else f'{100 * share:.1f} %'} of the "
            f"decisive judgements, Wilson 95 % CI {_ci(p['ci_low'], p['ci_high'], 3)}; exact "
            f"binomial p = {_p(p['p_value'])} (two-sided, ties left out)"
        )


@human_app.command("score")
def score(
    study: Path = typer.Argument(..., help="A captions study folder."),
    metrics: str = typer.Option("offline", "--metrics", "-m", help=metrics_help()),
    output: Path | None = typer.Option(
        None, "--out", "-o", "--output", help="Write the scores as JSON."
    ),
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
        check_output(output, "file", "--out")

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
    grouped: dict[str, list[str]] = {}  # each missing asset's explanation once
    for key, reason in result.unavailable.items():
        grouped.setdefault(reason, []).append(key)
    for reason, keys in grouped.items():
        _err.print(f"[yellow]{', '.join(keys)} unavailable:[/yellow] {reason}")
    if output is not None:
        atomic_write_text(output, json.dumps(result.to_json(), indent=2) + "\n")
        _out.print(f"raw scores written to {output}")


def register(app: typer.Typer) -> None:
    """Add the `human` group to the top-level app."""
    app.add_typer(human_app, name="human")
