"""`multi2cap info`: versions, compute device, which optional assets this machine has and which
metrics can run (`--json` for scripts).

Printed as plain wrapped text, never as table cells: a cell cuts a long path or file name with
"...", and those are exactly what a user must copy (a jar's name, a folder to set a variable
to). Each missing asset is explained once, naming the metrics it stops."""

from __future__ import annotations

import json
import shutil
import textwrap

import typer


def register(app: typer.Typer) -> None:
    app.command("info", help="Print versions, the torch device and which optional assets exist.")(
        info
    )


def _wrapped(text: str, indent: int, width: int, first: int | None = None) -> str:
    """`text` wrapped at spaces only (a path or file name is never split or cut), its lines
    indented by `indent` spaces, the first by `first`."""
    return textwrap.fill(
        text,
        width=max(width, indent + 20),
        initial_indent=" " * (indent if first is None else first),
        subsequent_indent=" " * indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def info(
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    from multi2cap.env_report import collect_report

    report = collect_report()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        return
    width = min(shutil.get_terminal_size().columns, 100)
    echo = typer.echo
    echo("multi2cap environment")
    name_width = max(len(name) for name in report.versions)
    for name, value in report.versions.items():
        echo(f"  {name:<{name_width}}  {value}")
    echo("\noptional assets")
    for asset in report.assets:
        stops = f" (needed by {', '.join(asset.needed_by)})" if asset.needed_by else ""
        status = "available" if asset.available else "missing  "
        echo(_wrapped(f"{status}  {asset.name}{stops}", 13, width, first=2))
        echo(_wrapped(asset.detail, 13, width))
    if not report.metrics:
        return
    runnable = [key for key, why in report.metrics.items() if why is None]
    missing = [key for key, why in report.metrics.items() if why is not None]
    echo("\nmetrics")
    echo(_wrapped(f"runnable here: {', '.join(runnable) or 'none'}", 2, width))
    if missing:
        echo(_wrapped(f"not runnable: {', '.join(missing)}", 2, width))
        for reason, keys in report.unexplained().items():
            echo(_wrapped(f"{', '.join(keys)}: {reason}", 4, width))
        if any(asset.needed_by for asset in report.assets):
            echo("  (what each missing asset stops, and how to provide it, is listed above)")
