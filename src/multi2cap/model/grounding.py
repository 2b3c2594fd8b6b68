"""AV-Grounding (paper section 4.2) and the alignment loss L_align (Eq. 2).

One cross-attention block (residual + LayerNorm + FFN, post-norm) between the CED tokens
A (B, T, d_a) and CLIP's patch tokens V (B, P, d_v), then pooling into K tokens g (B, K, d_g).
Two readings of the paper (`GroundingPool`, docs/model.md "Readings of the paper"):

- `space` (default, the paper's "spatially grounded"): the patches are the queries and the valid
  audio tokens the keys/values (padding masked), so each image region gathers the audio evidence
  for it; the P = h x w patch grid (h, w from the vision config) is average-pooled to
  sqrt(K) x sqrt(K) regions (`F.adaptive_avg_pool2d`), row-major.
- `time` (the reading before, kept for old checkpoints and comparison): the audio steps are the
  queries and the patches the keys/values, so each audio step gathers the visual evidence it
  explains; the result is average-pooled along time into K segments (`segment_weights`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from multi2cap.model.config import GroundingPool, is_square


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


def key_padding(mask: Tensor) -> Tensor:
    """`nn.MultiheadAttention`'s `key_padding_mask` (True = ignore) for audio keys with validity
    `mask (B, T)` (True = valid). A sample without any valid token keeps its first one, as
    `segment_weights` does, so that its softmax is defined."""
    padding = ~mask
    padding[:, 0] &= mask.any(dim=1)
    return padding


@dataclass
class GroundingOutput:
    """`g (B, K, d_g)`; `attention`: head-averaged weights, only when asked for
    (`need_weights=True`), else None: `(B, T, P)` audio step over patch under `pool: time`,
    `(B, P, T)` patch over audio step under `pool: space` (0 on padded steps)."""

    g: Tensor
    attention: Tensor | None


class AVGrounding(nn.Module):
    """Cross-attention between audio and patch tokens, then pooling into K tokens (see the
    module docstring for the two `pool` readings; the parameters are the same for both).

    Without `need_weights` the attention runs fused (`nn.MultiheadAttention` then calls
    `F.scaled_dot_product_attention`: flash / memory-efficient kernels on GPU, no (B, H, ., .)
    weight tensor kept for backward); training and captioning take that path. The weights are
    materialised only for the probes (`Multi2Cap.probe_embeddings`); both paths compute the
    same function (tested)."""

    def __init__(
        self,
        d_audio: int,
        d_visual: int,
        d_g: int,
        heads: int,
        k: int,
        pool: GroundingPool = "space",
    ) -> None:
        super().__init__()
        if pool == "space" and not is_square(k):
            raise ValueError(f"AVGrounding(pool='space'): K must be a perfect square, got {k}")
        self.k = k
        self.pool: GroundingPool = pool
        self.audio_proj = nn.Linear(d_audio, d_g)
        self.visual_proj = nn.Linear(d_visual, d_g)
        self.attn = nn.MultiheadAttention(d_g, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d_g)
        self.ffn = nn.Sequential(nn.Linear(d_g, 4 * d_g), nn.GELU(), nn.Linear(4 * d_g, d_g))
        self.norm2 = nn.LayerNorm(d_g)

    def _block(self, x: Tensor, attended: Tensor) -> Tensor:
        x = self.norm1(x + attended)
        return self.norm2(x + self.ffn(x))

    def forward(
        self,
        audio: Tensor,
        audio_mask: Tensor,
        visual: Tensor,
        *,
        grid: tuple[int, int] | None = None,
        need_weights: bool = False,
    ) -> GroundingOutput:
        """`audio (B, T, d_a)`, `audio_mask (B, T)` True=valid, `visual (B, P, d_v)` patch
        tokens (no CLS); `grid` (rows, columns) of the patches, required under `pool: space`
        (`VisionEncoder.grid`); `need_weights` returns the attention weights too (slower, for
        probes)."""
        a = self.audio_proj(audio)
        v = self.visual_proj(visual.to(a.dtype))
        if self.pool == "time":
            attended, attention = self.attn(
                a, v, v, need_weights=need_weights, average_attn_weights=True
            )
            x = self._block(a, attended)
            return GroundingOutput(
                torch.bmm(segment_weights(audio_mask, self.k).to(x.dtype), x), attention
            )
        rows, cols = self.check_grid(grid, visual.shape[1])
        attended, attention = self.attn(
            v,
            a,
            a,
            key_padding_mask=key_padding(audio_mask),
            need_weights=need_weights,
            average_attn_weights=True,
        )
        x = self._block(v, attended)  # (B, P, d_g), P = rows x cols row-major
        planes = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], rows, cols)
        g = F.adaptive_avg_pool2d(planes, math.isqrt(self.k)).flatten(2).transpose(1, 2)
        return GroundingOutput(g, attention)

    def check_grid(self, grid: tuple[int, int] | None, n_patches: int) -> tuple[int, int]:
        """`grid` validated against the P patch tokens and K (`pool: space`): P must be
        rows x columns (a CLIP class token must not be among the patches), and the grid at
        least sqrt(K) each way (a finer pooling would repeat patches, not add regions)."""
        if grid is None:
            raise ValueError("AV-grounding with pool: space needs the patch grid (rows, columns)")
        rows, cols = grid
        if rows * cols != n_patches:
            raise ValueError(
                f"AV-grounding: {n_patches} visual tokens, but the patch grid is {rows}x{cols} "
                f"= {rows * cols} (a class token among the patches?)"
            )
        side = math.isqrt(self.k)
        if side > min(rows, cols):
            raise ValueError(
                f"k ({self.k} = {side}x{side}) needs a patch grid of at least {side}x{side} "
                f"under grounding.pool: space; the vision config gives {rows}x{cols} "
                "(image_size / patch_size)"
            )
        return rows, cols


def _world() -> tuple[int, int]:
    """(world size, rank) of the default process group; (1, 0) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_rows(x: Tensor, rows: int | None = None) -> tuple[Tensor, Tensor, int]:
    """Every process's rows of `x (n, D)`: `(W * rows, D)` with each process's block padded to
    `rows`, the validity mask `(W * rows,)` and the offset of this process's rows.

    Other processes' rows are detached; this process's rows keep their graph with the gradient
    multiplied by W (the forward value is unchanged). A loss computed from all the rows is then
    the global-batch loss on every process, and DDP's (or FSDP's) mean over processes of the
    parameter gradients is that loss's gradient: each process back-propagates W times the
    gradient of its own rows (every role they play, as positives and as the other rows'
    negatives), the mean divides by W. Parameters used after the gather (the temperature) get
    the same gradient on every process, so the mean keeps it. `rows` (>= every process's n, the
    same on all) keeps the step free of host syncs; None reads the sizes (one sync)."""
    world, rank = _world()
    n = x.shape[0]
    if world == 1:
        return x, torch.ones(n, dtype=torch.bool, device=x.device), 0
    if rows is None:
        size = torch.tensor([n], device=x.device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        rows = int(torch.cat(sizes).max())
    if n > rows:
        raise ValueError(f"gather_rows: {n} local rows, more than the padded block of {rows}")
    flag = x.new_ones(n, 1)
    padded = x.new_zeros(rows, x.shape[1] + 1)  # last column: 1 for a real row
    padded[:n] = torch.cat([x.detach(), flag], dim=1)
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    boosted = x.detach() + (x - x.detach()) * world  # exactly x, gradient W times
    chunks[rank] = torch.cat([torch.cat([boosted, flag], dim=1), padded[n:]])
    everything = torch.cat(chunks)
    return everything[:, :-1], everything[:, -1] > 0.5, rank * rows


def symmetric_nce(queries: Tensor, keys: Tensor, scale: Tensor, valid: Tensor) -> Tensor:
    """Symmetric InfoNCE of normalised `queries (..., N, E)` against `keys (N, E)`, row i of each
    a positive pair: (CE(q_i -> keys) + CE(k_i -> queries)) / 2, averaged over the valid rows
    and the leading dimensions (the K grounding tokens). Padded rows (`valid` False) are neither
    scored nor negatives. One matrix product for all leading indices."""
    n = keys.shape[0]
    logits = scale * queries @ keys.T  # (..., N, N)
    lead = logits.numel() // (n * n)
    targets = torch.where(valid, torch.arange(n, device=keys.device), -100).repeat(lead)
    q_to_k = logits.masked_fill(~valid, float("-inf")).reshape(-1, n)
    k_to_q = logits.transpose(-1, -2).masked_fill(~valid, float("-inf")).reshape(-1, n)
    return (F.cross_entropy(q_to_k, targets) + F.cross_entropy(k_to_q, targets)) / 2


class InfoNCE(nn.Module):
    """Symmetric InfoNCE over the (global) batch: cosine similarity times a learnable inverse
    temperature (CLIP-style, initialised to 1/`temperature`, capped at 100), targets on the
    diagonal. Under torch.distributed the value is the loss of every process's rows together
    and the gradients are those of that global-batch loss (see `gather_rows`)."""

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        # Shape (1,), not a scalar: FSDP cannot shard 0-d parameters.
        self.log_scale = nn.Parameter(torch.tensor([1.0 / temperature]).log())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        key = prefix + "log_scale"
        if key in state_dict and state_dict[key].dim() == 0:  # checkpoints before FSDP support
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def scale(self, log_scale: Tensor | None = None) -> Tensor:
        """The inverse temperature exp(min(log_scale, log 100)), of `log_scale` when given."""
        value = self.log_scale if log_scale is None else log_scale
        return value.clamp(max=math.log(100.0)).exp()

    def forward(self, queries: Tensor, keys: Tensor, *, rows: int | None = None) -> Tensor:
        """`queries (n, D)` and `keys (n, D)`, row i of each a positive pair -> scalar loss.
        `rows`: see `gather_rows`."""
        q = F.normalize(queries.float(), dim=-1)
        k = F.normalize(keys.float(), dim=-1)
        both, valid, _ = gather_rows(torch.cat([q, k], dim=1), rows)
        all_q, all_k = both.split(q.shape[1], dim=1)
        return symmetric_nce(all_q, all_k, self.scale(), valid)


class AlignmentLoss(nn.Module):
    """L_align = (1/2K) sum_k [CE(g_k, A_mean) + CE(g_k, V_cls)] (Eq. 2, alpha applied outside).

    g, A_mean and V_cls are linearly projected into one `align_dim` space; one learnable
    temperature is shared by both terms. Each sample becomes one row of K + 2 normalised
    vectors (`embed`), gathered across processes once per call (not once per term), and the
    2K terms are two batched matrix products (`loss_of_rows`). `loss_of_rows` on rows gathered
    over a whole effective batch is also what the gradient cache of the trainer evaluates
    (`cached_gradients`, `surrogate`)."""

    def __init__(self, d_g: int, d_audio: int, d_visual: int, align_dim: int, temperature: float):
        super().__init__()
        self.g_proj = nn.Linear(d_g, align_dim)
        self.audio_proj = nn.Linear(d_audio, align_dim)
        self.visual_proj = nn.Linear(d_visual, align_dim)
        self.nce = InfoNCE(temperature)

    def project(self, g: Tensor, a_mean: Tensor, v_cls: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Shared-space embeddings (not normalised): `(B, K, E)`, `(B, E)`, `(B, E)`."""
        return self.g_proj(g), self.audio_proj(a_mean), self.visual_proj(v_cls.to(g.dtype))

    def embed(self, g: Tensor, a_mean: Tensor, v_cls: Tensor) -> Tensor:
        """The rows L_align compares: `(B, (K + 2) E)` float32, per sample the normalised
        shared-space g_1..g_K, A_mean and V_cls side by side."""
        g_s, a_s, v_s = self.project(g, a_mean, v_cls)
        parts = [F.normalize(x.float(), dim=-1) for x in (g_s, a_s.unsqueeze(1), v_s.unsqueeze(1))]
        return torch.cat(parts, dim=1).flatten(1)

    def loss_of_rows(self, rows: Tensor, valid: Tensor, log_scale: Tensor | None = None) -> Tensor:
        """L_align over `rows (N, (K + 2) E)` from `embed` (padded rows `valid` False)."""
        e = self.g_proj.out_features
        grid = rows.reshape(rows.shape[0], -1, e)  # (N, K + 2, E)
        g = grid[:, :-2].transpose(0, 1)  # (K, N, E)
        scale = self.nce.scale(log_scale)
        to_audio = symmetric_nce(g, grid[:, -2], scale, valid)
        to_visual = symmetric_nce(g, grid[:, -1], scale, valid)
        return (to_audio + to_visual) / 2

    def forward(
        self, g: Tensor, a_mean: Tensor, v_cls: Tensor, *, rows: int | None = None
    ) -> Tensor:
        """`g (B, K, d_g)`, `a_mean (B, d_a)`, `v_cls (B, d_v)` -> scalar, over every process's
        batch (`rows`: see `gather_rows`)."""
        everything, valid, _ = gather_rows(self.embed(g, a_mean, v_cls), rows)
        return self.loss_of_rows(everything, valid)

    def cached_gradients(self, rows: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gradient cache, first half: L_align over `rows` (every row of an effective batch,
        embedded without graph) and its gradients with respect to the rows and to the
        temperature parameter: `(loss, d loss / d rows (N, R), d loss / d log_scale (1,))`."""
        leaf = rows.detach().requires_grad_(True)
        log_scale = self.nce.log_scale.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = self.loss_of_rows(leaf, valid, log_scale)
            grad_rows, grad_scale = torch.autograd.grad(loss, [leaf, log_scale])
        return loss.detach(), grad_rows, grad_scale

    def surrogate(
        self, rows: Tensor, grad_rows: Tensor, grad_scale: Tensor, replicas: int
    ) -> Tensor:
        """Gradient cache, second half: a scalar whose gradient, once averaged over the
        `replicas` backward passes of an optimizer step (devices x accumulation steps, as DDP
        and gradient accumulation average), is the cached L_align gradient: `rows` is this
        micro-batch's `embed` output with graph, `grad_rows` its rows of the cached gradient."""
        own = (rows * grad_rows).sum() * replicas
        return own + (self.nce.log_scale * grad_scale).sum()
