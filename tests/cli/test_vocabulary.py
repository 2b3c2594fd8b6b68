"""One CLI vocabulary, the way a user meets it: `--version` and `-h` on every command, `--out`/`-o`
and `--num-beams` with the old names still working but not shown, every choice in help, help
text wrapped at 80 columns and never cut mid-sentence."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import multi2cap
from multi2cap.cli.main import app
from multi2cap.cli.vocabulary import HIDDEN_ALIASES, first_sentence
from multi2cap.metrics import METRIC_SETS

ROOT = get_command(app)


def _commands(command: Any = ROOT, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _command(path: tuple[str, ...]) -> Any:
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


ALL = list(_commands())


def _help(path: tuple[str, ...], flag: str = "-h") -> str:
    result = CliRunner().invoke(app, [*path, flag], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, (path, result.output)
    return result.output


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "multi2cap", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_version_on_the_program_and_on_a_command() -> None:
    for args in (["--version"], ["caption", "--version"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"multi2cap {multi2cap.__version__}"


def test_dash_h_at_80_columns_in_a_real_terminal_width() -> None:
    result = run_cli("vggcaps", "build", "-h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: multi2cap vggcaps build")
    assert "http://localhost:8000/v1" in result.stdout  # not cut to "http://localhost:8000…"
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "multi2cap")
def test_every_command_has_dash_h_and_nothing_cut(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert text == _help(path, "--help")
    assert "…" not in text
    body = [line for line in text.splitlines() if not line.startswith("Usage:")]
    assert not any(line.rstrip().endswith("...") for line in body), text
    for old in HIDDEN_ALIASES:
        assert not re.search(rf"{re.escape(old)}\b", text), (old, text)
    command = _command(path)
    # the description is prose filled to the width: a line ends early only where the next word
    # would not fit (a docstring's own line break printed mid-sentence fails this)
    description = text.split("\nOptions:")[0].split("\nArguments:")[0].splitlines()[1:]
    for line, following in itertools.pairwise(description):
        if line.strip() and following.strip():
            assert len(line.rstrip()) + 1 + len(following.split()[0]) > 78, (line, following)

    # each subcommand's first sentence is listed whole in its group's help
    def flat(words: str) -> str:  # one space between words; a line may break after a hyphen
        return re.sub(r"-\s+", "-", " ".join(words.split()))

    for sub in getattr(command, "commands", {}).values():
        assert flat(first_sentence(sub.help)) in flat(text), (sub.name, text)


def test_the_output_option_is_out_and_beams_num_beams_everywhere() -> None:
    names = set()
    for path in ALL:
        for param in _command(path).params:
            names.update(getattr(param, "opts", ()))
            if "--out" in getattr(param, "opts", ()):
                assert "-o" in param.opts, (path, param.opts)
    assert names.isdisjoint(HIDDEN_ALIASES)
    assert "--num-beams" in names and "--out" in names


@pytest.mark.parametrize(
    ("path", "args", "param", "value"),
    [
        (("caption",), ["a.wav", "-c", "ck", "--output", "x.csv"], "output", Path("x.csv")),
        (("caption",), ["a.wav", "-c", "ck", "--beams", "3"], "num_beams", 3),
        (("evaluate",), ["-p", "p", "-r", "r", "--output", "s.json"], "output", Path("s.json")),
        (("train",), ["-c", "r.yaml", "--output-dir", "run"], "output_dir", Path("run")),
        (("demo",), ["--workdir", "w"], "workdir", Path("w")),
        (("push",), ["ck", "org/name", "--to-folder", "f"], "to_folder", Path("f")),
        (("human", "score"), ["study", "--output", "s.json"], "output", Path("s.json")),
        (("assets", "download"), ["all", "--dir", "d"], "out", Path("d")),
    ],
)
def test_old_names_still_parse_like_the_new_one(
    path: tuple[str, ...], args: list[str], param: str, value: Any
) -> None:
    command = _command(path)
    old = command.make_context(path[-1], list(args))
    assert old.params[param] == value
    new_args = [
        {"--output": "--out", "--output-dir": "-o", "--workdir": "--out"}.get(a, a) for a in args
    ]
    new_args = [
        {"--to-folder": "-o", "--beams": "--num-beams", "--dir": "-o"}.get(a, a) for a in new_args
    ]
    assert new_args != args
    assert command.make_context(path[-1], new_args).params[param] == value


def test_an_old_name_works_in_a_real_run(tmp_path: Path) -> None:
    """`evaluate --output` (the old name) and `-o` write the same scores file."""
    predictions = tmp_path / "p.csv"
    references = tmp_path / "r.csv"
    predictions.write_text("id,caption\na,a dog barks loudly\nb,rain falls on a roof\n")
    references.write_text(
        "id,caption_1,caption_2\na,a dog barks,a dog is barking loudly\n"
        "b,rain falls on a tin roof,heavy rain on a roof\n"
    )
    written = []
    for flag in ("--output", "-o"):
        out = tmp_path / f"scores{flag}.json"
        result = run_cli(
            "evaluate",
            "-p",
            str(predictions),
            "-r",
            str(references),
            "-m",
            "bleu_1",
            flag,
            str(out),
        )
        assert result.returncode == 0, result.stderr
        written.append(out.read_text())
    assert written[0] == written[1] and '"bleu_1"' in written[0]


def test_every_choice_is_listed_in_help() -> None:
    assert "<mos|captions|system-mos|ab>" in _help(("human", "create"))
    build = _help(("vggcaps", "build"))
    for choices in (
        "<openai|openai-batch|offline>",
        "<low|high|auto>",
        "<max_tokens|max_completion_tokens>",
        "<mel|linear>",
    ):
        assert choices in build
    assert "Prompt version shipped with the package (v1)" in " ".join(build.split())
    for path in (("evaluate",), ("human", "score"), ("analyze", "model", "grid")):
        text = " ".join(_help(path).split())
        for name in METRIC_SETS:
            assert re.search(rf"\b{name}\b", text), (path, name)
    # every option with a fixed set of values shows all of them
    for path in ALL:
        text = " ".join(_help(path).split())
        for param in _command(path).params:
            descriptor = getattr(param, "type_descriptor", None)  # Typer's view of the type
            choices = descriptor.choices if descriptor is not None else None
            if choices and not getattr(param, "hidden", False):
                shown = "|".join(str(getattr(c, "value", c)) for c in choices)
                assert shown in text.replace(" ", ""), (path, param.name, shown)


def test_a_wrong_choice_names_the_choices(tmp_path: Path) -> None:
    result = run_cli("human", "create", "--kind", "nope", "--manifest", "m", "-o", str(tmp_path))
    assert result.returncode == 2
    assert "'nope' is not one of 'mos', 'captions', 'system-mos', 'ab'" in result.stderr
