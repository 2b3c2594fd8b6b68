"""Deterministic, resumable assignment of training items to (optimizer step, micro-batch,
device), and the step counts a run plans with.

Each epoch is one permutation of the training items drawn from (seed, epoch) alone, cut into
optimizer steps of `batch_size` items (the effective batch) and, inside a step, into one
micro-batch per device and accumulation step. When the items do not fill the last step, it is
completed with the first items of the same epoch's permutation (as torch's `DistributedSampler`
pads with `drop_last=False`): every item is trained on in every epoch, every optimizer step
sees exactly `batch_size` items, every device the same number. Dropping the incomplete step
instead would leave up to `batch_size - 1` items out of each epoch (Clotho at 384 clips a step:
383 of 3,839), each epoch other ones at random, so some item could go unseen for several epochs
running. The padding items come from the epoch's first step, never from the step they complete
(there are at least `batch_size` items), so no item meets itself in a contrastive batch.
Knowing (epoch, step in epoch) is enough to continue exactly where a run stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler


def epoch_permutation(num_items: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator).tolist()


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps a run takes: `items` per epoch (clips, or (clip, caption) rows
    with `data.epoch_unit: caption`), `step_size` items per optimizer step (the effective batch),
    `padding` items repeated to complete each epoch's last step."""

    items: int
    step_size: int
    epochs: int
    warmup_epochs: float

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.items / self.step_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)

    @property
    def padding(self) -> int:
        return self.steps_per_epoch * self.step_size - self.items

    def describe(self, unit: str) -> str:
        """One line for the run's log: steps per epoch, in all, of warm-up, and the padding."""
        pad = (
            f"; each epoch's last step completed with {self.padding} of the epoch's first items"
            if self.padding
            else ""
        )
        return (
            f"{self.items} {unit}s per epoch, {self.step_size} per optimizer step: "
            f"{self.steps_per_epoch} steps per epoch x {self.epochs} epochs = "
            f"{self.total_steps} steps, {self.warmup_steps} of warm-up{pad}"
        )


class StepBatchSampler(Sampler[list[int]]):
    """Yields this device's micro-batches (lists of dataset indices) for one epoch.

    The order is step by step, and inside a step accumulation micro-batch `m` of device `rank`
    takes slice `(m * num_replicas + rank)` of the step's items. Needs at least one effective
    batch of items (`steps_per_epoch` is 0 otherwise).
    """

    def __init__(
        self,
        num_items: int,
        *,
        micro_batch_size: int,
        accumulation_steps: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch: int = 0,
        start_step: int = 0,
    ) -> None:
        self.num_items = num_items
        self.micro = micro_batch_size
        self.accumulation = accumulation_steps
        self.replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = epoch
        self.start_step = start_step

    @property
    def step_size(self) -> int:
        """Items per optimizer step over all devices (the effective batch)."""
        return self.micro * self.accumulation * self.replicas

    @property
    def steps_per_epoch(self) -> int:
        if self.num_items < self.step_size:
            return 0
        return math.ceil(self.num_items / self.step_size)

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_step) * self.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_permutation(self.num_items, self.seed, self.epoch)
        order += order[: self.steps_per_epoch * self.step_size - self.num_items]
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.step_size
            for micro in range(self.accumulation):
                begin = base + (micro * self.replicas + self.rank) * self.micro
                yield order[begin : begin + self.micro]
