"""`multi2cap demo --backbones pretrained`: the real SmolLM2-135M-Instruct in the decoder's seat,
the stage-0 taggers beside it, one epoch per stage. The run itself is measured in docs/demo.md;
here: the recipes it trains build a model that takes a pre-training and a fine-tuning step on
the real weights, and the mode is checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from multi2cap_testkit import make_batch, save_local_backbones
from typer.testing import CliRunner

from multi2cap.demo.config import DemoConfig
from multi2cap.demo.training import (
    PRETRAINED_ADAPTER_POOL,
    PRETRAINED_LR,
    Backbones,
    demo_model,
    demo_recipe,
)
from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.train.config import TrainConfig


def test_the_pretrained_mode_trains_one_epoch_per_stage_unless_told(tmp_path: Path) -> None:
    config = DemoConfig(workdir=tmp_path, backbones="pretrained")
    assert (config.pretrain_epochs, config.finetune_epochs) == (1, 1)
    assert (
        DemoConfig(workdir=tmp_path, backbones="pretrained", finetune_epochs=3).finetune_epochs == 3
    )
    assert (
        DemoConfig(workdir=tmp_path).pretrain_epochs,
        DemoConfig(workdir=tmp_path).finetune_epochs,
    ) == (2, 4)
    with pytest.raises(ValueError, match="--backbones must be one of"):
        DemoConfig(workdir=tmp_path, backbones="real")  # type: ignore[arg-type]


def test_an_unknown_backbone_mode_exits_2_before_any_work(tmp_path: Path) -> None:
    from multi2cap.cli.main import app

    result = CliRunner().invoke(app, ["demo", "--backbones", "real", "-o", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "--backbones must be one of" in result.output
    assert not (tmp_path / "w").exists()


def test_the_pretrained_recipes_train_the_real_smollm2(tmp_path: Path, smollm2_dir: Path) -> None:
    folders = save_local_backbones(tmp_path / "models")
    backbones = Backbones(audio=folders["audio"], vision=folders["vision"], llm=smollm2_dir)
    config = DemoConfig(workdir=tmp_path, backbones="pretrained")
    manifests = {k: tmp_path / f"{k}.jsonl" for k in ("pretrain", "finetune", "val")}
    recipe = demo_recipe(
        config, 0, "pretrain", manifests, demo_model(backbones, True, True), None, tmp_path / "p"
    )
    train_config = TrainConfig.model_validate(recipe)
    assert train_config.optim.lr == PRETRAINED_LR and train_config.optim.epochs == 1
    model_config = Multi2CapConfig.model_validate(recipe["model"])
    assert model_config.llm.source == str(smollm2_dir) and model_config.llm.dtype == "float32"
    torch.manual_seed(0)
    model = Multi2Cap(model_config)
    # The real decoder: 30 Llama layers, LoRA on q/v only, frozen weights elsewhere.
    assert model.decoder.hidden_size == 576
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n and "q_proj" in n for n in trainable if n.startswith("decoder"))
    assert not any(n.startswith("decoder") and "lora_" not in n for n in trainable)
    batch = make_batch(2, seconds=2.0)
    tokens, _mask = model.encode_audio(batch["audio"], batch["audio_lengths"])
    prefix, _ = model.audio_prefix(batch["audio"], batch["audio_lengths"])
    expected = model_config.k + -(-tokens.shape[1] // PRETRAINED_ADAPTER_POOL)
    assert prefix.shape == (2, expected, 576)
    for stage in ("pretrain", "finetune"):
        out = model(batch, stage)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        adapter_grad = model.adapter.audio[0].weight.grad
        assert adapter_grad is not None and adapter_grad.abs().sum() > 0
        model.zero_grad()


@pytest.mark.parametrize("backbones", ["stage0", "pretrained"])
def test_the_demo_decodes_every_token_training_keeps(backbones: str, tmp_path: Path) -> None:
    """The recipes' decoding budgets (validation and the checkpoint's `caption` default) cover
    `max_caption_tokens`: a smaller one stops captions short and made the trainer warn on every
    run of the default demo (30 against 32)."""
    folders = Backbones(tmp_path / "audio", tmp_path / "vision", tmp_path / "llm")
    config = DemoConfig(workdir=tmp_path, backbones=backbones)  # type: ignore[arg-type]
    manifests = {k: tmp_path / f"{k}.jsonl" for k in ("pretrain", "finetune", "val")}
    model = demo_model(folders, True, backbones == "pretrained")
    recipe = demo_recipe(config, 0, "pretrain", manifests, model, None, tmp_path / "p")
    keep = recipe["model"]["max_caption_tokens"]
    assert recipe["eval"]["max_new_tokens"] >= keep
    assert recipe["model"]["generation"]["max_new_tokens"] >= keep
