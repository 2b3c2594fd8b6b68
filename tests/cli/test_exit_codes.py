"""Exit codes of real `multi2cap` commands, run as the installed entry point runs them:
0 success, 1 some items failed, 2 bad input, 3 internal error (one line naming a crash log)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from multi2cap.cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    GuardedGroup,
    redact_secrets,
)

FAKE_KEY = "sk-proj-ThisIsNotARealKey1234567890"


def run_cli(args: list[str], log_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MULTI2CAP_LOG_DIR": str(log_dir), "COLUMNS": "300", **env}
    return subprocess.run(
        [sys.executable, "-m", "multi2cap.cli.main", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def clotho(tmp_path: Path, tuxpaint_dir: Path, with_missing: bool) -> Path:
    """A Clotho v2.1 folder with one real recording (and one row whose audio is absent)."""
    root = tmp_path / "CLOTHO_v2.1"
    (root / "clotho_csv_files").mkdir(parents=True)
    audio = root / "clotho_audio_files" / "evaluation"
    audio.mkdir(parents=True)
    shutil.copyfile(tuxpaint_dir / "animals/birds/duck.ogg", audio / "duck.ogg")
    rows = ["file_name,caption_1,caption_2,caption_3,caption_4,caption_5", "duck.ogg,a,b,c,d,e"]
    if with_missing:
        rows.append("gone.wav,a,b,c,d,e")
    (root / "clotho_csv_files" / "clotho_captions_evaluation.csv").write_text("\n".join(rows))
    return root


def test_exit_0_on_success_and_1_when_items_failed(tmp_path: Path, tuxpaint_dir: Path) -> None:
    logs = tmp_path / "logs"
    root = clotho(tmp_path, tuxpaint_dir, with_missing=True)
    args = ["data", "prepare", "--format", "clotho", "--root", str(root)]
    ok = run_cli([*args, "--out", str(tmp_path / "m.jsonl")], logs)
    assert ok.returncode == EXIT_OK, ok.stderr  # a missing clip is listed, not fatal
    failed = run_cli([*args, "--out", str(tmp_path / "m.jsonl"), "--strict"], logs)
    assert failed.returncode == EXIT_ITEMS_FAILED, failed.stderr
    assert "gone.wav" in failed.stdout
    assert not logs.exists()


def test_exit_2_on_bad_input(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    usage = run_cli(["data", "prepare", "--format", "nope", "--root", "x", "--out", "y"], logs)
    assert usage.returncode == EXIT_BAD_INPUT
    missing = run_cli(
        ["evaluate", "-p", str(tmp_path / "p.csv"), "-r", str(tmp_path / "r.csv")], logs
    )
    assert missing.returncode == EXIT_BAD_INPUT
    assert "p.csv" in missing.stderr and "Traceback" not in missing.stderr
    assert not logs.exists()


def test_exit_3_on_an_internal_error_names_a_log_without_secrets(
    tmp_path: Path, tuxpaint_dir: Path
) -> None:
    """The manifest's folder is a regular file: the write fails in a way no command expects."""
    logs = tmp_path / "logs"
    root = clotho(tmp_path, tuxpaint_dir, with_missing=False)
    taken = tmp_path / FAKE_KEY  # a secret in argv and in the error's text
    taken.write_text("a file, not a folder")
    out = taken / "manifest.jsonl"
    result = run_cli(
        ["data", "prepare", "--format", "clotho", "--root", str(root), "--out", str(out)],
        logs,
        OPENAI_API_KEY="a-secret-value-from-env",
    )
    assert result.returncode == EXIT_INTERNAL, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "internal error (FileExistsError" in lines[0] and FAKE_KEY not in lines[0]
    [log] = logs.glob("crash-*.log")
    assert str(log) in lines[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "FileExistsError" in text
    assert "data prepare --format clotho" in text
    assert FAKE_KEY not in text and "a-secret-value-from-env" not in text


def test_guard_maps_typed_errors_and_lets_typer_exits_through(tmp_path: Path) -> None:
    """The root group's class classifies exceptions of any command registered on it."""
    from multi2cap.assets import AssetNotFoundError

    app = typer.Typer(cls=GuardedGroup)

    @app.command("missing-asset")
    def missing_asset() -> None:
        raise AssetNotFoundError("CLIP not found: set MULTI2CAP_CLIP")

    @app.command("exit-one")
    def exit_one() -> None:
        raise typer.Exit(EXIT_ITEMS_FAILED)

    @app.command("bad-param")
    def bad_param() -> None:
        raise typer.BadParameter("--rpm must be positive")

    @app.command("bug")
    def bug() -> None:
        raise KeyError("boom")

    @app.command("bug-in-a-name")
    def bug_in_a_name() -> None:
        raise RuntimeError("cannot handle " + os.fsdecode(b"caf\xe9.ogg"))  # not UTF-8

    runner = CliRunner(env={"MULTI2CAP_LOG_DIR": str(tmp_path)})
    result = runner.invoke(app, ["missing-asset"])
    assert result.exit_code == EXIT_BAD_INPUT and "set MULTI2CAP_CLIP" in result.output
    assert runner.invoke(app, ["exit-one"]).exit_code == EXIT_ITEMS_FAILED
    assert runner.invoke(app, ["bad-param"]).exit_code == EXIT_BAD_INPUT
    crashed = runner.invoke(app, ["bug"])
    assert crashed.exit_code == EXIT_INTERNAL
    assert re.search(
        r"internal error \(KeyError: 'boom'\); traceback in .*crash-.*\.log", crashed.output
    )
    named = runner.invoke(app, ["bug-in-a-name"])
    assert named.exit_code == EXIT_INTERNAL and "caf\\xe9.ogg" in named.output, named.output


def test_redact_secrets() -> None:
    env = {"MY_API_KEY": "value-of-the-key", "HOME": "/root"}
    text = f"key {FAKE_KEY} header Bearer abcdefghijkl env value-of-the-key home /root"
    assert redact_secrets(text, env) == "key *** header Bearer *** env *** home /root"


def test_every_group_is_under_the_guard() -> None:
    """Groups registered by other modules (no edits to them) run inside the guarded root."""
    from multi2cap.cli.main import app

    command = typer.main.get_command(app)
    assert isinstance(command, GuardedGroup)
    assert {"vggcaps", "data", "evaluate", "caption", "train"} <= set(command.commands)


def test_every_named_bad_input_error_exists() -> None:
    """The guard names the typed errors instead of importing them: a rename must fail here."""
    import importlib

    from multi2cap.cli.errors import BAD_INPUT_ERRORS, is_bad_input

    for name in sorted(BAD_INPUT_ERRORS):
        module, _, cls_name = name.rpartition(".")
        error_class = getattr(importlib.import_module(module), cls_name)
        assert issubclass(error_class, Exception), name
    from multi2cap.media.errors import EmptyMediaError

    assert is_bad_input(EmptyMediaError("x.wav", "file is empty"))  # subclasses match
    assert not is_bad_input(ValueError("a bug"))
