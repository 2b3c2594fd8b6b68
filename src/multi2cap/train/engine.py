"""`train(config) -> TrainResult`: the Multi2Cap training loop on Hugging Face Accelerate.

One loop serves every setting: CPU, one GPU, DDP over GPUs and nodes (`accelerate launch` or
`torchrun`, SLURM included) and FSDP2 sharding (`runtime.strategy: fsdp`, see `sharding`).
Accelerate supplies device placement, the process group, bf16 autocast and gradient-accumulation
syncing; this module supplies what the paper's recipes need on top: the effective batch through
accumulation, warm-up + cosine per optimizer step, validation with the AAC metrics, best-model
selection, CSV / TensorBoard logs, atomic checkpoints and exact resumption.

Exact resumption rests on three things: the clip order depends on (seed, epoch) only
(`StepBatchSampler`), the dataset's random choices depend on (seed, epoch, index) only
(`CaptionDataset.set_epoch`), and every process's generators are saved with each checkpoint.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, PartialState
from accelerate.utils import DistributedType, gather_object, set_seed
from torch.utils.data import DataLoader

from multi2cap.data.manifest import ManifestRecord, read_manifest
from multi2cap.io import append_jsonl, atomic_write_text, read_jsonl, write_jsonl
from multi2cap.train import state as ckpt
from multi2cap.train.config import ConfigError, TrainConfig
from multi2cap.train.sampler import StepBatchSampler
from multi2cap.train.schedule import warmup_cosine
from multi2cap.train.sharding import is_sharded, set_gradient_sync, shard_model

log = logging.getLogger("multi2cap.train")

LOSS_KEYS = ("loss", "loss_cap", "loss_align", "loss_vfr")
TRAIN_COLUMNS = ("step", "epoch", "lr", *LOSS_KEYS, "samples_per_s")


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


@dataclass
class _Position:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


@dataclass
class _Best:
    metric: str | None = None
    score: float | None = None
    epoch: int | None = None


def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Run (or with `resume`, continue from the newest checkpoint in the output folder) a recipe."""
    threads = torch.get_num_threads()
    if config.runtime.cpu_threads is not None:
        torch.set_num_threads(config.runtime.cpu_threads)
    try:
        return _train(config, resume)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainConfig, resume: bool) -> TrainResult:
    from multi2cap.model.multi2cap import Multi2Cap

    partial = PartialState(cpu=config.runtime.cpu)
    accumulation = config.accumulation_steps(partial.num_processes)
    accelerator = Accelerator(
        cpu=config.runtime.cpu,
        mixed_precision=_mixed_precision(config, partial.device),
        gradient_accumulation_steps=accumulation,
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=config.stage == "finetune")
        ],
    )
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ConfigError(
            f"launched with accelerate's {accelerator.distributed_type.value} plugin, which this "
            "trainer does not drive: launch plain processes (`torchrun`, or `accelerate launch "
            "--multi_gpu`) and set runtime.strategy=fsdp for sharded training (FSDP2, "
            "ZeRO-3-like: parameters, gradients and optimizer states sharded)"
        )
    sharded = config.runtime.strategy == "fsdp" and accelerator.num_processes > 1
    if config.runtime.strategy == "fsdp" and not sharded:
        log.info("runtime.strategy=fsdp with one process: nothing to shard, training unsharded")
    out = Path(config.runtime.output_dir)
    ckpt_root = out / "checkpoints"
    resume_from = _latest_checkpoint(ckpt_root) if resume else None
    if resume and resume_from is None:
        log.warning("--resume: no checkpoint in %s, starting from scratch", ckpt_root)

    set_seed(config.seed)
    train_records = _read_records(config.data.train_manifest, "data.train_manifest")
    val_records = (
        _read_records(config.data.val_manifest, "data.val_manifest")[: config.eval.max_items]
        if config.data.val_manifest and config.eval.every_epochs
        else []
    )

    with ExitStack() as stack:
        # Checked before the model is built: a metric that cannot run fails in seconds.
        evaluator: _Validator | None = None
        if val_records:
            evaluator = _Validator(config, val_records, accelerator.is_main_process)
            stack.callback(evaluator.close)
        model = _build_model(config, train_records + val_records, resume_from, Multi2Cap)
        model.set_stage(config.stage)
        if config.runtime.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        if sharded:  # before the optimizer, which must hold the sharded parameters
            model = shard_model(model, accelerator.device, accelerator.num_processes)
        params = list(model.trainable_parameters())
        optimizer = torch.optim.AdamW(
            params,
            lr=config.optim.lr,
            betas=config.optim.betas,
            eps=config.optim.eps,
            weight_decay=config.optim.weight_decay,
        )
        train_set = _train_dataset(config, train_records, model)
        dataset = train_set.dataset
        stand_in = _stand_in(
            config.data.clip_seconds, dataset.image_size if dataset.with_images else None
        )
        sampler_args = dict(
            micro_batch_size=config.optim.micro_batch_size,
            accumulation_steps=accumulation,
            num_replicas=accelerator.num_processes,
            rank=accelerator.process_index,
            seed=config.seed,
        )
        steps_per_epoch = StepBatchSampler(len(train_set), **sampler_args).steps_per_epoch
        if steps_per_epoch == 0:
            raise ConfigError(
                f"{config.data.train_manifest}: {len(train_set)} clips, fewer than one effective "
                f"batch (optim.batch_size={config.optim.batch_size})"
            )
        total_steps = steps_per_epoch * config.optim.epochs
        warmup_steps = round(config.optim.warmup_epochs * steps_per_epoch)
        scheduler = warmup_cosine(optimizer, warmup_steps, total_steps, config.optim.min_lr_ratio)
        if sharded:
            optimizer = accelerator.prepare(optimizer)
        else:
            model, optimizer = accelerator.prepare(model, optimizer)

        position, best, history = _Position(), _Best(), []
        if resume_from is not None:
            position, best, history = _restore(
                resume_from, model, optimizer, scheduler, accelerator, config
            )
            log.info("resumed from %s at step %d", resume_from, position.global_step)

        logger = _RunLogger(out, config, accelerator.is_main_process, history, position.global_step)
        stack.callback(logger.close)
        checkpointer = _Checkpointer(
            ckpt_root, model, optimizer, scheduler, accelerator, config, logger
        )
        stop_at = config.runtime.stop_at_step
        signals = stack.enter_context(_StopSignals())
        progress = _progress(accelerator.is_main_process and config.runtime.progress)
        bar = stack.enter_context(progress) if progress is not None else None
        task = (
            bar.add_task("train", total=total_steps, completed=position.global_step, loss="")
            if bar is not None
            else None
        )
        stopped, stop_reason = False, None
        while position.epoch < config.optim.epochs and not stopped:
            train_set.set_epoch(position.epoch)
            loader = _loader(
                train_set,
                StepBatchSampler(
                    len(train_set),
                    **sampler_args,
                    epoch=position.epoch,
                    start_step=position.step_in_epoch,
                ),
                config,
            )
            steps = _optimizer_steps(
                loader, model, optimizer, scheduler, accelerator, config, stand_in
            )
            for stats in steps:
                position.step_in_epoch += 1
                position.global_step += 1
                record = {
                    "kind": "train",
                    "step": position.global_step,
                    "epoch": position.epoch + position.step_in_epoch / steps_per_epoch,
                    "lr": stats.lr,
                    **stats.losses,
                    "samples_per_s": stats.samples
                    * accelerator.num_processes
                    / max(stats.seconds, 1e-9),
                }
                logger.train_step(record)
                skipped = stats.skipped
                if accelerator.num_processes > 1:
                    skipped = gather_object(skipped)
                logger.skipped(skipped, position)
                if bar is not None:
                    bar.update(task, advance=1, loss=f"loss {record['loss']:.4f}")
                if stop_at is not None and position.global_step >= stop_at:
                    stopped, stop_reason = True, "stop_at_step"
                elif signals.requested(accelerator):
                    stopped, stop_reason = True, f"signal {signals.name}"
                every = config.runtime.checkpoint_every_steps
                if stopped or (every and position.global_step % every == 0):
                    checkpointer.save(position, best)
                if stopped:
                    break
            if stopped:
                break
            position.epoch += 1
            position.step_in_epoch = 0
            every_epochs = config.eval.every_epochs
            if evaluator is not None and every_epochs and position.epoch % every_epochs == 0:
                scores = evaluator.run(accelerator, model, position)
                if accelerator.is_main_process:
                    logger.validation(scores)
                improved = _improves(best, scores, config) if accelerator.is_main_process else False
                if accelerator.num_processes > 1:
                    improved = gather_object([improved])[0]
                if improved:  # the main process's `best` and `scores` go into best.json
                    summary = {**vars(best), "scores": scores}
                    _save_model(accelerator, model, out, "best", summary)
            checkpointer.save(position, best)

    if stop_reason is not None:  # `final/` is only for a run that did all its epochs
        final = ckpt_root / ckpt.step_dir_name(position.global_step) / ckpt.MODEL_DIR
    else:
        final = out / "final"
        _save_model(accelerator, model, out, "final")
    best_dir = out / "best"
    return TrainResult(
        output_dir=out,
        final_checkpoint=final,
        best_checkpoint=best_dir if best.score is not None else None,
        best_metric=best.metric,
        best_score=best.score,
        global_step=position.global_step,
        epochs_completed=position.epoch,
        stop_reason=stop_reason,
        skipped_clips=logger.skipped_total(),
        history=logger.history,
    )


class _StopSignals:
    """SIGTERM / SIGUSR1 / SIGINT become a request to checkpoint at the next optimizer step and
    return (SLURM sends SIGTERM, or SIGUSR1 with `--signal`, before it kills a job). All processes
    agree on the step through a sum over devices, so they stop and checkpoint together."""

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

    def __init__(self) -> None:
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, _frame: Any) -> None:
        if self.name is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for the step to end
        self.name = signal.Signals(number).name
        log.warning("%s received: checkpointing after this step, then stopping", self.name)

    def requested(self, accelerator: Accelerator) -> bool:
        if accelerator.num_processes == 1:
            return self.name is not None
        flag = torch.tensor([1.0 if self.name is not None else 0.0], device=accelerator.device)
        flag = accelerator.reduce(flag, "sum")
        if flag.item() > 0 and self.name is None:
            self.name = "SIGTERM (another process)"
        return bool(flag.item() > 0)


@dataclass
class _StepStats:
    """What one optimizer step did on this process."""

    losses: dict[str, float]
    lr: float
    samples: int
    seconds: float
    skipped: list[str]


def _optimizer_steps(
    loader: DataLoader,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    config: TrainConfig,
    stand_in: dict[str, Any],
) -> Iterator[_StepStats]:
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
                    output = model(_to_device(fallback, device), config.stage)
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
            yield _StepStats(
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


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _mixed_precision(config: TrainConfig, device: torch.device) -> str:
    if config.runtime.precision == "auto":
        return "bf16" if device.type == "cuda" else "no"
    return config.runtime.precision


def _read_records(path: str | None, field_name: str) -> list[ManifestRecord]:
    if not path:
        raise ConfigError(f"{field_name} is not set")
    records = read_manifest(path)
    if not records:
        raise ConfigError(f"{field_name}: {path} holds no records")
    return records


# Fields of Multi2CapConfig that a recipe may change on a model loaded from `init_from`: they
# change the losses or decoding, not the architecture or the saved weights.
_RUNTIME_MODEL_FIELDS = frozenset(
    {"alpha", "beta", "pretrain_adapter_input", "mix_prob", "freeze_vfr_in_finetune", "generation"}
)


def _build_model(
    config: TrainConfig,
    records: list[ManifestRecord],
    resume_from: Path | None,
    model_cls: Any,
) -> Any:
    """Model to train: the resumed checkpoint's, else `init_from`'s (with the recipe's loss and
    decoding fields applied), else one built from `model` (`preset: tiny` builds the tiny model
    with a vocabulary over the manifests' captions). The CLIP tower is loaded only to pre-train."""
    from multi2cap.model.config import Multi2CapConfig

    load_vision = config.stage == "pretrain"
    if resume_from is not None:
        return model_cls.from_pretrained(resume_from / ckpt.MODEL_DIR, load_vision=load_vision)
    section = dict(config.model)
    preset = section.pop("preset", None)
    if config.init_from is not None:
        model = model_cls.from_pretrained(config.init_from, load_vision=load_vision)
        fixed = sorted(set(section) - _RUNTIME_MODEL_FIELDS)
        if fixed:
            raise ConfigError(
                f"model.{fixed[0]}: cannot change the architecture of the init_from checkpoint "
                f"{config.init_from} (changeable: {', '.join(sorted(_RUNTIME_MODEL_FIELDS))})"
            )
        model.config = Multi2CapConfig.model_validate({**model.config.model_dump(), **section})
        return model
    if preset == "tiny":
        texts = [c for r in records for c in r.captions]
        return model_cls(Multi2CapConfig.tiny(texts, **section), load_vision=load_vision)
    if preset is not None:
        raise ConfigError(f"model.preset: unknown preset {preset!r} (known: tiny)")
    return model_cls(Multi2CapConfig.model_validate(section), load_vision=load_vision)


def _train_dataset(config: TrainConfig, records: list[ManifestRecord], model: Any) -> Any:
    """Training clips with the recipe's augmentations; frames only when pre-training with
    grounding, at the loaded vision encoder's input size unless `data.image_size` says."""
    from multi2cap.data.dataset import CaptionDataset

    augment = None
    if config.augment.enabled:
        from multi2cap.media.augment import (
            AddWhiteNoise,
            PolarityFlip,
            RandomAugment,
            TimeShift,
            TimeStretch,
        )

        a = config.augment
        augment = RandomAugment(
            [
                AddWhiteNoise(snr_db=a.snr_db),
                TimeShift(max_fraction=a.shift_max_fraction),
                TimeStretch(factor=a.stretch_factor),
                PolarityFlip(),
            ],
            [a.p_white_noise, a.p_shift, a.p_stretch, a.p_flip],
        )
    with_images = config.stage == "pretrain" and model.vision is not None
    dataset = CaptionDataset(
        records,
        train=True,
        clip_seconds=config.data.clip_seconds,
        with_images=with_images,
        image_size=config.data.image_size or (model.vision.image_size if with_images else 224),
        augment=augment,
        seed=config.seed,
    )
    return _SkipTracking(dataset)


class _SkipTracking(torch.utils.data.Dataset):
    """Wraps `CaptionDataset` so that the ids of unreadable items (which it returns as None and
    logs with the reason) reach the training loop and `skipped.jsonl`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        return item if item is not None else _Skipped(self.dataset.records[index].id)


@dataclass
class _Skipped:
    id: str


def _collate(items: list[Any]) -> dict[str, Any]:
    """`collate_captions` over the readable items, plus the `skipped` ids; only `ids` (empty)
    and `skipped` when nothing was readable."""
    from multi2cap.data.dataset import collate_captions

    skipped = [item.id for item in items if isinstance(item, _Skipped)]
    valid = [item for item in items if not isinstance(item, _Skipped)]
    if not valid:
        return {"ids": [], "skipped": skipped}
    return {**collate_captions(valid), "skipped": skipped}


def _loader(dataset: Any, batch_sampler: Any, config: TrainConfig) -> DataLoader:
    # A private generator keeps DataLoader from drawing its worker seed from the global RNG,
    # which would otherwise shift dropout randomness between a run and its resumption.
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=_collate,
        num_workers=config.data.num_workers,
        generator=torch.Generator().manual_seed(config.seed),
        persistent_workers=False,
        worker_init_fn=_ignore_stop_signals,
    )


def _ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave stop signals to the main process, which stops at a step end (a
    worker killed by the job's SIGTERM would otherwise fail the batch being loaded)."""
    for name in _StopSignals.SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_IGN)


class _Validator:
    """Teacher-forced caption loss and decoded-caption metrics on a fixed validation subset.

    Runs on the main process only (the subset is small; other processes wait), audio only, i.e.
    the fine-tuning / inference path with reconstructed grounding tokens g_hat. The metric
    back-ends are checked when the run starts: a `best_metric` that cannot be computed here is a
    configuration error before any training, other unavailable metrics are logged and left out.
    """

    def __init__(self, config: TrainConfig, records: list[ManifestRecord], main: bool) -> None:
        from multi2cap.metrics import Evaluator, resolve_metrics

        self.config = config
        self.records = records
        self._evaluator: Any = None
        best = config.eval.best_metric
        try:
            requested = resolve_metrics(config.eval.metrics)
        except ValueError as err:
            raise ConfigError(f"eval.metrics: {err}") from err
        if best != "val_loss" and best not in requested:
            raise ConfigError(
                f"eval.best_metric {best!r} is neither val_loss nor one of eval.metrics "
                f"({', '.join(requested)})"
            )
        if not main:
            return
        self._evaluator = Evaluator(metrics=requested, skip_unavailable=True)
        if best in self._evaluator.unavailable:
            self._evaluator.close()
            raise ConfigError(
                f"eval.best_metric {best!r} cannot be computed here: "
                f"{self._evaluator.unavailable[best]}"
            )
        for key, reason in self._evaluator.unavailable.items():
            log.warning("validation metric %s left out: %s", key, reason)

    def close(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()

    def run(self, accelerator: Accelerator, model: torch.nn.Module, position: _Position) -> dict:
        """Scores on the main process (an empty dict on the others), which all must call.

        Process r decodes items r, r + N, ... of the subset; all run the same number of
        batches (a process with fewer, or with a batch of unreadable clips only, decodes a
        second of silence whose result is dropped), because a sharded model gathers weights from
        every process in each forward. The main process scores the gathered captions."""
        n = accelerator.num_processes
        share = self.records[accelerator.process_index :: n]
        n_batches = math.ceil(math.ceil(len(self.records) / n) / self.config.eval.batch_size)
        part = self._decode(accelerator, model, share, n_batches if is_sharded(model) else 0)
        parts = gather_object([part]) if n > 1 else [part]
        scores: dict[str, Any] = {}
        if accelerator.is_main_process:
            scores = self._score(parts, position)
        accelerator.wait_for_everyone()
        return scores

    def _decode(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        records: list[ManifestRecord],
        min_batches: int,
    ) -> dict[str, Any]:
        """Caption loss sum, candidates and references for `records`, running at least
        `min_batches` forward passes."""
        from multi2cap.data.dataset import CaptionDataset

        cfg = self.config
        dataset = _SkipTracking(
            CaptionDataset(
                records,
                train=False,
                clip_seconds=cfg.data.clip_seconds,
                with_images=False,
                augment=None,
                seed=cfg.seed,
            )
        )
        loader = DataLoader(
            dataset,
            batch_size=cfg.eval.batch_size,
            collate_fn=_collate,
            num_workers=cfg.data.num_workers if records else 0,
        )
        inner = accelerator.unwrap_model(model)  # a DDP wrapper would sync in forward
        was_training = inner.training
        inner.eval()
        part: dict[str, Any] = {"loss_sum": 0.0, "n_items": 0, "candidates": [], "references": []}
        batches = 0
        with torch.no_grad(), accelerator.autocast():
            for batch in itertools.chain(loader, itertools.repeat(None)):
                if batch is None and batches >= min_batches:
                    break
                batches += 1
                real = batch is not None and len(batch["ids"]) > 0
                if not real:
                    if batches > min_batches:  # an unsharded model needs no stand-in
                        continue
                    batch = _stand_in(cfg.data.clip_seconds)
                batch = _to_device(batch, accelerator.device)
                n = batch["audio"].shape[0]
                loss = float(inner(batch, "finetune").loss_cap) * n
                waves = [
                    batch["audio"][i, : int(batch["audio_lengths"][i])].float().cpu()
                    for i in range(n)
                ]
                captions = inner.caption(
                    waves,
                    num_beams=cfg.eval.num_beams,
                    max_new_tokens=cfg.eval.max_new_tokens,
                    batch_size=cfg.eval.batch_size,
                )
                if real:
                    part["loss_sum"] += loss
                    part["n_items"] += n
                    part["candidates"] += captions
                    part["references"] += batch["references"]
        inner.set_stage(cfg.stage)
        inner.train(was_training)
        return part

    def _score(self, parts: list[dict[str, Any]], position: _Position) -> dict[str, Any]:
        n_items = sum(p["n_items"] for p in parts)
        candidates = [c for p in parts for c in p["candidates"]]
        references = [r for p in parts for r in p["references"]]
        scores: dict[str, Any] = {
            "kind": "val",
            "epoch": position.epoch,
            "step": position.global_step,
            "val_loss": sum(p["loss_sum"] for p in parts) / max(n_items, 1),
            "val_items": n_items,
        }
        if candidates:
            result = self._evaluator.evaluate(candidates, references)
            scores.update({k: v for k, v in result.corpus.items() if v is not None})
            scores["examples"] = [
                {"candidate": c, "references": r}
                for c, r in zip(candidates[:3], references[:3], strict=True)
            ]
        return scores


def _stand_in(seconds: float, image_size: int | None = None) -> dict[str, Any]:
    """A one-clip batch of silence (and a black frame of `image_size` pixels): what a process
    with no readable clip runs so that the others are not left waiting; its result is unused."""
    samples = round(seconds * 16_000)
    batch = {
        "ids": [],
        "audio": torch.zeros(1, samples),
        "audio_lengths": torch.tensor([samples]),
        "captions": ["silence"],
        "references": [["silence"]],
    }
    if image_size is not None:
        batch["images"] = torch.zeros(1, 3, image_size, image_size)
    return batch


def _improves(best: _Best, scores: dict[str, Any], config: TrainConfig) -> bool:
    """Update `best` when `scores` beat it on `eval.best_metric`; False when it is missing."""
    metric = config.eval.best_metric
    value = scores.get(metric)
    if not isinstance(value, float) or not math.isfinite(value):
        log.warning("epoch %d: no finite %s to select the best model on", scores["epoch"], metric)
        return False
    if best.score is not None:
        better = value > best.score if config.eval.maximise else value < best.score
        if not better:
            return False
    best.metric, best.score, best.epoch = metric, value, scores["epoch"]
    return True


def _write_model(accelerator: Accelerator, model: torch.nn.Module, folder: Path) -> None:
    """`save_pretrained` into `folder` by the main process; a sharded model's weights are
    gathered by all processes first."""
    unwrapped = accelerator.unwrap_model(model)
    if is_sharded(model):
        unwrapped.save_pretrained(folder, is_main_process=accelerator.is_main_process)
    elif accelerator.is_main_process:
        unwrapped.save_pretrained(folder)


def _save_model(
    accelerator: Accelerator,
    model: torch.nn.Module,
    out: Path,
    name: str,
    summary: dict[str, Any] | None = None,
) -> None:
    """Called on every process: `<out>/<name>/` as a `Multi2Cap.from_pretrained` folder, with
    `best.json` holding `summary` when one is given."""
    tmp = out / f".tmp-{name}"
    if accelerator.is_main_process:
        ckpt.begin_checkpoint(out, name)
    _write_model(accelerator, model, tmp)
    if accelerator.is_main_process:
        if summary is not None:
            atomic_write_text(tmp / "best.json", json.dumps(summary, indent=1))
        ckpt.commit_checkpoint(tmp, out / name)
    accelerator.wait_for_everyone()


@dataclass
class _Checkpointer:
    """Writes step checkpoints of one run (see `multi2cap.train.state` for the layout)."""

    root: Path
    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    accelerator: Accelerator
    config: TrainConfig
    logger: _RunLogger

    def save(self, position: _Position, best: _Best) -> None:
        """Every process writes its RNG and takes part in gathering the optimizer state (and,
        sharded, the weights); the main process writes the rest, then renames into place."""
        acc = self.accelerator
        name = ckpt.step_dir_name(position.global_step)
        tmp = self.root / f".tmp-{name}"
        if acc.is_main_process:
            ckpt.begin_checkpoint(self.root, name)
        acc.wait_for_everyone()
        ckpt.save_rng(tmp, acc.process_index)
        optimizer_state = ckpt.gather_optimizer_state(self.model, self.optimizer.optimizer)
        _write_model(acc, self.model, tmp / ckpt.MODEL_DIR)
        acc.wait_for_everyone()
        if acc.is_main_process:
            optimizer_meta = ckpt.save_optimizer(optimizer_state, tmp)
            ckpt.write_state(
                tmp,
                {
                    "position": vars(position),
                    "sampler_seed": self.config.seed,
                    "num_processes": acc.num_processes,
                    "optimizer": optimizer_meta,
                    "scheduler": self.scheduler.state_dict(),
                    "best": vars(best),
                    "history": self.logger.history,
                    "config": self.config.model_dump(mode="json"),
                },
            )
            ckpt.commit_checkpoint(tmp, self.root / name)
            ckpt.prune_checkpoints(self.root, self.config.runtime.keep_last_checkpoints)
        acc.wait_for_everyone()


def _latest_checkpoint(root: Path) -> Path | None:
    found = ckpt.list_checkpoints(root)
    return found[-1][1] if found else None


def _restore(
    folder: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    accelerator: Accelerator,
    config: TrainConfig,
) -> tuple[_Position, _Best, list[dict[str, Any]]]:
    saved = ckpt.read_state(folder)
    if saved["num_processes"] != accelerator.num_processes:
        log.warning(
            "checkpoint written with %d processes, resuming on %d: every optimizer step keeps "
            "its clips (and, with the same micro_batch_size, its micro-batches), but L_align's "
            "in-batch negatives and the random generators of processes the checkpoint did not "
            "have differ from an uninterrupted run",
            saved["num_processes"],
            accelerator.num_processes,
        )
    changed = _changed_fields(saved["config"], config.model_dump(mode="json"))
    if changed:
        log.warning("resuming with a changed recipe: %s", ", ".join(changed))
    ckpt.load_optimizer(model, optimizer.optimizer, folder, saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    ckpt.load_rng(folder, accelerator.process_index)
    return _Position(**saved["position"]), _Best(**saved["best"]), list(saved["history"])


def _changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    ignored = {"runtime.stop_at_step", "runtime.progress", "runtime.output_dir"}
    changed = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_fields(a, b, f"{path}.")
        elif a != b and path not in ignored:
            changed.append(path)
    return changed


class _RunLogger:
    """Training and validation records to memory, CSV files and TensorBoard (main process).

    On resumption the CSV files are rewritten from the checkpoint's history, so rows logged after
    that checkpoint by the interrupted run disappear instead of being duplicated."""

    def __init__(
        self,
        out: Path,
        config: TrainConfig,
        main: bool,
        history: list[dict[str, Any]],
        resumed_step: int,
    ) -> None:
        self.out = out
        self.config = config
        self.main = main
        self.history = history
        self._writer: Any = None
        if not main:
            return
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "train_config.yaml", config.to_yaml())
        self._rewrite_csv()
        skipped = out / "skipped.jsonl"
        if skipped.is_file():  # drop what the interrupted run logged after its checkpoint
            kept = [r for r in read_jsonl(skipped) if r["step"] <= resumed_step]
            write_jsonl(skipped, kept)
        if config.runtime.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=self._last())

    def _last(self) -> int | None:
        steps = [r["step"] for r in self.history]
        return max(steps) + 1 if steps else None

    def train_step(self, record: dict[str, Any]) -> None:
        step = record["step"]
        if step % self.config.runtime.log_every_steps and step != self.config.runtime.stop_at_step:
            return
        self.history.append(record)
        if not self.main:
            return
        self._append_csv("train_log.csv", TRAIN_COLUMNS, record)
        if self._writer is not None:
            for key in ("lr", *LOSS_KEYS, "samples_per_s"):
                self._writer.add_scalar(f"train/{key}", record[key], step)

    def skipped(self, ids: list[str], position: _Position) -> None:
        """Record unreadable clips (the dataset logged each reason) in skipped.jsonl."""
        if not ids or not self.main:
            return
        append_jsonl(
            self.out / "skipped.jsonl",
            ({"id": i, "epoch": position.epoch, "step": position.global_step} for i in ids),
        )

    def validation(self, scores: dict[str, Any]) -> None:
        self.history.append(scores)
        log.info(
            "epoch %d: %s",
            scores["epoch"],
            ", ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float)),
        )
        self._rewrite_csv()
        if self._writer is not None:
            for key, value in scores.items():
                if isinstance(value, float):
                    self._writer.add_scalar(f"val/{key}", value, scores["step"])
            self._writer.flush()

    def skipped_total(self) -> int:
        path = self.out / "skipped.jsonl"
        return sum(1 for _ in read_jsonl(path)) if self.main and path.is_file() else 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _append_csv(self, name: str, columns: tuple[str, ...], record: dict[str, Any]) -> None:
        path = self.out / name
        new = not path.exists()
        with open(path, "a", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)

    def _rewrite_csv(self) -> None:
        train_rows = [r for r in self.history if r["kind"] == "train"]
        atomic_write_text(self.out / "train_log.csv", _csv_text(TRAIN_COLUMNS, train_rows))
        val_rows = [r for r in self.history if r["kind"] == "val"]
        if val_rows:
            columns = ["epoch", "step"]
            for row in val_rows:
                columns += [k for k, v in row.items() if isinstance(v, float) and k not in columns]
            atomic_write_text(self.out / "val_log.csv", _csv_text(tuple(columns), val_rows))


def _csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
