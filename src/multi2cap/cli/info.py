"""`multi2cap info`: versions, compute device, and which optional assets this machine has."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("info", help="Print versions, the torch device and which optional assets exist.")(
        info
    )


def info() -> None:
    from rich.console import Console
    from rich.table import Table

    from multi2cap.env_report import collect_report

    report = collect_report()
    console = Console()
    versions = Table(title="multi2cap environment", show_header=True)
    versions.add_column("component")
    versions.add_column("value")
    for name, value in report.versions.items():
        versions.add_row(name, value)
    console.print(versions)
    assets = Table(title="optional assets", show_header=True)
    assets.add_column("asset")
    assets.add_column("status")
    assets.add_column("where / how to provide")
    for item in report.assets:
        status = "[green]available[/green]" if item.available else "[red]missing[/red]"
        assets.add_row(item.name, status, item.detail)
    console.print(assets)
    if report.metrics:
        metrics = Table(title="metrics runnable here", show_header=True)
        metrics.add_column("metric")
        metrics.add_column("status")
        for name, reason in report.metrics.items():
            metrics.add_row(
                name, "[green]yes[/green]" if reason is None else f"[red]no[/red]: {reason}"
            )
        console.print(metrics)
