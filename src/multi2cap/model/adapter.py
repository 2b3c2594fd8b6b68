"""Ground Adapter: grounding tokens and audio tokens to the LLM width, as one prefix.

prefix = [K grounding tokens ; audio tokens] with mask [K x True ; audio mask], so the valid
tokens of every sample come first (what `CaptionDecoder.assemble` expects). The audio-only
baseline has no grounding tokens and the prefix is the audio tokens alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class GroundAdapter(nn.Module):
    """Two MLPs (Linear-GELU-Linear): grounding `d_g -> d_llm` (absent when `d_g` is None) and
    audio `d_a -> d_llm`."""

    def __init__(self, d_audio: int, d_llm: int, d_g: int | None) -> None:
        super().__init__()
        self.audio = _mlp(d_audio, d_llm)
        self.ground = _mlp(d_g, d_llm) if d_g is not None else None

    def forward(
        self, audio: Tensor, audio_mask: Tensor, ground: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """`audio (B, T, d_a)`, `audio_mask (B, T)`, `ground (B, K, d_g)` or None ->
        `prefix (B, K + T, d_llm)`, `prefix_mask (B, K + T)` bool True=valid."""
        tokens = self.audio(audio)
        if ground is None:
            if self.ground is not None:
                raise ValueError("this adapter expects grounding tokens")
            return tokens, audio_mask
        if self.ground is None:
            raise ValueError("grounding tokens given to an audio-only adapter")
        g = self.ground(ground.to(tokens.dtype))
        mask = torch.cat([audio_mask.new_ones(g.shape[:2]), audio_mask], dim=1)
        return torch.cat([g, tokens], dim=1), mask
