"""DDP and FSDP over two CPU processes (gloo) through `torchrun` and the real CLI."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multi2cap.recipes import RECIPES_DIR
from multi2cap.train import load_train_config, train

CONFIGS = RECIPES_DIR


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _losses(run: Path) -> list[float]:
    return [float(row["loss"]) for row in _rows(run / "train_log.csv")]


def _comparable(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights without the key third of attention in-projection biases: softmax ignores a
    shift shared by all keys, so their gradient is zero up to rounding, and AdamW's update of
    rounding noise depends on the reduction order (DDP's all-reduce vs FSDP's reduce-scatter)."""
    out = dict(weights)
    for key, value in weights.items():
        if key.endswith("attn.in_proj_bias"):
            d = value.shape[0] // 3
            out[key] = torch.cat([value[:d], value[2 * d :]])
    return out


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
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        # SIGTERM lets torchrun stop its workers (it kills them after a grace period); killing
        # torchrun itself would leave them stalled in a collective.
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        pytest.fail(f"the two processes did not finish in 300 s (a stall?): {stderr[-2000:]}")
    if process.returncode != 0 and "gloo" in stderr.lower() and "unavailable" in stderr:
        pytest.skip(f"torch.distributed gloo backend unavailable here: {stderr[-300:]}")
    assert process.returncode == 0, stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_accumulation(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    # Fine-tuning (L_cap only): DDP's gradient mean over 2 devices x 2 clips equals the mean over
    # 2 accumulated micro-batches of 2 clips on one device, and the clip order is the same.
    # So a checkpoint of the 2-process run also resumes in one process.
    overrides = [
        f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
        "optim.batch_size=4",
        "optim.micro_batch_size=2",
        "optim.epochs=2",
        "augment.enabled=false",
        "eval.every_epochs=0",
        "runtime.keep_last_checkpoints=2",
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

    # The 2-process checkpoint of epoch 1 resumes in one process onto the same trajectory.
    shutil.copytree(
        tmp_path / "ddp" / "checkpoints" / "step-00000002",
        tmp_path / "resumed" / "checkpoints" / "step-00000002",
    )
    resumed = train(
        load_train_config(
            CONFIGS / "tiny_finetune.yaml", overrides, output_dir=tmp_path / "resumed"
        ),
        resume=True,
    )
    assert resumed.train_losses == pytest.approx(single.train_losses, rel=1e-4)


@pytest.mark.slow
def test_fsdp_pretraining_matches_ddp_and_resumes_exactly(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    # Pre-training (L_cap + L_align over both processes' clips + L_vfr, CLIP frames) sharded
    # with FSDP2 follows DDP's trajectory: same losses, clipped gradients, validation scores and
    # weights. The FSDP run is stopped after step 3 and resumed from its checkpoint (sharded
    # optimizer state gathered, then re-sharded). Validation: 7 clips over 2 processes with
    # batches of 3, so one process decodes a stand-in batch to match the other's forwards.
    # Last, a DDP checkpoint resumes under FSDP: one checkpoint format for both. Gradient
    # checkpointing is on in every run (it recomputes the sharded decoder layers in backward).
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
        "runtime.gradient_checkpointing=true",
        "runtime.checkpoint_every_steps=1",
        "runtime.keep_last_checkpoints=4",
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
    for key, value in _comparable(ddp_weights).items():
        torch.testing.assert_close(_comparable(fsdp_weights)[key], value, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "fsdp" / "best" / "best.json").is_file()

    shutil.copytree(
        tmp_path / "ddp" / "checkpoints" / "step-00000002",
        tmp_path / "mixed" / "checkpoints" / "step-00000002",
    )
    _torchrun("tiny_pretrain.yaml", fsdp, tmp_path / "mixed", "--resume")
    assert _losses(tmp_path / "mixed") == pytest.approx(ddp_losses, rel=1e-4)
    mixed_weights = load_file(tmp_path / "mixed" / "final" / "trainable.safetensors")
    for key, value in _comparable(ddp_weights).items():
        torch.testing.assert_close(_comparable(mixed_weights)[key], value, rtol=1e-4, atol=1e-5)

    # The gathered checkpoint is an ordinary one: it captions in a single process.
    from multi2cap.model.multi2cap import Multi2Cap

    model = Multi2Cap.from_pretrained(tmp_path / "fsdp" / "final")
    assert model.caption(torch.zeros(16_000), num_beams=1, max_new_tokens=5)[0].strip() != ""


@pytest.mark.slow
def test_a_process_whose_first_clip_is_unreadable_does_not_stall_the_others(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    # One clip per micro-batch; the unreadable clip is process 1's very first, so it has no
    # earlier good micro-batch to repeat and must run the silent stand-in to join the
    # gradient reduction of its FSDP peer (which would otherwise wait forever).
    from multi2cap.data.manifest import read_manifest, write_manifest
    from multi2cap.train.sampler import StepBatchSampler

    good = read_manifest(stamp_manifests / "train.jsonl")
    broken = next(
        r for r in read_manifest(stamp_manifests / "corrupt.jsonl") if r.id == "broken_clip"
    )
    n = len(good) + 1
    sampler = StepBatchSampler(
        n, micro_batch_size=1, accumulation_steps=1, num_replicas=2, rank=1, seed=0
    )
    first = next(iter(sampler))[0]
    records = [*good[:first], broken, *good[first:]]
    write_manifest(records, tmp_path / "train.jsonl")
    overrides = [
        f"data.train_manifest={tmp_path / 'train.jsonl'}",
        "optim.batch_size=2",
        "optim.micro_batch_size=1",
        "optim.epochs=1",
        "augment.enabled=false",
        "eval.every_epochs=0",
        "runtime.progress=false",
        "runtime.tensorboard=false",
        "runtime.strategy=fsdp",
    ]
    _torchrun("tiny_pretrain.yaml", overrides, tmp_path / "run")
    losses = _losses(tmp_path / "run")
    # 9 clips in steps of 2: 5 steps, the last completed with a clip of the epoch's start
    assert len(losses) == math.ceil(n / 2) and all(math.isfinite(x) for x in losses)
    skipped = (tmp_path / "run" / "skipped.jsonl").read_text()
    assert '"broken_clip"' in skipped and '"step": 1' in skipped
