"""Exit codes of real `multi2cap` commands, run as the installed entry point runs them:
0 success, 1 some items failed, 2 bad input, 3 internal error (one line naming a crash log)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


# A real command that fails in a way no command expects: the entry point's app with one more
# command registered, run as `python -m multi2cap.cli.main` runs it.
UNEXPECTED = """
import sys
from multi2cap.cli.main import app

@app.command("explode")
def explode(name: str) -> None:
    raise RuntimeError("nobody expected " + name)

sys.argv[0] = "multi2cap"
app()
"""


def test_exit_3_on_an_internal_error_names_a_log_without_secrets(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    environment = {**os.environ, "MULTI2CAP_LOG_DIR": str(logs), "COLUMNS": "300"}
    environment["OPENAI_API_KEY"] = "a-secret-value-from-env"
    result = subprocess.run(
        [sys.executable, "-c", UNEXPECTED, "explode", FAKE_KEY],  # a secret in argv
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == EXIT_INTERNAL, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "internal error (RuntimeError: nobody expected ***)" in lines[0], lines[0]
    assert FAKE_KEY not in lines[0]
    [log] = logs.glob("crash-*.log")
    assert str(log) in lines[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError" in text
    assert "explode ***" in text
    assert FAKE_KEY not in text and "a-secret-value-from-env" not in text


# ------------------------------------------------------- issue 26 item 6: bad input exits 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tuxpaint_dir: Path) -> dict[str, Path]:
    """What the bad-input cases need, made once: a tiny checkpoint and three damaged copies
    (config.yaml that is no YAML, trainable.safetensors cut short, garbage weights), a manifest
    of real sounds, a MOS study and a copy whose study.sqlite is damaged, captions to score,
    a regular file standing where folders are needed, and a manifest of JSON arrays."""
    import torch
    from multi2cap_testkit import tiny

    from multi2cap.human.study import create_study
    from stamp_manifests import write_stamp_manifest

    root = tmp_path_factory.mktemp("bad_input")
    torch.manual_seed(0)
    checkpoint = tiny().save_pretrained(root / "ckpt")
    weights = (checkpoint / "trainable.safetensors").read_bytes()
    damaged = {}
    for name, change in {
        "broken_yaml": ("config.yaml", b"model: [unclosed\n  audio: 1\n"),
        "truncated": ("trainable.safetensors", weights[: len(weights) - 1000]),
        "garbage": ("trainable.safetensors", bytes(range(256)) * 20),
    }.items():
        shutil.copytree(checkpoint, root / name)
        (root / name / change[0]).write_bytes(change[1])
        damaged[name] = root / name
    manifest = write_stamp_manifest(tuxpaint_dir, root / "stamps.jsonl")
    study = create_study("mos", manifest, root / "study", n=2, raters=["ann"]).path
    corrupt = root / "corrupt_study"
    shutil.copytree(study, corrupt)
    database = corrupt / "study.sqlite"
    database.write_bytes(database.read_bytes()[:100] + b"\xff" * 4000)  # header kept, pages gone
    (root / "p.csv").write_text("file_name,caption\nduck.ogg,a duck quacks\n")
    (root / "r.csv").write_text("file_name,caption_1\nduck.ogg,a duck quacks loudly\n")
    (root / "a_file").write_text("a file, not a folder")
    (root / "arrays.jsonl").write_text('["duck", "a duck quacks"]\n')
    (root / "videos").mkdir()
    (root / "categories.csv").write_text("id,category\nclip_a,dog barking\n")
    sound = tuxpaint_dir / "animals/birds/duck.ogg"
    return {"root": root, "checkpoint": checkpoint, "manifest": manifest, "study": study,
            "corrupt_study": corrupt, "sound": sound, **damaged}  # fmt: skip


# (case, arguments with {names} of `inputs`, what the one error line must say)
BAD_INPUT_CASES = [
    ("caption: config.yaml is no YAML", "caption -c {broken_yaml} {sound}",
     "{broken_yaml}/config.yaml: not valid YAML: expected ',' or ']'"),
    ("serve: safetensors cut short", "serve -c {truncated} --port 9",
     "{truncated}/trainable.safetensors: not a readable safetensors file"),
    ("analyze model: garbage weights", "analyze model fidelity {garbage} {manifest} --out {root}/f",
     "{garbage}/trainable.safetensors: not a readable safetensors file"),
    ("caption --out a folder", "caption -c {checkpoint} {sound} -o {root}",
     "could not write {root} (--out: a folder, not a file"),
    ("evaluate --output (old name) under a file", "evaluate -p {root}/p.csv -r {root}/r.csv "
     "-m bleu_1 --output {root}/a_file/scores.json",
     "(--out: {root}/a_file is a file, not a folder)"),
    ("data prepare --out a folder", "data prepare --format vggcaps --root {manifest} "
     "--out {root}", "could not write {root} (--out: a folder, not a file"),
    ("analyze dataset --out a file", "analyze dataset {manifest} --out {root}/a_file",
     "could not write {root}/a_file (--out: a file, not a folder)"),
    ("human export --out under a file", "human export {study} --out {root}/a_file/export",
     "(--out: {root}/a_file is a file, not a folder)"),
    ("vggcaps build --out a file", "vggcaps build --videos {root}/videos --categories "
     "{root}/categories.csv --backend offline --out {root}/a_file",
     "could not write {root}/a_file/work (NotADirectoryError"),
    ("human status: damaged study.sqlite", "human status {corrupt_study}",
     "{corrupt_study}/study.sqlite: not a readable study database"),
    ("human serve: damaged study.sqlite", "human serve {corrupt_study} --port 9",
     "{corrupt_study}/study.sqlite: not a readable study database"),
    ("analyze dataset: JSON arrays", "analyze dataset {root}/arrays.jsonl --out {root}/report",
     "{root}/arrays.jsonl:1: expected a JSON object, found list[str]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"), [case[1:] for case in BAD_INPUT_CASES], ids=[c[0] for c in BAD_INPUT_CASES]
)
def test_bad_input_exits_2_naming_the_file(
    inputs: dict[str, Path], tmp_path: Path, args: str, message: str
) -> None:
    """The review's cases that exited 3 (an internal error, with a crash log): each is the
    user's input, and the one error line names the file and what is wrong with it."""
    logs = tmp_path / "logs"
    before = sorted(p.name for p in inputs["root"].iterdir())
    result = run_cli(args.format(**inputs).split(), logs)
    error = " ".join(result.stderr.split())
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert message.format(**inputs) in error, error
    assert "Traceback" not in result.stderr and not logs.exists()
    assert sorted(p.name for p in inputs["root"].iterdir()) == before  # nothing written


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
