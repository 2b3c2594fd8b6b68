"""`multi2cap train` end to end through the Typer app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.recipes import RECIPES_DIR
from multi2cap.train.state import list_checkpoints

CONFIGS = RECIPES_DIR


def test_train_command_runs_and_resumes(stamp_manifests: Path, tmp_path: Path) -> None:
    args = [
        "train",
        "--config",
        str(CONFIGS / "tiny_finetune.yaml"),
        f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
        "optim.batch_size=8",
        "optim.micro_batch_size=4",
        "optim.epochs=1",
        "augment.enabled=false",
        "eval.every_epochs=0",
        "--output-dir",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "done: 1 steps, 1 epochs" in result.output
    assert (tmp_path / "final" / "trainable.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "step-00000001" / "optimizer.safetensors").is_file()

    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "done: 1 steps, 1 epochs" in again.output  # nothing left to do after the last epoch
    assert (tmp_path / "train_log.csv").read_text().count("\n") == 2  # header + one step


def test_train_command_rejects_a_bad_override(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(CONFIGS / "tiny_pretrain.yaml"), "optim.learning_rate=1"],
    )
    assert result.exit_code == 2
    assert "optim.learning_rate" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_step_end_and_resume_finishes(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "multi2cap.cli.main",
        "train",
        "--config",
        str(CONFIGS / "tiny_finetune.yaml"),
        f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
        "optim.batch_size=4",
        "optim.micro_batch_size=4",
        "optim.epochs=200",
        "augment.enabled=false",
        "eval.every_epochs=0",
        "runtime.progress=false",
        "runtime.tensorboard=false",
        "--output-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = tmp_path / "train_log.csv"
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if log.is_file() and log.read_text().count("\n") >= 3:  # header + 2 steps
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[0].decode()[-2000:]
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, output[-2000:]
    assert "stopped (signal SIGTERM)" in output
    # the plan, printed before the first step
    assert "8 clips per epoch, 4 per optimizer step: 2 steps per epoch x 200 epochs" in output
    assert "= 400 steps, 4 of warm-up" in output
    steps = [int(line.split(",")[0]) for line in log.read_text().splitlines()[1:]]
    saved = list_checkpoints(tmp_path / "checkpoints")
    assert saved and saved[-1][0] == steps[-1] < 400  # checkpoint of the last logged step

    resumed = CliRunner().invoke(
        app, [*command[3:], "optim.epochs=" + str(steps[-1] // 2 + 1), "--resume"]
    )
    assert resumed.exit_code == 0, resumed.output
    final_steps = [int(line.split(",")[0]) for line in log.read_text().splitlines()[1:]]
    assert final_steps == list(range(1, (steps[-1] // 2 + 1) * 2 + 1))
