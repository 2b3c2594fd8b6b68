"""Fixtures for the serving tests: a saved tiny checkpoint, its model, real sounds."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
import yaml
from multi2cap_testkit import local_backbone_config, save_local_backbones, tiny, tones

from multi2cap.media.audio import SAMPLE_RATE
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
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A run folder as a user's machine leaves it: `models/` with the backbones (named in the
    checkpoint by absolute path, as downloaded folders are), `ckpt/`, and the run's recipe
    naming the backbones, data and outputs by absolute path. Returns (run, captions of
    two 0.8-s tones, `tones(2, seconds=0.8)`, beam 2)."""
    run = tmp_path_factory.mktemp("machine") / "run"
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folders = save_local_backbones(run / "models")
    model = Multi2Cap(local_backbone_config(folders))
    model.save_pretrained(run / "ckpt")
    captions = model.caption(list(tones(2, seconds=0.8)), sampling_rate=SAMPLE_RATE, num_beams=2)
    torch.set_num_threads(threads)
    recipe = TrainConfig.model_validate(
        {"stage": "finetune", "init_from": str(run / "pretrain" / "best"),
         "model": {role: {"source": str(folder)} for role, folder in folders.items()},
         "data": {"train_manifest": str(run / "data" / "train.jsonl")},
         "runtime": {"output_dir": str(run)}}
    ).model_dump(mode="json")  # fmt: skip
    recipe["init_backbones"] = {"llm": str(folders["llm"])}
    (run / "train_config.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return run, captions


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
