"""One vocabulary for every `multi2cap` command, applied once to the whole command tree.

The rules (README, "Command reference"):
- the output option is `--out` / `-o`, beam size `--num-beams`; the names used before are kept
  as hidden aliases (`HIDDEN_ALIASES`): they still parse, help does not show them;
- `-h` and `--help` everywhere; `--version` on the program and, unlisted, on every command;
- help text is prose, wrapped to the terminal and never cut: a docstring's line breaks are not
  printed as breaks mid-sentence, and help is click's plain text (Typer's rich panels cut long
  words such as URLs, option names and metric lists with "..." on an 80-column terminal);
- every choice of an option is listed in its help (options take `Literal` types; open sets such
  as `--metrics` list their names through `metrics_help`).

Typer builds the click objects itself and offers no hook for the option class, so `RootGroup`
(the root group's class) walks the finished tree once, when the root is built: every command,
whichever module registered it and whenever, follows the rules without edits of its own.
"""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperOption

from multi2cap.cli.errors import GuardedGroup

# old name -> the name it stands for; an option may carry an old name only beside the new one
HIDDEN_ALIASES: dict[str, str] = {
    "--output": "--out",
    "--output-dir": "--out",
    "--workdir": "--out",
    "--to-folder": "--out",
    "--dir": "--out",
    "--beams": "--num-beams",
}

HELP_OPTION_NAMES = ["-h", "--help"]

_LIST_LINE = re.compile(r"^\s*(?:[-*|>]|\d+[.)])\s")


class _AliasedOption(TyperOption):
    """A Typer option whose `hidden_opts` parse like its other names but are not printed."""

    hidden_opts: list[str]

    def add_to_parser(self, parser: Any, ctx: Any) -> None:
        visible = self.opts
        self.opts = [*visible, *self.hidden_opts]
        try:
            super().add_to_parser(parser, ctx)
        finally:
            self.opts = visible


def _hide_aliases(command_path: str, param: Any) -> None:
    hidden = [name for name in param.opts if name in HIDDEN_ALIASES]
    if not hidden:
        return
    for name in hidden:
        if HIDDEN_ALIASES[name] not in param.opts:
            raise RuntimeError(
                f"{command_path}: option {name} is the old name of {HIDDEN_ALIASES[name]}; "
                f"declare {HIDDEN_ALIASES[name]} on the same option"
            )
    if type(param) is not TyperOption:
        raise RuntimeError(f"{command_path}: cannot hide {hidden} on a {type(param).__name__}")
    param.__class__ = _AliasedOption  # same layout, one method more (see the module docstring)
    param.hidden_opts = hidden
    param.opts = [name for name in param.opts if name not in hidden]


def reflow(text: str | None) -> str | None:
    """`text` with the line breaks inside each paragraph replaced by spaces (paragraphs are
    separated by blank lines; a paragraph of list or table lines is kept as written)."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", text.strip())
    kept = []
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        if any(_LIST_LINE.match(line) for line in lines) or paragraph.startswith("\b"):
            kept.append(paragraph)
        else:
            kept.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(kept)


def first_sentence(text: str | None) -> str | None:
    """The first sentence of `text`'s first paragraph (a sentence ends at `.`, `!` or `?`
    followed by a capital letter, so "e.g. optim.lr" does not end one)."""
    if not text:
        return text
    paragraph = re.split(r"\n\s*\n", text.strip())[0]
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(paragraph.split()))[0]


def version_callback(ctx: Any, _param: Any, value: bool) -> None:
    """Print `multi2cap <version>` and exit 0 (an eager option's callback)."""
    if not value or ctx.resilient_parsing:
        return
    from multi2cap import __version__

    typer.echo(f"multi2cap {__version__}")
    raise typer.Exit()


def _version_option(hidden: bool) -> Any:
    """A `--version` option built by Typer itself (so it renders like every other option)."""
    probe = typer.Typer()

    @probe.command()
    def _probe(
        version: bool = typer.Option(
            False,
            "--version",
            callback=version_callback,
            is_eager=True,
            expose_value=False,
            hidden=hidden,
            help="Print the multi2cap version and exit.",
        ),
    ) -> None:
        """Never run: only its `--version` option is taken."""

    (option,) = [p for p in typer.main.get_command(probe).params if p.name == "version"]
    return option


def _apply(command: Any, path: str, version_option: Any) -> None:
    command.rich_markup_mode = None  # click's formatter: wraps, never cuts (module docstring)
    command.help = reflow(command.help)
    # click would cut the command list's line after 45 characters, mid-sentence
    command.short_help = reflow(command.short_help) or first_sentence(command.help)
    names = {name for param in command.params for name in getattr(param, "opts", ())}
    for param in command.params:
        if getattr(param, "help", None):
            param.help = reflow(param.help)
        if isinstance(param, TyperOption):
            _hide_aliases(path, param)
    if "--version" not in names:
        command.params.append(version_option)
    for name, sub in getattr(command, "commands", {}).items():
        _apply(sub, f"{path} {name}", version_option)


class RootGroup(GuardedGroup):
    """The `multi2cap` group: `GuardedGroup`'s exit codes, and the vocabulary of this module
    applied to every command below it (the root's own `--version` is its callback's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hidden_version = _version_option(hidden=True)
        self.rich_markup_mode = None
        self.help = reflow(self.help)
        for name, command in self.commands.items():
            _apply(command, f"multi2cap {name}", hidden_version)


def metrics_help() -> str:
    """Help of a `--metrics` option: every set name and every key (the metrics' own tables)."""
    from multi2cap.metrics import METRIC_KEYS, METRIC_SETS

    return f"A set ({', '.join(METRIC_SETS)}) or comma-separated keys ({', '.join(METRIC_KEYS)})."
