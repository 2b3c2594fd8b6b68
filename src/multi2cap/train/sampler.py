"""Deterministic, resumable assignment of clips to (optimizer step, micro-batch, device).

Each epoch is one permutation of the training set drawn from (seed, epoch) alone, cut into
optimizer steps of `batch_size` clips (the effective batch) and, inside a step, into one
micro-batch per device and accumulation step. The incomplete last step of an epoch is dropped,
so every optimizer step sees exactly `batch_size` clips. Knowing (epoch, step in epoch) is enough
to continue exactly where a run stopped, on the same number of devices.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_permutation(num_items: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator).tolist()


class StepBatchSampler(Sampler[list[int]]):
    """Yields this device's micro-batches (lists of dataset indices) for one epoch.

    The order is step by step, and inside a step accumulation micro-batch `m` of device `rank`
    takes slice `(m * num_replicas + rank)` of the step's clips.
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
        """Clips per optimizer step over all devices (the effective batch)."""
        return self.micro * self.accumulation * self.replicas

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // self.step_size

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_step) * self.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_permutation(self.num_items, self.seed, self.epoch)
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.step_size
            for micro in range(self.accumulation):
                begin = base + (micro * self.replicas + self.rank) * self.micro
                yield order[begin : begin + self.micro]
