"""The step loop: micro-batches through gradient accumulation, one yield per optimizer step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from multi2cap.train.batches import to_device
from multi2cap.train.config import TrainConfig
from multi2cap.train.sharding import set_gradient_sync

LOSS_KEYS = ("loss", "loss_cap", "loss_align", "loss_vfr")


@dataclass
class StepStats:
    """What one optimizer step did on this process."""

    losses: dict[str, float]
    lr: float
    samples: int
    seconds: float
    skipped: list[str]


def optimizer_steps(
    loader: DataLoader,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    config: TrainConfig,
    stand_in: dict[str, Any],
) -> Iterator[StepStats]:
    """Run micro-batches through `accelerator.accumulate` and yield after each optimizer step.

    A micro-batch whose clips were all unreadable still runs forward/backward on the previous
    good micro-batch (or, before the first one, on `stand_in`) with its loss times zero, so that
    every process takes part in each gradient reduction (a process that skipped its backward
    would stall the others); it adds nothing to the gradient sum.
    """
    model.train()
    device = accelerator.device
    sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float32, device=device)
    micro_batches, n_samples, skipped, started = 0, 0, [], time.perf_counter()
    fallback: dict[str, Any] | None = None
    for batch in loader:
        skipped += batch["skipped"]
        usable = len(batch["ids"]) > 0
        if usable:
            fallback = batch
        elif fallback is None and accelerator.num_processes > 1:
            fallback = stand_in
        with accelerator.accumulate(model):
            if fallback is not None:
                set_gradient_sync(model, accelerator.sync_gradients)
                with accelerator.autocast():  # a model prepared by accelerate has it already
                    output = model(to_device(fallback, device), config.stage)
                accelerator.backward(output.loss if usable else output.loss * 0.0)
                if usable:
                    # Summed on the device; read once per optimizer step (one sync, not four
                    # per micro-batch).
                    sums += torch.stack([_detached(getattr(output, k), device) for k in LOSS_KEYS])
                    micro_batches += 1
                    n_samples += len(batch["ids"])
            if accelerator.sync_gradients and config.optim.max_grad_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            means = accelerator.reduce(sums / max(micro_batches, 1), "mean").cpu()
            yield StepStats(
                dict(zip(LOSS_KEYS, means.tolist(), strict=True)),
                lr,
                n_samples,
                time.perf_counter() - started,
                skipped,
            )
            sums.zero_()
            micro_batches, n_samples, skipped, started = 0, 0, [], time.perf_counter()


def _detached(value: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """A loss as a float32 scalar without graph; 0 for a loss the stage does not have."""
    if value is None:
        return torch.zeros((), device=device)
    return value.detach().float().reshape(())
