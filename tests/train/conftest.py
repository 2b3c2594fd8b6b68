"""Small manifests of real Tux Paint sounds, pictures and descriptions for training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from multi2cap.data.manifest import ManifestRecord, write_manifest
from stamp_manifests import stamp_records


@pytest.fixture(scope="session")
def stamp_manifests(tuxpaint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with `train.jsonl` (8 clips with images), `val.jsonl` (the same 8 clips) and
    `corrupt.jsonl` (the 8 clips plus one unreadable file)."""
    folder = tmp_path_factory.mktemp("manifests")
    records = stamp_records(tuxpaint_dir)
    write_manifest(records, folder / "train.jsonl")
    write_manifest(stamp_records(tuxpaint_dir, "val"), folder / "val.jsonl")
    broken = folder / "broken.ogg"
    broken.write_bytes(b"OggS this is not an ogg stream" * 10)
    bad = ManifestRecord(
        id="broken_clip",
        dataset="tuxpaint",
        split="train",
        audio=str(broken),
        captions=["nothing at all"],
        image=records[0].image,
    )
    write_manifest([*records[:3], bad, *records[3:]], folder / "corrupt.jsonl")
    return folder


@pytest.fixture(scope="session")
def finetuned_tiny(stamp_manifests: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model fine-tuned on the 8 stamp clips (15 epochs, no augmentation): its LoRA
    differs from zero, and its candidates name the stamps' animals, so preference pairs have
    something to choose between. Its decoder LoRA has dropout 0.1 (the paper's), which the
    preference stage must switch off."""
    from multi2cap.recipes import RECIPES_DIR
    from multi2cap.train import load_train_config, train

    out = tmp_path_factory.mktemp("finetuned")
    result = train(
        load_train_config(
            RECIPES_DIR / "tiny_finetune.yaml",
            [
                f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
                "optim.batch_size=4",
                "optim.micro_batch_size=4",
                "optim.epochs=15",
                "augment.enabled=false",
                "eval.every_epochs=0",
                "runtime.progress=false",
                "runtime.tensorboard=false",
            ],
            output_dir=out,
        )
    )
    # Dropout is no part of the weights: the checkpoint's config says 0.1 from here on.
    config = result.final_checkpoint / "config.yaml"
    tree = yaml.safe_load(config.read_text(encoding="utf-8"))
    tree["llm"]["lora"]["dropout"] = 0.1
    config.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return result.final_checkpoint
