"""The `multi2cap` command: one Typer app, each command group registered from its own module."""

from __future__ import annotations

import importlib

import typer

from multi2cap.cli.vocabulary import HELP_OPTION_NAMES, RootGroup, version_callback

# `RootGroup` maps every command's exceptions to the exit codes of `multi2cap.cli.errors`
# (0 ok, 1 some items failed, 2 bad input, 3 internal error with a crash log) and applies the
# one CLI vocabulary of `multi2cap.cli.vocabulary` to every command.
app = typer.Typer(
    cls=RootGroup,
    context_settings={"help_option_names": HELP_OPTION_NAMES},
    name="multi2cap",
    help="VggCaps dataset builder, Multi2Cap training and captioning, AAC metrics and analyses.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)

# Each module defines `register(app)`; importing lazily keeps `multi2cap --help` fast and lets a
# command group's heavy dependencies (torch, transformers) load only when that group runs.
COMMAND_MODULES = (
    "info",
    "data",
    "evaluate",
    "assets",
    "vggcaps",
    "analyze",
    "analyze_model",
    "train",
    "caption",
    "backbones",
    "demo",
    "serve",
    "human",
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=version_callback,
        is_eager=True,
        expose_value=False,
        help="Print the multi2cap version and exit.",
    ),
) -> None:
    """VggCaps dataset builder, Multi2Cap training and captioning, AAC metrics and analyses."""
    from multi2cap.quiet import hide_weight_loading_bars

    hide_weight_loading_bars()  # once for every command (see multi2cap.quiet)


for _name in COMMAND_MODULES:
    importlib.import_module(f"multi2cap.cli.{_name}").register(app)


def main() -> None:
    app(prog_name="multi2cap")


if __name__ == "__main__":
    main()
