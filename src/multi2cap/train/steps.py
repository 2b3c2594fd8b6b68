"""The step loop: micro-batches through gradient accumulation, one yield per optimizer step."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from multi2cap.model.step_share import StepShare
from multi2cap.train.batches import to_device
from multi2cap.train.config import TrainConfig
from multi2cap.train.gradient_cache import alignment_caches
from multi2cap.train.sharding import set_gradient_sync

LOSS_KEYS = ("loss", "loss_cap", "loss_align", "loss_vfr")


class StepVotes:
    """Whether some process had a stop request when a step began, and how many items all
    processes found unreadable in it: two more entries of the step's one all-reduce of
    caption tokens and clips, so that agreeing on them costs no collective of its own.

    On CUDA (`to_host`, when several processes will read them) they are copied to pinned host
    memory as soon as that all-reduce is queued and `read` waits on an event recorded after the
    copy, so reading them at the end of the step waits for nothing the step computed (that work
    was queued after the event)."""

    def __init__(self, values: torch.Tensor, to_host: bool = True) -> None:
        self._event: torch.cuda.Event | None = None
        if to_host and values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
            values = host
        self._values = values

    def read(self) -> tuple[bool, int]:
        """(any stop request, unreadable items in all) for the step."""
        if self._event is not None:
            self._event.synchronize()
        stop, skipped = self._values.tolist()
        return stop > 0, round(skipped)


@dataclass
class StepStats:
    """What one optimizer step did on this process. `losses` `(len(LOSS_KEYS),)` are the
    effective batch's over all processes, on the device (reading them is a host sync);
    `skipped` this process's unreadable ids, `votes` what all processes agreed on."""

    losses: torch.Tensor
    lr: float
    samples: int
    skipped: list[str]
    votes: StepVotes


def optimizer_steps(
    loader: DataLoader,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    config: TrainConfig,
    stand_in: dict[str, Any],
    stop_vote: Callable[[], bool] = lambda: False,
) -> Iterator[StepStats]:
    """Run each optimizer step's micro-batches through `accelerator.accumulate`; yield after
    each optimizer step. `stop_vote()` says whether this process was asked to stop; it is
    summed over the processes with the step's token counts (`StepVotes`).

    The losses are those of the effective batch, as if it ran in one forward pass: the step's
    micro-batches are read first, their caption tokens and clips counted over all processes,
    and each micro-batch contributes its share (`StepShare`): L_cap is a token mean over the
    whole effective batch, L_vfr a clip mean, and L_align (pre-training) contrasts the whole
    effective batch of all processes (`optim.align_batch: effective`, see `gradient_cache`) or
    each micro-batch of all processes (`micro`).

    A micro-batch whose clips were all unreadable still runs forward/backward on the previous
    good micro-batch (or, before the first one, on `stand_in`) with its loss times zero, so that
    every process takes part in each gradient reduction (a process that skipped its backward
    would stall the others); it adds nothing to the gradient sum.
    """
    model.train()
    device = accelerator.device
    inner = accelerator.unwrap_model(model)
    accumulation = accelerator.gradient_accumulation_steps
    replicas = accumulation * accelerator.num_processes
    # With one micro-batch per step the micro-batches of all devices are the effective batch,
    # and the plain forward already contrasts it: no cache needed.
    cache_align = (
        config.stage == "pretrain"
        and getattr(inner, "align", None) is not None
        and config.optim.align_batch == "effective"
        and accumulation > 1
    )
    fallback: dict[str, Any] | None = None
    batches = iter(loader)
    while group := list(itertools.islice(batches, accumulation)):
        runs: list[tuple[dict[str, Any], bool] | None] = []
        for batch in group:
            usable = len(batch["ids"]) > 0
            if usable:
                fallback = batch
            elif fallback is None and accelerator.num_processes > 1:
                fallback = stand_in
            runs.append((fallback, usable) if fallback is not None else None)
        counts = torch.tensor(
            [
                [inner.caption_tokens(b["captions"]), len(b["ids"])]
                for b, usable in filter(None, runs)
                if usable
            ]
            or [[0, 0]],
            dtype=torch.float32,
        )
        skipped = [i for b in group for i in b["skipped"]]
        votes = torch.tensor([float(stop_vote()), float(len(skipped))])
        totals = torch.cat([counts.sum(dim=0), votes])
        if device.type == "cuda":  # pinned and asynchronous: no wait for the queued kernels
            totals = totals.pin_memory().to(device, non_blocking=True)
        if accelerator.num_processes > 1:  # the step's one small all-reduce
            totals = accelerator.reduce(totals, "sum")
        step_votes = StepVotes(totals[2:], to_host=accelerator.num_processes > 1)
        totals = totals[:2].clamp_min(1.0)  # caption tokens, clips: read on the device
        caches: list[Any] = [None] * len(runs)
        states: list[Any] = [None] * len(runs)
        if cache_align:
            present = [i for i, run in enumerate(runs) if run is not None]
            done = alignment_caches(
                inner,
                [runs[i] for i in present],  # type: ignore[misc]
                accelerator,
                accumulation * config.optim.micro_batch_size,
            )
            for i, cache, state in zip(present, *done, strict=True):
                caches[i], states[i] = cache, state
        sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float32, device=device)
        n_samples = 0
        for run, cache, state in zip(runs, caches, states, strict=True):
            with accelerator.accumulate(model):
                if run is not None:
                    batch, usable = run
                    share = StepShare(
                        replicas=replicas,
                        caption_tokens=totals[0],
                        clips=totals[1],
                        align_rows=config.optim.micro_batch_size,
                        align_cache=cache,
                    )
                    if state is not None:
                        state.restore(device)
                    set_gradient_sync(model, accelerator.sync_gradients)
                    with accelerator.autocast():  # a model prepared by accelerate has it already
                        output = model(
                            to_device(batch, device),
                            config.stage,
                            share,
                            vfr_reduction=config.optim.vfr_reduction,
                        )
                    accelerator.backward(output.loss if usable else output.loss * 0.0)
                    if usable:
                        # Summed on the device: each loss is this micro-batch's estimate of
                        # the effective batch's, whose mean over the replicas is that loss.
                        sums += torch.stack(
                            [_detached(getattr(output, k), device) for k in LOSS_KEYS]
                        )
                        n_samples += len(batch["ids"])
                if accelerator.sync_gradients and config.optim.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        yield StepStats(
            accelerator.reduce(sums / replicas, "sum"), lr, n_samples, skipped, step_votes
        )


def _detached(value: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """A loss as a float32 scalar without graph; 0 for a loss the stage does not have."""
    if value is None:
        return torch.zeros((), device=device)
    return value.detach().float().reshape(())
