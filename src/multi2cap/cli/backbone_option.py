"""`--backbone ROLE=DIR`, the one option (repeatable) by which every command that loads a
checkpoint is told where that checkpoint's backbones are on this machine
(`multi2cap.model.backbones` holds the lookup: override, folder-relative reference, stored path,
`$MULTI2CAP_BACKBONES`)."""

from __future__ import annotations

import typer

BACKBONE_OPTION = typer.Option(
    None,
    "--backbone",
    metavar="ROLE=DIR",
    help="Where a backbone of the checkpoint is on this machine, for a checkpoint saved "
    "elsewhere (repeatable; ROLE: audio, vision or llm; DIR: a folder or a hub id). Without it, "
    "a stored folder absent here is looked up by name in $MULTI2CAP_BACKBONES.",
)


def backbone_overrides(items: list[str] | None) -> dict[str, str]:
    """`--backbone` values as `{role: DIR}`; `ValueError` (bad input) naming the bad item."""
    from multi2cap.model.backbones import parse_backbone_overrides

    return dict(parse_backbone_overrides(items or []))
