"""Helpers for the model tests: captions, synthetic tone batches, tiny models."""

from __future__ import annotations

import math

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
