"""Shared helpers of the probe and ablation tests (no tests here): real Tux Paint clips with
their pictures as manifests, and a tiny random CLIP model folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multi2cap.data.manifest import ManifestRecord, write_manifest

STAMPS = (
    "animals/amphibians/frog",
    "animals/birds/crow",
    "animals/birds/cuckoo",
    "animals/birds/duck",
    "animals/birds/owl",
    "animals/birds/penguin",
    "animals/insects/bee",
    "animals/mammals/aquatic/dolphin",
)


def stamp_records(stamps_dir: Path, n: int = len(STAMPS)) -> list[ManifestRecord]:
    """The first `n` stamps: sound, picture, the folder as category and two captions from the
    stamp's English description (`A frog.` -> `a frog calls`, `the sound of a frog`)."""
    records = []
    for stem in STAMPS[:n]:
        base = stamps_dir / stem
        if not base.with_suffix(".ogg").is_file() or not base.with_suffix(".png").is_file():
            pytest.skip(f"Tux Paint stamp {stem} missing from {stamps_dir}")
        text = base.with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0]
        thing = text.strip().rstrip(".").lower()
        records.append(
            ManifestRecord(
                id=Path(stem).name,
                dataset="tuxpaint",
                split="test",
                audio=str(base.with_suffix(".ogg")),
                captions=[f"{thing} calls", f"the sound of {thing.split(' ', 1)[-1]}"],
                image=str(base.with_suffix(".png")),
                category=Path(stem).parent.name,
            )
        )
    return records


def write_stamp_manifest(stamps_dir: Path, path: Path, n: int = len(STAMPS)) -> Path:
    write_manifest(stamp_records(stamps_dir, n), path)
    return path


def tiny_clip(folder: Path, words: list[str]) -> Path:
    """A random CLIPModel (width 32, 32-px images) with a word-level tokenizer over `words`,
    saved as a folder that `ClipJointSpace` loads like a hub checkpoint."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            **tower,
            vocab_size=len(vocab),
            max_position_embeddings=16,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            projection_dim=16,
        ),
        vision_config=dict(**tower, image_size=32, patch_size=8, projection_dim=16),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
