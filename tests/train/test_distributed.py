"""DDP and FSDP over two CPU processes (gloo) through `torchrun` and the real CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multi2cap.train import load_train_config, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _losses(run: Path) -> list[float]:
    return [float(row["loss"]) for row in _rows(run / "train_log.csv")]


def _torchrun(recipe: str, overrides: list[str], out: Path, *flags: str) -> None:
    """`multi2cap train` in two processes; skips when this torch build has no gloo backend."""
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
        str(CONFIGS / recipe),
        *overrides,
        "--output-dir",
        str(out),
        *flags,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "gloo" in done.stderr.lower() and "unavailable" in done.stderr:
        pytest.skip(f"torch.distributed gloo backend unavailable here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]


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
    _torchrun("tiny_finetune.yaml", overrides, tmp_path / "ddp")
    assert _losses(tmp_path / "ddp") == pytest.approx(single.train_losses, rel=1e-4)
    assert len(_losses(tmp_path / "ddp")) == single.global_step == 4
    assert (tmp_path / "ddp" / "final" / "trainable.safetensors").is_file()


@pytest.mark.slow
def test_fsdp_pretraining_matches_ddp_and_resumes_exactly(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    # Pre-training (L_cap + L_align over both processes' clips + L_vfr, CLIP frames) sharded
    # with FSDP2 follows DDP's trajectory: same losses, clipped gradients, validation scores and
    # weights. The FSDP run is stopped after step 3 and resumed from its checkpoint (sharded
    # optimizer state gathered, then re-sharded). Validation: 7 clips over 2 processes with
    # batches of 3, so one process decodes a stand-in batch to match the other's forwards.
    overrides = [
        f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
        f"data.val_manifest={stamp_manifests / 'val.jsonl'}",
        "optim.batch_size=4",
        "optim.micro_batch_size=2",
        "optim.epochs=2",
        "optim.max_grad_norm=0.5",
        "augment.enabled=false",
        "eval.every_epochs=1",
        "eval.max_items=7",
        "eval.batch_size=3",
        "eval.metrics=[bleu_1,cider_d]",
        "runtime.checkpoint_every_steps=1",
        "runtime.progress=false",
        "runtime.tensorboard=false",
    ]
    _torchrun("tiny_pretrain.yaml", [*overrides, "runtime.strategy=ddp"], tmp_path / "ddp")
    fsdp = [*overrides, "runtime.strategy=fsdp"]
    _torchrun("tiny_pretrain.yaml", [*fsdp, "runtime.stop_at_step=3"], tmp_path / "fsdp")
    assert len(_losses(tmp_path / "fsdp")) == 3 and not (tmp_path / "fsdp" / "final").exists()
    _torchrun("tiny_pretrain.yaml", fsdp, tmp_path / "fsdp", "--resume")

    ddp_losses, fsdp_losses = _losses(tmp_path / "ddp"), _losses(tmp_path / "fsdp")
    assert len(fsdp_losses) == 4
    assert fsdp_losses == pytest.approx(ddp_losses, rel=1e-4)
    ddp_val, fsdp_val = (_rows(tmp_path / run / "val_log.csv") for run in ("ddp", "fsdp"))
    assert [r["epoch"] for r in fsdp_val] == ["1", "2"]
    for a, b in zip(ddp_val, fsdp_val, strict=True):
        assert float(b["val_loss"]) == pytest.approx(float(a["val_loss"]), rel=1e-4)
        assert float(b["cider_d"]) == pytest.approx(float(a["cider_d"]), abs=1e-6)
    ddp_weights = load_file(tmp_path / "ddp" / "final" / "trainable.safetensors")
    fsdp_weights = load_file(tmp_path / "fsdp" / "final" / "trainable.safetensors")
    assert sorted(fsdp_weights) == sorted(ddp_weights)
    for key, value in ddp_weights.items():
        torch.testing.assert_close(fsdp_weights[key], value, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "fsdp" / "best" / "best.json").is_file()

    # The gathered checkpoint is an ordinary one: it captions in a single process.
    from multi2cap.model.multi2cap import Multi2Cap

    model = Multi2Cap.from_pretrained(tmp_path / "fsdp" / "final")
    assert model.caption(torch.zeros(16_000), num_beams=1, max_new_tokens=5)[0].strip() != ""
