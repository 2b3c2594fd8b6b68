"""Learning-rate schedule of the paper (Appendix A.1): linear warm-up, then cosine decay.

Counted in optimizer steps; the warm-up length in epochs is converted with the number of optimizer
steps per epoch, so the schedule is the same whatever the device count or micro-batch size.
"""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr for the update made at optimizer step `step` (0-based).

    Warm-up rises linearly to 1 over `warmup_steps` (the first update already uses 1/warmup, never
    0); the cosine then falls from 1 to `min_ratio` at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` applying `lr_factor`; its state_dict is JSON-able (no callables stored)."""

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps, total_steps, min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
