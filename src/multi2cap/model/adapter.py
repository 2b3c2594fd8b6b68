"""Ground Adapter: grounding tokens and audio tokens to the LLM width, as one prefix.

prefix = [K grounding tokens ; audio tokens] with mask [K x True ; audio mask], so the valid
tokens of every sample come first (what `CaptionDecoder.assemble` expects). The audio-only
baseline has no grounding tokens and the prefix is the audio tokens alone.

`pool` (`model.adapter_pool`, 1 = the paper: every CED token reaches the LLM) average-pools the
audio tokens of the prefix by that factor before the MLP, as SLAM-AAC's projector downsamples
its encoder's frames: a real LLM's step cost grows with the prefix length (62 tokens per 10-s
clip), and only the decoder's view is shortened (grounding and VFR still read every token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class GroundAdapter(nn.Module):
    """Two MLPs (Linear-GELU-Linear): grounding `d_g -> d_llm` (absent when `d_g` is None) and
    audio `d_a -> d_llm`, the audio tokens first average-pooled by `pool` in time."""

    def __init__(self, d_audio: int, d_llm: int, d_g: int | None, pool: int = 1) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"adapter pool must be >= 1, got {pool}")
        self.pool = pool
        self.audio = _mlp(d_audio, d_llm)
        self.ground = _mlp(d_g, d_llm) if d_g is not None else None

    def forward(
        self, audio: Tensor, audio_mask: Tensor, ground: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """`audio (B, T, d_a)`, `audio_mask (B, T)`, `ground (B, K, d_g)` or None ->
        `prefix (B, K + ceil(T / pool), d_llm)`, `prefix_mask` bool True=valid."""
        audio, audio_mask = pool_tokens(audio, audio_mask, self.pool)
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


def pool_tokens(tokens: Tensor, mask: Tensor, pool: int) -> tuple[Tensor, Tensor]:
    """Average each group of `pool` consecutive tokens over its valid ones: `(B, T, D)`, mask
    `(B, T)` -> `(B, ceil(T / pool), D)` and a mask True where a group holds a valid token. A
    clip's pooled tokens depend on its own valid tokens only, so padding changes nothing and
    valid groups stay first."""
    if pool == 1:
        return tokens, mask
    batch, length, width = tokens.shape
    pad = -length % pool
    weights = F.pad(mask.to(tokens.dtype), (0, pad)).view(batch, -1, pool, 1)
    grouped = F.pad(tokens, (0, 0, 0, pad)).view(batch, -1, pool, width)
    counts = weights.sum(dim=2)
    pooled = (grouped * weights).sum(dim=2) / counts.clamp(min=1)
    return pooled, counts.squeeze(-1) > 0
