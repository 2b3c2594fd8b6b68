"""Visual Feature Reconstructor psi (paper section 4.3): g_hat = psi(A) from audio alone.

The masked audio tokens are averaged into K vectors with weights `(B, K, T)`, and one shared
two-layer MLP (LayerNorm-Linear-GELU-Linear, the paper's "MLP-based" module) maps each to the
grounding width, so g_hat_k reconstructs g_k. How the K averages are taken follows
`grounding.pool` (docs/model.md, "Readings of the paper"):

- `time`: the same K time segments as g (`segment_weights`), unchanged from before the option.
- `space`: g_k is an image region, and audio has no spatial layout, so no fixed split of the
  audio can stand for a region. Each region k has a learned query q_k that attention-pools the
  valid audio tokens (one softmax over time per region, padding masked, no value projection:
  the average stays in the audio space the MLP reads), which is what the grounding itself does
  with the region's patches as queries, the patches replaced by what the VFR learns of a region
  from sound alone; a learned region embedding e_k is added to the pooled vector, so that the
  shared MLP knows which region it reconstructs even where the queries pool alike (short clips
  have a few audio tokens to share among K regions).

L_vfr (Eq. 3) towards the detached g, so the reconstruction never pulls g towards audio:
`vfr_loss` with `reduction` `sum` (the paper's squared norm ||g - g_hat||^2 per clip over its
K x d_g elements, mean over clips; default) or `mean` (the mean squared error over elements,
`F.mse_loss`: the sum divided by K x d_g, 4096 at K 4, d_g 1024, at the same beta).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multi2cap.model.config import VFR_REDUCTIONS, GroundingPool, VfrReduction
from multi2cap.model.grounding import segment_weights


class VisualFeatureReconstructor(nn.Module):
    """`(B, T, d_a)` audio tokens with their mask -> `(B, K, d_g)` g_hat (see the module
    docstring for the two `pool` readings). Under `time` the state dict is the MLP alone, as
    before the option; `space` adds `queries (K, d_a)`, the `key` projection (no bias) and the
    region embeddings `regions (K, d_a)`."""

    def __init__(
        self, d_audio: int, hidden: int, d_g: int, *, k: int = 4, pool: GroundingPool = "space"
    ) -> None:
        super().__init__()
        self.k = k
        self.pool: GroundingPool = pool
        self.mlp = nn.Sequential(
            nn.LayerNorm(d_audio), nn.Linear(d_audio, hidden), nn.GELU(), nn.Linear(hidden, d_g)
        )
        if pool == "space":
            self.queries = nn.Parameter(torch.randn(k, d_audio) / math.sqrt(d_audio))
            # No bias: it would add the same score to every step of a query (softmax-invariant).
            self.key = nn.Linear(d_audio, d_audio, bias=False)
            self.regions = nn.Parameter(torch.randn(k, d_audio))

    def pooling_weights(self, audio: Tensor, mask: Tensor) -> Tensor:
        """`(B, K, T)` averaging weights over the valid steps of `audio (B, T, d_a)`,
        `mask (B, T)` True=valid: the time segments, or each region query's softmax."""
        if self.pool == "time":
            return segment_weights(mask, self.k)
        scores = torch.einsum("btd,kd->bkt", self.key(audio), self.queries.to(audio.dtype))
        scores = scores / math.sqrt(audio.shape[-1])
        valid = mask.clone()
        valid[:, 0] |= ~mask.any(dim=1)  # no valid step: the first one, as segment_weights
        return scores.masked_fill(~valid.unsqueeze(1), float("-inf")).softmax(dim=-1)

    def forward(self, audio: Tensor, mask: Tensor) -> Tensor:
        """`audio (B, T, d_a)`, `mask (B, T)` True=valid -> g_hat `(B, K, d_g)`."""
        pooled = torch.bmm(self.pooling_weights(audio, mask).to(audio.dtype), audio)
        if self.pool == "space":
            pooled = pooled + self.regions.to(pooled.dtype)
        return self.mlp(pooled)


def vfr_loss(g_hat: Tensor, g: Tensor, reduction: VfrReduction = "sum") -> Tensor:
    """L_vfr of `g_hat (B, K, d_g)` towards the detached `g`, in float32: `sum` = Eq. 3, the
    squared L2 norm of each clip's K x d_g difference, averaged over the B clips; `mean` = the
    mean over all B x K x d_g elements (`sum` / (K d_g))."""
    diff_from = g.detach().float()
    if reduction == "mean":
        return F.mse_loss(g_hat.float(), diff_from)
    if reduction == "sum":
        return (g_hat.float() - diff_from).square().sum(dim=(1, 2)).mean()
    raise ValueError(f"vfr reduction must be one of {VFR_REDUCTIONS}, got {reduction!r}")
