"""DDP over two CPU processes (gloo) through `torchrun` and the real CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multi2cap.train import load_train_config, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _losses(run: Path) -> list[float]:
    with open(run / "train_log.csv", encoding="utf-8") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_accumulation(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    # Fine-tuning (L_cap only): DDP's gradient mean over 2 devices x 2 clips equals the mean over
    # 2 accumulated micro-batches of 2 clips on one device, and the clip order is the same.
    overrides = [
        f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
        "optim.batch_size=4",
        "optim.micro_batch_size=2",
        "optim.epochs=2",
        "augment.enabled=false",
        "eval.every_epochs=0",
        "runtime.progress=false",
        "runtime.tensorboard=false",
    ]
    single = train(
        load_train_config(CONFIGS / "tiny_finetune.yaml", overrides, output_dir=tmp_path / "one")
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "multi2cap.cli.main",
        "train",
        "--config",
        str(CONFIGS / "tiny_finetune.yaml"),
        *overrides,
        "--output-dir",
        str(tmp_path / "ddp"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "gloo" in done.stderr.lower() and "unavailable" in done.stderr:
        pytest.skip(f"torch.distributed gloo backend unavailable here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(tmp_path / "ddp") == pytest.approx(single.train_losses, rel=1e-4)
    assert len(_losses(tmp_path / "ddp")) == single.global_step == 4
    assert (tmp_path / "ddp" / "final" / "trainable.safetensors").is_file()
