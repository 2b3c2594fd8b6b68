"""`init_backbones`: fine-tuning from a checkpoint saved on another machine, whose backbone
folders are elsewhere here (the recipe points at them; relative folders are the recipe's)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from multi2cap_testkit import local_backbone_config, move_machine, save_local_backbones

from multi2cap.assets import AssetNotFoundError
from multi2cap.model.config import CONFIG_FILE
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.recipes import RECIPES_DIR
from multi2cap.train import ConfigError, load_train_config, train

BACKBONES_ENV = "MULTI2CAP_BACKBONES"  # spelled out: the documented name

CONFIGS = RECIPES_DIR
FAST = ["optim.batch_size=4", "optim.micro_batch_size=2", "optim.epochs=1",
        "augment.enabled=false", "eval.every_epochs=0", "runtime.progress=false",
        "runtime.tensorboard=false"]  # fmt: skip


def test_fine_tuning_a_moved_checkpoint_through_init_backbones(
    stamp_manifests: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BACKBONES_ENV, raising=False)
    torch.manual_seed(0)
    origin = tmp_path / "machine_a"
    Multi2Cap(local_backbone_config(save_local_backbones(origin / "models"))).save_pretrained(
        origin / "ckpt"
    )
    here = move_machine(origin, tmp_path / "machine_b")
    base = [f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
            f"init_from={here / 'ckpt'}", *FAST]  # fmt: skip
    with pytest.raises(AssetNotFoundError, match=r"init_backbones: \{audio: DIR\}"):
        train(load_train_config(CONFIGS / "tiny_finetune.yaml", base, output_dir=tmp_path / "x"))

    # In a recipe, the folders are relative to the recipe's own folder.
    recipe = here / "recipe.yaml"
    tree = yaml.safe_load((CONFIGS / "tiny_finetune.yaml").read_text())
    tree["init_backbones"] = {"audio": "models/ced-tiny", "llm": "./models/llm-tiny"}
    recipe.write_text(yaml.safe_dump(tree))
    config = load_train_config(recipe, base, output_dir=tmp_path / "fine")
    assert config.init_backbones == {
        "audio": str(here / "models" / "ced-tiny"),
        "llm": str(here / "models" / "llm-tiny"),
    }
    result = train(config)
    assert result.global_step == 2 and all(math.isfinite(x) for x in result.train_losses)
    saved = yaml.safe_load((result.final_checkpoint / CONFIG_FILE).read_text())
    assert saved["llm"]["source"] == str(here / "models" / "llm-tiny")  # loads here, alone
    assert Multi2Cap.from_pretrained(result.final_checkpoint).caption(torch.zeros(8000))


def test_init_backbones_needs_a_checkpoint_and_known_roles(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    manifest = f"data.train_manifest={stamp_manifests / 'train.jsonl'}"
    config = load_train_config(
        CONFIGS / "tiny_finetune.yaml", [manifest, "init_backbones.llm=/models/llm", *FAST],
        output_dir=tmp_path / "run",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="init_backbones: applies to the init_from checkpoint"):
        train(config)
    with pytest.raises(ConfigError, match=r"init_backbones\.decoder"):
        load_train_config(CONFIGS / "tiny_finetune.yaml", ["init_backbones.decoder=/x"])
