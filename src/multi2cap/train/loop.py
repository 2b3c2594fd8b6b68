"""What every training stage's loop shares: `engine.train` (pre-training, fine-tuning) and
`preference.train_preference` (DPO) differ in their model, data and step, not in how a run is
set up, how an optimizer step is booked (position, log record, progress bar, stop, step
checkpoint), how validation picks `best/` or how a run ends. One implementation of each here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, PartialState
from accelerate.utils import gather_object

from multi2cap.data.manifest import ManifestRecord, read_manifest
from multi2cap.train import state as ckpt
from multi2cap.train.checkpointing import Checkpointer, save_model
from multi2cap.train.config import ConfigError, OptimConfig, TrainConfig
from multi2cap.train.run_log import RunLogger
from multi2cap.train.signals import StopSignals
from multi2cap.train.state import Best, Position
from multi2cap.train.validation import Validator, improves


@dataclass
class TrainResult:
    """What a run produced. Checkpoint paths are `Multi2Cap.from_pretrained` folders:
    `final_checkpoint` is `<output_dir>/final` once every epoch is done, else (a stopped run)
    the model folder of the checkpoint written when it stopped.

    `stop_reason` says why a run ended before its last epoch (`stop_at_step`, or `signal
    SIGTERM` when the job was asked to stop; a checkpoint was written, `--resume` continues).
    `skipped_clips` counts the unreadable clips of the whole run (main process; their ids are in
    `skipped.jsonl`). `history` holds one record per logged optimizer step (`kind="train"`:
    step, epoch, lr, losses averaged over the step's micro-batches and devices) and one per
    validation (`kind="val"`: epoch, step, `val_loss`, the corpus metrics).
    """

    output_dir: Path
    final_checkpoint: Path
    best_checkpoint: Path | None
    best_metric: str | None
    best_score: float | None
    global_step: int
    epochs_completed: int
    stop_reason: str | None = None
    skipped_clips: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def train_losses(self) -> list[float]:
        return [r["loss"] for r in self.history if r["kind"] == "train"]


def with_threads(config: TrainConfig, run: Callable[[], TrainResult]) -> TrainResult:
    """`run()` under `runtime.cpu_threads` torch threads, the caller's count restored after."""
    threads = torch.get_num_threads()
    if config.runtime.cpu_threads is not None:
        torch.set_num_threads(config.runtime.cpu_threads)
    try:
        return run()
    finally:
        torch.set_num_threads(threads)


def ddp_kwargs() -> DistributedDataParallelKwargs:
    """DDP without its search for unused parameters, in every stage: every parameter that
    trains takes part in each step's loss (an unreadable micro-batch's stand-in too, times
    zero), so the search would only add a walk of the autograd graph to every backward."""
    return DistributedDataParallelKwargs(find_unused_parameters=False)


def mixed_precision(config: TrainConfig, device: torch.device) -> str:
    """Accelerate's `mixed_precision` for `runtime.precision` (`auto`: bf16 on CUDA only)."""
    if config.runtime.precision == "auto":
        return "bf16" if device.type == "cuda" else "no"
    return config.runtime.precision


def make_accelerator(config: TrainConfig, partial: PartialState) -> Accelerator:
    return Accelerator(
        cpu=config.runtime.cpu,
        mixed_precision=mixed_precision(config, partial.device),
        gradient_accumulation_steps=config.accumulation_steps(partial.num_processes),
        kwargs_handlers=[ddp_kwargs()],
    )


def read_records(path: str | None, field_name: str) -> list[ManifestRecord]:
    """A manifest the recipe names in `field_name`: refused when unset or empty."""
    if not path:
        raise ConfigError(f"{field_name} is not set")
    records = read_manifest(path)
    if not records:
        raise ConfigError(f"{field_name}: {path} holds no records")
    return records


def validation_records(config: TrainConfig) -> list[ManifestRecord]:
    """The first `eval.max_items` validation clips, none when validation is off."""
    if not (config.data.val_manifest and config.eval.every_epochs):
        return []
    return read_records(config.data.val_manifest, "data.val_manifest")[: config.eval.max_items]


def adamw(params: list[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        params, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay
    )


class Pace:
    """Samples per second over the steps since the last logged one (no per-step sync: on a GPU
    a single step's host time is only its launch time)."""

    def __init__(self) -> None:
        self.samples, self.since = 0, time.perf_counter()

    def add(self, samples: int) -> None:
        self.samples += samples

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.samples / max(now - self.since, 1e-9)
        self.samples, self.since = 0, now
        return rate


@dataclass
class StepBook:
    """Books each optimizer step of a run: advances `position`, logs a record at logged steps
    (the step's values read from the device only then), counts skipped clips, moves the
    progress bar, decides whether to stop (`runtime.stop_at_step`, or a stop signal) and writes
    the step checkpoints."""

    config: TrainConfig
    accelerator: Accelerator
    logger: RunLogger
    checkpointer: Checkpointer
    signals: StopSignals
    steps_per_epoch: int
    loss_keys: tuple[str, ...] | list[str]
    bar: Any = None
    task: Any = None
    pace: Pace = field(default_factory=Pace)

    def step(
        self,
        position: Position,
        best: Best,
        *,
        samples: int,
        lr: float,
        values: Callable[[], list[float]],
        skipped: list[str],
        stop_signal: Callable[[], bool],
    ) -> str | None:
        """Book one finished step; returns the stop reason when the run stops here (its
        checkpoint written), else None. `values()` gives the step's `loss_keys` values and
        `stop_signal()` whether a stop was asked (agreed by every process)."""
        position.step_in_epoch += 1
        position.global_step += 1
        self.pace.add(samples * self.accelerator.num_processes)
        if self.logger.logs(position.global_step):
            record = {
                "kind": "train",
                "step": position.global_step,
                "epoch": position.epoch + position.step_in_epoch / self.steps_per_epoch,
                "lr": lr,
                **dict(zip(self.loss_keys, values(), strict=True)),
                "samples_per_s": self.pace.rate(),
            }
            self.logger.train_step(record)
            if self.bar is not None:
                self.bar.update(self.task, loss=f"loss {record['loss']:.4f}")
        self.logger.skipped(skipped, position)
        if self.bar is not None:
            self.bar.update(self.task, advance=1)
        stop_at = self.config.runtime.stop_at_step
        reason = None
        if stop_at is not None and position.global_step >= stop_at:
            reason = "stop_at_step"
        elif stop_signal():
            reason = f"signal {self.signals.name}"
        every = self.config.runtime.checkpoint_every_steps
        if reason is not None or (every and position.global_step % every == 0):
            self.checkpointer.save(position, best)
        return reason


def validate_and_select(
    evaluator: Validator | None,
    accelerator: Accelerator,
    model: Any,
    saved: Any,
    out: Path,
    config: TrainConfig,
    logger: RunLogger,
    position: Position,
    best: Best,
) -> None:
    """Validation of `model` at `position`; when the main process's score improves on `best`
    (`eval.best_metric`), `saved` (the prepared model) is written to `best/` with the scores."""
    if evaluator is None:
        return
    main = accelerator.is_main_process
    scores = evaluator.run(accelerator, model, position)
    if main:
        logger.validation(scores)
    improved = improves(best, scores, config) if main else False
    if accelerator.num_processes > 1:
        improved = gather_object([improved])[0]
    if improved:  # the main process's `best` and `scores` go into best.json
        save_model(accelerator, saved, out, "best", {**vars(best), "scores": scores})


def finish(
    accelerator: Accelerator,
    model: Any,
    out: Path,
    position: Position,
    best: Best,
    stop_reason: str | None,
    logger: RunLogger,
) -> TrainResult:
    """The run's result; `final/` is written only for a run that did all its epochs (a stopped
    run's final checkpoint is the model folder of the step checkpoint it wrote)."""
    if stop_reason is not None:
        step_dir = ckpt.step_dir_name(position.global_step)
        final = out / "checkpoints" / step_dir / ckpt.MODEL_DIR
    else:
        final = out / "final"
        save_model(accelerator, model, out, "final")
    return TrainResult(
        output_dir=out,
        final_checkpoint=final,
        best_checkpoint=out / "best" if best.score is not None else None,
        best_metric=best.metric,
        best_score=best.score,
        global_step=position.global_step,
        epochs_completed=position.epoch,
        stop_reason=stop_reason,
        skipped_clips=logger.skipped_total(),
        history=logger.history,
    )
