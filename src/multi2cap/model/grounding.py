"""AV-Grounding (paper section 4.2) and the alignment loss L_align (Eq. 2).

Audio tokens A (B, T, d_a) query CLIP patch tokens V (B, P, d_v) through one cross-attention
block (residual + LayerNorm + FFN, post-norm), so each audio step gathers the visual evidence it
explains; the result is average-pooled along time into K segments, giving g (B, K, d_g).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def segment_weights(mask: Tensor, k: int) -> Tensor:
    """Masked adaptive average pooling weights `(B, K, T)`: row k averages the valid frames
    `[floor(k L / K), ceil((k + 1) L / K))` of a sample with L valid frames (valid frames first,
    as `AdaptiveAvgPool1d` splits a length-L sequence). Segments overlap by one frame when K does
    not divide L, and repeat frames when L < K, so every segment is non-empty for L >= 1."""
    lengths = mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
    seg = torch.arange(k, device=mask.device).unsqueeze(0)  # (1, K)
    start = (seg * lengths) // k
    end = ((seg + 1) * lengths + k - 1) // k
    t = torch.arange(mask.shape[1], device=mask.device).view(1, 1, -1)
    inside = (t >= start.unsqueeze(-1)) & (t < end.unsqueeze(-1))  # (B, K, T)
    weights = inside.float()
    return weights / weights.sum(dim=-1, keepdim=True)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid steps: `x (B, T, D)`, `mask (B, T)` -> `(B, D)`."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


@dataclass
class GroundingOutput:
    """`g (B, K, d_g)`; `attention (B, T, P)`: head-averaged weights of audio step over patch,
    only when asked for (`need_weights=True`), else None."""

    g: Tensor
    attention: Tensor | None


class AVGrounding(nn.Module):
    """Cross-attention of audio queries over visual keys/values, then K-segment pooling.

    Without `need_weights` the attention runs fused (`nn.MultiheadAttention` then calls
    `F.scaled_dot_product_attention`: flash / memory-efficient kernels on GPU, no (B, H, T, P)
    weight tensor kept for backward); training and captioning take that path. The weights are
    materialised only for the probes (`Multi2Cap.probe_embeddings`); both paths compute the
    same function (tested)."""

    def __init__(self, d_audio: int, d_visual: int, d_g: int, heads: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.audio_proj = nn.Linear(d_audio, d_g)
        self.visual_proj = nn.Linear(d_visual, d_g)
        self.attn = nn.MultiheadAttention(d_g, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d_g)
        self.ffn = nn.Sequential(nn.Linear(d_g, 4 * d_g), nn.GELU(), nn.Linear(4 * d_g, d_g))
        self.norm2 = nn.LayerNorm(d_g)

    def forward(
        self,
        audio: Tensor,
        audio_mask: Tensor,
        visual: Tensor,
        weights: Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> GroundingOutput:
        """`audio (B, T, d_a)`, `audio_mask (B, T)` True=valid, `visual (B, P, d_v)` patch
        tokens; `weights (B, K, T)` from `segment_weights` (computed when omitted);
        `need_weights` returns the attention weights too (slower, for probes)."""
        q = self.audio_proj(audio)
        kv = self.visual_proj(visual.to(q.dtype))
        attended, attention = self.attn(
            q, kv, kv, need_weights=need_weights, average_attn_weights=True
        )
        x = self.norm1(q + attended)
        x = self.norm2(x + self.ffn(x))
        if weights is None:
            weights = segment_weights(audio_mask, self.k)
        g = torch.bmm(weights.to(x.dtype), x)
        return GroundingOutput(g=g, attention=attention)


def _gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """All rows of `x (n, D)` across DDP ranks (local rows keep their graph), and the offset of
    the local rows. Ranks may hold different row counts. Identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    sizes = [int(c.item()) for c in counts]
    padded = x.new_zeros(max(sizes), x.shape[1])
    padded[: x.shape[0]] = x.detach()
    chunks = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    rows = [chunk[:size] for chunk, size in zip(chunks, sizes, strict=True)]
    rows[rank] = x
    return torch.cat(rows), sum(sizes[:rank])


class InfoNCE(nn.Module):
    """Symmetric InfoNCE over the (global) batch: cosine similarity times a learnable inverse
    temperature (CLIP-style, initialised to 1/`temperature`, capped at 100), targets on the
    diagonal. Under DDP the other ranks' rows serve as extra negatives."""

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        # Shape (1,), not a scalar: FSDP cannot shard 0-d parameters.
        self.log_scale = nn.Parameter(torch.tensor([1.0 / temperature]).log())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        key = prefix + "log_scale"
        if key in state_dict and state_dict[key].dim() == 0:  # checkpoints before FSDP support
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, queries: Tensor, keys: Tensor) -> Tensor:
        """`queries (n, D)` and `keys (n, D)`, row i of each a positive pair -> scalar loss."""
        q = F.normalize(queries.float(), dim=-1)
        k = F.normalize(keys.float(), dim=-1)
        all_q, offset = _gather_with_grad(q)
        all_k, _ = _gather_with_grad(k)
        scale = self.log_scale.clamp(max=math.log(100.0)).exp()
        targets = torch.arange(q.shape[0], device=q.device) + offset
        q_to_k = F.cross_entropy(scale * q @ all_k.T, targets)
        k_to_q = F.cross_entropy(scale * k @ all_q.T, targets)
        return (q_to_k + k_to_q) / 2


class AlignmentLoss(nn.Module):
    """L_align = (1/2K) sum_k [CE(g_k, A_mean) + CE(g_k, V_cls)] (Eq. 2, alpha applied outside).

    g, A_mean and V_cls are linearly projected into one `align_dim` space; one learnable
    temperature is shared by both terms."""

    def __init__(self, d_g: int, d_audio: int, d_visual: int, align_dim: int, temperature: float):
        super().__init__()
        self.g_proj = nn.Linear(d_g, align_dim)
        self.audio_proj = nn.Linear(d_audio, align_dim)
        self.visual_proj = nn.Linear(d_visual, align_dim)
        self.nce = InfoNCE(temperature)

    def project(self, g: Tensor, a_mean: Tensor, v_cls: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Shared-space embeddings (not normalised): `(B, K, E)`, `(B, E)`, `(B, E)`."""
        return self.g_proj(g), self.audio_proj(a_mean), self.visual_proj(v_cls.to(g.dtype))

    def forward(self, g: Tensor, a_mean: Tensor, v_cls: Tensor) -> Tensor:
        """`g (B, K, d_g)`, `a_mean (B, d_a)`, `v_cls (B, d_v)` -> scalar."""
        g_s, a_s, v_s = self.project(g, a_mean, v_cls)
        k = g.shape[1]
        total = sum(self.nce(g_s[:, i], a_s) + self.nce(g_s[:, i], v_s) for i in range(k))
        return total / (2 * k)
