"""`multi2cap analyze` (work in progress: registered by its module's owner)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
