"""Visual Feature Reconstructor psi (paper section 4.3): g_hat = psi(A) from audio alone.

The audio tokens are pooled into the same K time segments as g (`segment_weights`), and a
two-layer MLP maps each segment to the grounding width, so g_hat_k reconstructs g_k.
L_vfr = MSE(g_hat, stop_grad(g)) (Eq. 3; mean over elements rather than the squared norm, which
only rescales beta): the target is detached so the reconstruction never pulls g towards audio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class VisualFeatureReconstructor(nn.Module):
    """`(B, K, d_a)` segment-pooled audio -> `(B, K, d_g)` g_hat."""

    def __init__(self, d_audio: int, hidden: int, d_g: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(d_audio), nn.Linear(d_audio, hidden), nn.GELU(), nn.Linear(hidden, d_g)
        )

    def forward(self, audio: Tensor, weights: Tensor) -> Tensor:
        """`audio (B, T, d_a)`, `weights (B, K, T)` from `segment_weights` -> `(B, K, d_g)`."""
        return self.mlp(torch.bmm(weights.to(audio.dtype), audio))


def vfr_loss(g_hat: Tensor, g: Tensor) -> Tensor:
    """L_vfr: mean squared error towards the detached grounding tokens."""
    return F.mse_loss(g_hat.float(), g.detach().float())
