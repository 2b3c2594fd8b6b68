"""The training loop end to end on tiny random backbones and real Tux Paint clips (CPU)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import multi2cap
from multi2cap.io import read_jsonl
from multi2cap.recipes import RECIPES_DIR
from multi2cap.train import ConfigError, TrainResult, load_train_config, train
from multi2cap.train.state import list_checkpoints

CONFIGS = RECIPES_DIR

# 8 clips, effective batch 4 = 2 micro-batches of 2: 2 optimizer steps per epoch.
FAST = [
    "optim.batch_size=4",
    "optim.micro_batch_size=2",
    "optim.epochs=2",
    "augment.p_stretch=0.0",  # the phase vocoder is the slow part of loading; others stay on
    "eval.every_epochs=0",
    "runtime.progress=false",
    "runtime.tensorboard=false",
]


def _config(manifests: Path, out: Path, *extra: str, recipe: str = "tiny_pretrain.yaml"):
    return load_train_config(
        CONFIGS / recipe,
        [f"data.train_manifest={manifests / 'train.jsonl'}", *FAST, *extra],
        output_dir=out,
    )


def test_interrupt_and_resume_reproduce_the_uninterrupted_run(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    full = train(_config(stamp_manifests, tmp_path / "full"))
    assert full.global_step == 4 and full.epochs_completed == 2
    assert all(math.isfinite(x) for x in full.train_losses)

    # Stop in the middle of epoch 2 (step 3), as a killed job would after its last checkpoint.
    cut = train(_config(stamp_manifests, tmp_path / "cut", "runtime.stop_at_step=3"))
    assert cut.global_step == 3 and cut.epochs_completed == 1
    assert [s for s, _ in list_checkpoints(tmp_path / "cut" / "checkpoints")][-1] == 3
    assert cut.stop_reason == "stop_at_step" and not (tmp_path / "cut" / "final").exists()
    assert cut.final_checkpoint == tmp_path / "cut" / "checkpoints" / "step-00000003" / "model"
    resumed = train(_config(stamp_manifests, tmp_path / "cut"), resume=True)

    assert resumed.global_step == 4
    assert resumed.train_losses == pytest.approx(full.train_losses, rel=1e-6, abs=1e-7)
    for key in ("loss_align", "loss_vfr", "lr"):
        expected = [r[key] for r in full.history if r["kind"] == "train"]
        got = [r[key] for r in resumed.history if r["kind"] == "train"]
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    weights_full = load_file(full.final_checkpoint / "trainable.safetensors")
    weights_resumed = load_file(resumed.final_checkpoint / "trainable.safetensors")
    assert weights_full.keys() == weights_resumed.keys()
    for key, value in weights_full.items():
        torch.testing.assert_close(weights_resumed[key], value, rtol=1e-5, atol=1e-6)
    # The CSV log of the resumed run has each step once.
    rows = (tmp_path / "cut" / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4"]


def test_vfr_reduction_and_grounding_pool_reach_the_model(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    """The same first step under `optim.vfr_reduction` sum and mean: L_cap and L_align agree,
    L_vfr differs by exactly K x d_g (4 x 32); `model.grounding.pool=time` (a section the
    recipe does not name) reaches the saved model."""
    first = {}
    for reduction in ("sum", "mean"):
        overrides = ["runtime.stop_at_step=1", f"optim.vfr_reduction={reduction}"]
        result = train(
            _config(stamp_manifests, tmp_path / reduction, *overrides, "model.grounding.pool=time")
        )
        first[reduction] = next(r for r in result.history if r["kind"] == "train")
        saved = yaml.safe_load((result.final_checkpoint / "config.yaml").read_text())
        assert saved["grounding"] == {"enabled": True, "pool": "time"}
    for key in ("loss_cap", "loss_align"):
        assert first["sum"][key] == pytest.approx(first["mean"][key], rel=1e-5)
    assert first["sum"]["loss_vfr"] == pytest.approx(4 * 32 * first["mean"]["loss_vfr"], rel=1e-5)


def test_unreadable_clip_is_skipped_and_logged(stamp_manifests: Path, tmp_path: Path) -> None:
    # Micro-batches of one clip: the broken clip forms a micro-batch with nothing readable.
    config = load_train_config(
        CONFIGS / "tiny_finetune.yaml",
        [
            f"data.train_manifest={stamp_manifests / 'corrupt.jsonl'}",
            *FAST,
            "optim.batch_size=3",
            "optim.micro_batch_size=1",
            "optim.epochs=1",
            "augment.enabled=false",
            "data.num_workers=2",  # items fail inside worker processes
        ],
        output_dir=tmp_path,
    )
    result = train(config)
    assert result.global_step == 3  # 9 clips / 3 per step, none lost to the failure
    skipped = list(read_jsonl(tmp_path / "skipped.jsonl"))
    assert [s["id"] for s in skipped] == ["broken_clip"]
    assert result.skipped_clips == 1
    assert all(math.isfinite(x) for x in result.train_losses)


def test_caption_epochs_count_caption_rows_and_the_plan_is_logged(
    stamp_manifests: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `data.epoch_unit: caption`: 8 clips x 2 captions + the broken clip's one caption = 17
    # items, in steps of 3: 6 steps, the last completed with 1 item from the epoch's start.
    # The run's decoding budget is set below its longest caption on purpose.
    caplog.set_level(logging.INFO, logger="multi2cap.train")
    config = load_train_config(
        CONFIGS / "tiny_finetune.yaml",
        [
            f"data.train_manifest={stamp_manifests / 'corrupt.jsonl'}",
            *FAST,
            "optim.batch_size=3",
            "optim.micro_batch_size=1",
            "optim.epochs=1",
            "augment.enabled=false",
            "data.epoch_unit=caption",
            "eval.max_new_tokens=2",
        ],
        output_dir=tmp_path,
    )
    result = train(config)
    assert result.global_step == 6
    assert (
        "17 captions per epoch, 3 per optimizer step: 6 steps per epoch x 1 epochs = 6 steps, "
        "12 of warm-up; each epoch's last step completed with 1 of the epoch's first items"
    ) in caplog.text
    # an unreadable item is logged under its clip's id
    assert {s["id"] for s in read_jsonl(tmp_path / "skipped.jsonl")} == {"broken_clip"}
    # the longest training caption is measured in the decoder's tokens, and a decoding budget
    # below it is reported (the tiny model's generation default, 24, covers it)
    assert "longest training caption: 5 decoder tokens with EOS" in caplog.text
    assert "eval.max_new_tokens is 2, below the 5 tokens" in caplog.text
    assert "model.generation.max_new_tokens is" not in caplog.text


def test_lr_follows_warmup_then_cosine(stamp_manifests: Path, tmp_path: Path) -> None:
    config = _config(
        stamp_manifests,
        tmp_path,
        "optim.epochs=3",
        "optim.warmup_epochs=1",
        "optim.lr=0.002",
        "augment.enabled=false",
    )
    result = train(config)
    lrs = [r["lr"] for r in result.history if r["kind"] == "train"]
    # 2 steps per epoch, 1 warm-up epoch: 1/2, 2/2, then cosine over the remaining 4 steps.
    cosine = [0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert lrs == pytest.approx([0.002 * f for f in (0.5, 1.0, *cosine)])
    assert load_train_config(tmp_path / "train_config.yaml") == config
    # The run, its step checkpoints and its model say which multi2cap wrote them.
    version = {"multi2cap_version": multi2cap.__version__}
    run_config = yaml.safe_load((tmp_path / "train_config.yaml").read_text())
    assert run_config["written_by"].items() >= version.items()
    (_, step_folder), *_ = list_checkpoints(tmp_path / "checkpoints")
    state = json.loads((step_folder / "trainer_state.json").read_text())
    assert state["written_by"].items() >= version.items()
    model_config = yaml.safe_load((result.final_checkpoint / "config.yaml").read_text())
    assert model_config["written_by"].items() >= version.items()


def test_validation_selects_best_and_finetuning_reads_no_image(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    pre = train(
        _config(
            stamp_manifests,
            tmp_path / "pre",
            f"data.val_manifest={stamp_manifests / 'val.jsonl'}",
            "eval.every_epochs=1",
            "eval.metrics=[bleu_1,cider_d]",
            "runtime.tensorboard=true",
            "augment.enabled=false",
        )
    )
    val = [r for r in pre.history if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2]
    assert all(r["cider_d"] >= 0.0 and 0.0 <= r["bleu_1"] <= 1.0 for r in val)
    assert all(math.isfinite(r["val_loss"]) and r["val_items"] == 8 for r in val)
    # Pre-training scores the path it trains (g from the frame) under the plain names, and the
    # audio-only g_hat path beside it: two different paths, two different losses.
    assert all(math.isfinite(r["audio_only_val_loss"]) for r in val)
    assert all(r["val_loss"] != r["audio_only_val_loss"] for r in val)
    assert all(0.0 <= r["audio_only_bleu_1"] <= 1.0 for r in val)
    best_epoch = max(val, key=lambda r: r["cider_d"])["epoch"]
    assert pre.best_metric == "cider_d" and pre.best_checkpoint is not None
    summary = json.loads((pre.best_checkpoint / "best.json").read_text())
    assert summary["epoch"] == best_epoch and summary["score"] == pre.best_score
    assert (tmp_path / "pre" / "val_log.csv").read_text().startswith("epoch,step,val_loss")
    assert list((tmp_path / "pre" / "tensorboard").glob("events.out.tfevents.*"))

    # Fine-tune audio-only from the pre-trained checkpoint on records that have no image at all.
    from multi2cap.data.manifest import read_manifest, write_manifest

    records = read_manifest(stamp_manifests / "train.jsonl")
    for record in records:
        record.image = None
    write_manifest(records, tmp_path / "audio_only.jsonl")
    fine = train(
        load_train_config(
            CONFIGS / "tiny_finetune.yaml",
            [
                f"data.train_manifest={tmp_path / 'audio_only.jsonl'}",
                f"init_from={pre.best_checkpoint}",
                *FAST,
                "optim.epochs=1",
                "augment.enabled=false",
            ],
            output_dir=tmp_path / "fine",
        )
    )
    assert fine.global_step == 2 and all(math.isfinite(x) for x in fine.train_losses)
    assert all(r["loss_align"] == 0.0 and r["loss_vfr"] == 0.0 for r in fine.history)

    # A checkpoint's architecture is fixed; its losses may change.
    changed = load_train_config(
        CONFIGS / "tiny_finetune.yaml",
        [
            f"data.train_manifest={tmp_path / 'audio_only.jsonl'}",
            f"init_from={pre.best_checkpoint}",
            *FAST,
            "model.k=8",
        ],
        output_dir=tmp_path / "changed",
    )
    with pytest.raises(ConfigError, match=r"model\.k: cannot change the architecture"):
        train(changed)


def test_accumulated_micro_batches_equal_one_large_batch(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    # Fine-tuning through the whole loop: 2 accumulated micro-batches of 2 == 1 of 4, the
    # latter with the LLM's gradient checkpointing on (recomputation changes nothing). Ragged
    # captions and pre-training are checked on the gradients in test_accumulation.py.
    from multi2cap.data.manifest import read_manifest, write_manifest

    records = read_manifest(stamp_manifests / "train.jsonl")
    for record in records:
        record.captions = [c for c in record.captions if c.startswith("the sound of")]
    write_manifest(records, tmp_path / "equal.jsonl")

    def run(micro: int) -> TrainResult:
        overrides = [f"data.train_manifest={tmp_path / 'equal.jsonl'}", *FAST, "optim.epochs=1"]
        overrides += ["augment.enabled=false", f"optim.micro_batch_size={micro}"]
        overrides += [f"runtime.gradient_checkpointing={str(micro == 4).lower()}"]
        # AdamW's first steps are sign-like: with the default eps 1e-8 an entry whose gradient
        # is rounding noise (~1e-9, LoRA A while B is nearly zero) moves by a sizeable part of
        # lr in a noise-given direction; eps 1e-6 keeps such entries still without touching
        # the entries with real gradients, whose agreement is what this test checks.
        overrides += ["optim.eps=1e-6"]
        config = load_train_config(CONFIGS / "tiny_finetune.yaml", overrides, tmp_path / str(micro))
        return train(config)

    accumulated, whole = run(2), run(4)
    assert accumulated.global_step == whole.global_step == 2
    assert accumulated.train_losses == pytest.approx(whole.train_losses, rel=1e-5)
    a = load_file(accumulated.final_checkpoint / "trainable.safetensors")
    b = load_file(whole.final_checkpoint / "trainable.safetensors")
    # A CPU with other vector kernels (AVX-512 against AVX2) rounds the two runs' sums apart by
    # ~1e-7; AdamW's sign-like first steps turn that into up to lr on the rare entry whose
    # gradient is that small (1 of 1,024 in one LoRA matrix, 2e-4, measured): all but such
    # entries agree to 1e-5, and none by more than lr * steps.
    for key, value in a.items():
        close = torch.isclose(value, b[key], rtol=1e-4, atol=1e-5)
        assert close.float().mean() >= 0.99, key
        assert (value - b[key]).abs().max() <= 2 * 3e-3, key  # lr 3e-3, 2 steps


def test_best_metric_that_cannot_be_computed_fails_before_training(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    config = _config(
        stamp_manifests,
        tmp_path,
        f"data.val_manifest={stamp_manifests / 'val.jsonl'}",
        "eval.every_epochs=1",
        "eval.metrics=[bleu_1]",
        "eval.best_metric=cider_d",
    )
    with pytest.raises(ConfigError, match="best_metric 'cider_d'"):
        train(config)
    assert not (tmp_path / "checkpoints").exists()


def test_pretraining_selects_on_the_audio_only_path_when_the_recipe_says_so(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    from multi2cap.model.multi2cap import Multi2Cap

    pre = train(
        _config(
            stamp_manifests,
            tmp_path,
            f"data.val_manifest={stamp_manifests / 'val.jsonl'}",
            "eval.every_epochs=1",
            "eval.metrics=[bleu_1]",
            "eval.best_metric=val_loss",
            "eval.select_path=audio_only",
            "augment.enabled=false",
        )
    )
    val = [r for r in pre.history if r["kind"] == "val"]
    assert pre.best_metric == "audio_only_val_loss"
    assert pre.best_score == min(r["audio_only_val_loss"] for r in val)
    # The frame path's val_loss is the teacher-forced L_cap of pre-training's forward on the
    # validation clips with their frames (eval mode, no augmentation), recomputed here.
    from multi2cap.data.dataset import CaptionDataset, collate_captions
    from multi2cap.data.manifest import read_manifest

    model = Multi2Cap.from_pretrained(pre.final_checkpoint, load_vision=True).eval()
    records = read_manifest(stamp_manifests / "val.jsonl")
    dataset = CaptionDataset(
        records, train=False, clip_seconds=2.0, with_images=True, image_size=32, augment=None
    )
    batch = collate_captions([dataset[i] for i in range(len(records))])
    with torch.no_grad():
        loss_cap = model(batch, "pretrain").loss_cap
    assert val[-1]["val_loss"] == pytest.approx(float(loss_cap), rel=1e-4)


def test_pretraining_validation_without_frames_falls_back_to_the_audio_only_path(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    from multi2cap.data.manifest import read_manifest
    from multi2cap.model.config import Multi2CapConfig
    from multi2cap.model.multi2cap import Multi2Cap
    from multi2cap.train.validation import Validator

    config = _config(stamp_manifests, tmp_path, "eval.metrics=[bleu_1]", "eval.best_metric=bleu_1")
    records = read_manifest(stamp_manifests / "val.jsonl")
    model = Multi2Cap(Multi2CapConfig.tiny([c for r in records for c in r.captions]))
    assert Validator(config, records, main=False).paths(model) == {
        "frame": "",
        "audio_only": "audio_only_",
    }
    for record in records:
        record.image = None
    assert Validator(config, records, main=False).paths(model) == {"audio_only": ""}
