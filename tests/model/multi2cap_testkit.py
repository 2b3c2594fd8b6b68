"""Helpers for the model tests: captions, synthetic tone batches, tiny models."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap

SAMPLE_RATE = 16000
CAPTIONS = [
    "a dog barks loudly",
    "rain falls on a tin roof",
    "a bell rings twice",
    "birds sing in the morning",
    "a car engine starts",
    "water drips into a sink",
    "people clap and cheer",
    "a cat meows softly",
]


def tones(n: int, seconds: float = 0.6) -> torch.Tensor:
    """`(n, samples)` pure tones 200, 350, 500, ... Hz at amplitude 0.3: distinct, deterministic."""
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return torch.stack([0.3 * torch.sin(2 * math.pi * (200 + 150 * i) * t) for i in range(n)])


def make_batch(
    n: int, lengths: list[int] | None = None, images: bool = True, seconds: float = 0.6
) -> dict:
    """A collate-style batch (docs/design.md) of tones, zero-padded after `lengths`."""
    audio = tones(n, seconds)
    lens = torch.tensor(lengths if lengths is not None else [audio.shape[1]] * n)
    for i, length in enumerate(lens.tolist()):
        audio[i, length:] = 0.0
    return {
        "ids": [f"clip{i}" for i in range(n)],
        "audio": audio,
        "audio_lengths": lens,
        "images": torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        if images
        else None,
        "captions": CAPTIONS[:n],
        "references": [[c] for c in CAPTIONS[:n]],
    }


def tiny(**overrides) -> Multi2Cap:
    """A tiny Multi2Cap whose vocabulary covers `CAPTIONS` (config overrides as keywords)."""
    return Multi2Cap(Multi2CapConfig.tiny(CAPTIONS, **overrides))


BACKBONE_FOLDERS = {"audio": "ced-tiny", "vision": "clip-tiny", "llm": "llm-tiny"}
"""Folder names of `save_local_backbones`'s backbones, by role."""


def save_local_backbones(root: Path) -> dict[str, Path]:
    """The tiny config's random backbones saved as ordinary backbone folders under `root`, as a
    user's downloaded ones are: a CED folder (`save_ced`), a CLIP vision tower and a causal LM
    with its tokenizer (`save_pretrained`). Returns {role: folder}."""
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel

    from multi2cap.model.ced import CedConfig, CedEncoder, save_ced
    from multi2cap.model.llm import word_level_tokenizer

    tiny_config = Multi2CapConfig.tiny(CAPTIONS)
    folders = {role: root / name for role, name in BACKBONE_FOLDERS.items()}
    save_ced(
        CedEncoder(dataclasses.replace(CedConfig(), **(tiny_config.audio.config or {}))),
        folders["audio"],
    )
    CLIPVisionModel(CLIPVisionConfig(**(tiny_config.vision.config or {}))).save_pretrained(
        folders["vision"]
    )
    llm = tiny_config.llm
    assert llm.family is not None and llm.tokenizer is not None
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(llm.family, **(llm.config or {})))
    lm.save_pretrained(folders["llm"])
    word_level_tokenizer(llm.tokenizer).save_pretrained(folders["llm"])
    return folders


def local_backbone_config(folders: dict[str, Path], **overrides) -> Multi2CapConfig:
    """The tiny config with its backbones loaded from `folders` (absolute paths, as a run on
    the user's machine records them) instead of inline configs."""
    tree = Multi2CapConfig.tiny(CAPTIONS, **overrides).model_dump()
    for role, folder in folders.items():
        tree[role].update(source=str(folder), config=None)
    tree["llm"].update(family=None, tokenizer=None)
    return Multi2CapConfig.model_validate(tree)


def move_machine(source: Path, target: Path) -> Path:
    """Copy `source` (a folder holding `models/<backbones>` and checkpoint folders whose
    config.yaml names them by absolute path) to `target` as if saved there, then move the copy
    away: returns the new location (`target`), where the checkpoints still name the backbones
    at the removed copy's paths, as on a machine they were copied to."""
    import shutil

    import yaml

    shutil.copytree(source, target.with_name(target.name + "-origin"))
    origin = target.with_name(target.name + "-origin")
    for config_file in origin.glob("*/config.yaml"):
        config = yaml.safe_load(config_file.read_text())
        for role, name in BACKBONE_FOLDERS.items():
            if config[role].get("source"):
                config[role]["source"] = str(origin / "models" / name)
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.move(origin, target)
    assert not origin.exists()
    return target
