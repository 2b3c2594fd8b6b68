"""Shared helpers of the probe and ablation tests (no tests here): a tiny random CLIP model folder
(the Tux Paint manifests come from `stamp_manifests`)."""

from __future__ import annotations

from pathlib import Path

import torch


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
