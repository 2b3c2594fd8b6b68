"""L_align over the whole effective batch under gradient accumulation (`optim.align_batch:
effective`), by gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch
Size under Memory Limited Setup").

The paper contrasts within batches of 320; with 8 clips per forward pass and 40 accumulation
steps, a per-micro-batch InfoNCE would contrast within 8. Instead, per optimizer step:

1. every micro-batch of the step is embedded without a graph (`Multi2Cap.alignment_rows`: CED,
   CLIP, grounding and the L_align projections; not the LLM), and the rows of all processes are
   gathered (each padded to `accumulation x micro_batch_size`, so no host sync);
2. L_align over all of them and its gradient with respect to each row and to the temperature
   are computed once, identically on every process (`Multi2Cap.alignment_cache`);
3. each micro-batch then runs its usual forward and backward, with L_align replaced by a
   surrogate whose gradient is the cached one (`AlignmentLoss.surrogate`).

The random generators are restored before each micro-batch's second pass, so dropout draws the
same masks as in the first and the rows the gradient was taken at are the rows recomputed.
Cost: one more no-graph forward of CED, CLIP and the grounding per micro-batch, and the rows
(K + 2 vectors of `align_dim` per clip) kept for the step; docs/training.md has measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator

from multi2cap.model.grounding import gather_rows
from multi2cap.model.step_share import AlignCache
from multi2cap.train.batches import to_device
from multi2cap.train.sharding import is_sharded


@dataclass
class RngState:
    """The torch generators that dropout draws from: CPU, and the device's on CUDA."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self, device: torch.device) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)


def alignment_caches(
    inner: Any,
    runs: list[tuple[dict[str, Any], bool]],
    accelerator: Accelerator,
    rows_per_process: int,
) -> tuple[list[AlignCache], list[RngState]]:
    """Passes 1 and 2 above for one optimizer step: per run (micro-batch, usable), its share of
    the effective batch's L_align gradient (zero for a stand-in run, whose clips are not part of
    the contrastive batch) and the generator state to restore before its forward."""
    device = accelerator.device
    width = (inner.config.k + 2) * inner.config.align_dim
    if is_sharded(inner):
        # FSDP2 makes the first module that runs forward its root; the first pass enters the
        # sharded blocks through `alignment_rows`, so settle the root first (idempotent).
        inner._get_fsdp_state()._lazy_init()
    states, kept, sizes = [], [], []
    for batch, usable in runs:
        states.append(RngState.capture(device))
        with accelerator.autocast():
            rows = inner.alignment_rows(to_device(batch, device))
        sizes.append(rows.shape[0] if usable else 0)
        if usable:
            kept.append(rows)
    local = torch.cat(kept) if kept else torch.zeros(0, width, device=device)
    everything, valid, offset = gather_rows(local, rows_per_process)
    cache = inner.alignment_cache(everything, valid)
    own = cache.grad_rows[offset : offset + local.shape[0]]
    caches, start = [], 0
    for (batch, usable), size in zip(runs, sizes, strict=True):
        if usable:
            grad = own[start : start + size]
            start += size
        else:
            grad = torch.zeros(batch["audio"].shape[0], width, device=device)
        caches.append(AlignCache(cache.loss, grad, cache.grad_scale))
    return caches, states
