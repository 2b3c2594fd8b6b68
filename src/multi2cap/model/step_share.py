"""What the trainer tells `Multi2Cap.forward` about a micro-batch's place in an optimizer step
(`StepShare`, with the gradient cache's L_align as `AlignCache`), so that the losses it returns
are means over the step's effective batch rather than over the micro-batch.

Built by `multi2cap.train.steps` and `multi2cap.train.gradient_cache`; only torch is imported, so
the training package can name these without importing the model's backbones.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class AlignCache:
    """L_align of a whole effective batch, computed by the trainer's gradient cache
    (`AlignmentLoss.cached_gradients`), for one micro-batch: the loss, this micro-batch's rows
    of its gradient `(B, (K + 2) E)` and the temperature's gradient `(1,)`."""

    loss: Tensor
    grad_rows: Tensor
    grad_scale: Tensor


@dataclass
class StepShare:
    """Where a micro-batch sits in an optimizer step, so that the losses are means over the
    step's effective batch (every micro-batch on every process) instead of the micro-batch.

    With a share, `forward` returns each loss as this micro-batch's estimate of the
    effective-batch loss: the mean of the estimates over the step's `replicas` backward passes
    (the mean DDP and gradient accumulation take) is the effective-batch loss, in value and in
    gradient. L_cap is a token mean over `caption_tokens`, L_vfr a clip mean over `clips`;
    L_align is the effective batch's (`align_cache`, `align_batch: effective`) or, without a
    cache, the micro-batch's over all processes, each padded to `align_rows` for the gather.
    """

    replicas: int
    caption_tokens: Tensor
    clips: Tensor
    align_rows: int | None = None
    align_cache: AlignCache | None = None
