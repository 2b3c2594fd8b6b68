"""Fixtures for the serving tests: a saved tiny checkpoint, its model, real sounds."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
from multi2cap_testkit import tiny

from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.train.config import TrainConfig


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return tiny().save_pretrained(tmp_path_factory.mktemp("serve") / "ckpt")


SCORES = {"metric": "cider_d", "score": 0.1234, "epoch": 3,
          "scores": {"bleu_4": 0.051, "cider_d": 0.1234, "val_loss": 2.5}}  # fmt: skip


@pytest.fixture(scope="session")
def run_best(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as training leaves it: the recipe, and `best/` with `best.json`."""
    run = tmp_path_factory.mktemp("run") / "finetune_clotho"
    recipe = TrainConfig.model_validate(
        {"stage": "finetune", "init_from": "/home/alice/runs/pretrain/best",
         "data": {"train_manifest": "/home/alice/data/clotho_dev.jsonl"},
         "optim": {"lr": 1e-4, "batch_size": 384, "epochs": 30},
         "runtime": {"output_dir": "/home/alice/runs/finetune_clotho"}}
    )  # fmt: skip
    run.mkdir()
    (run / "train_config.yaml").write_text(recipe.to_yaml())
    torch.manual_seed(0)
    best = tiny(k=2, grounding={"pool": "time"}).save_pretrained(run / "best")
    (best / "best.json").write_text(json.dumps(SCORES))
    return best


@pytest.fixture(scope="session")
def model(checkpoint: Path) -> Multi2Cap:
    return Multi2Cap.from_pretrained(checkpoint)


@pytest.fixture(scope="session")
def sounds(tuxpaint_dir: Path) -> list[Path]:
    """The six shortest real Tux Paint sounds (ogg), distinct files."""
    found = sorted(
        (p for p in tuxpaint_dir.rglob("*.ogg") if "_desc" not in p.name),
        key=lambda p: (p.stat().st_size, str(p)),
    )
    return found[:6]


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import: set its constants."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache
