"""`multi2cap train` end to end through the Typer app."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from multi2cap.cli.main import app

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


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
