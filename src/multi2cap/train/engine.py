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

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, PartialState
from accelerate.utils import DistributedType, gather_object, set_seed

from multi2cap.data.manifest import ManifestRecord, read_manifest
from multi2cap.train import state as ckpt
from multi2cap.train.batches import stand_in, step_loader, train_dataset
from multi2cap.train.checkpointing import Checkpointer, latest_checkpoint, restore, save_model
from multi2cap.train.config import ConfigError, TrainConfig
from multi2cap.train.run_log import RunLogger, progress_bar
from multi2cap.train.sampler import StepBatchSampler, StepPlan
from multi2cap.train.schedule import warmup_cosine
from multi2cap.train.sharding import shard_model
from multi2cap.train.signals import StopSignals
from multi2cap.train.state import Best, Position
from multi2cap.train.steps import LOSS_KEYS, optimizer_steps
from multi2cap.train.validation import Validator, check_caption_budgets, improves

log = logging.getLogger("multi2cap.train")


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

    if config.stage == "preference":
        raise ConfigError("stage preference runs through multi2cap.train.train")

    partial = PartialState(cpu=config.runtime.cpu)
    accumulation = config.accumulation_steps(partial.num_processes)
    accelerator = Accelerator(
        cpu=config.runtime.cpu,
        mixed_precision=_mixed_precision(config, partial.device),
        gradient_accumulation_steps=accumulation,
        kwargs_handlers=[ddp_kwargs()],
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
    resume_from = latest_checkpoint(ckpt_root) if resume else None
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
        evaluator: Validator | None = None
        if val_records:
            evaluator = Validator(config, val_records, accelerator.is_main_process)
            stack.callback(evaluator.close)
        model = _build_model(
            config, train_records + val_records, resume_from, Multi2Cap, accelerator.device
        )
        model.set_stage(config.stage)
        if accelerator.is_main_process:
            check_caption_budgets(config, model, train_records)
        # Every process built the same model from `seed` (FSDP shards each process's own copy,
        # so they must agree); from here on each draws its own dropout masks and `mix` choices.
        # A resumed run then restores each process's saved generators.
        torch.manual_seed(config.seed + accelerator.process_index)
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
        train_set = train_dataset(config, train_records, model)
        dataset = train_set.dataset
        silence = stand_in(
            config.data.clip_seconds, dataset.image_size if dataset.with_images else None
        )
        sampler_args = dict(
            micro_batch_size=config.optim.micro_batch_size,
            accumulation_steps=accumulation,
            num_replicas=accelerator.num_processes,
            rank=accelerator.process_index,
            seed=config.seed,
        )
        unit = config.data.epoch_unit
        if len(train_set) < config.optim.batch_size:
            raise ConfigError(
                f"{config.data.train_manifest}: {len(train_set)} training {unit}s "
                f"(data.epoch_unit), fewer than one effective batch "
                f"(optim.batch_size={config.optim.batch_size})"
            )
        plan = StepPlan(
            len(train_set), config.optim.batch_size, config.optim.epochs, config.optim.warmup_epochs
        )
        steps_per_epoch, total_steps = plan.steps_per_epoch, plan.total_steps
        if accelerator.is_main_process:
            log.info("plan: %s", plan.describe(unit))
        scheduler = warmup_cosine(
            optimizer, plan.warmup_steps, total_steps, config.optim.min_lr_ratio
        )
        if sharded:
            optimizer = accelerator.prepare(optimizer)
        else:
            model, optimizer = accelerator.prepare(model, optimizer)

        position, best, history = Position(), Best(), []
        if resume_from is not None:
            position, best, history = restore(
                resume_from, model, optimizer, scheduler, accelerator, config
            )
            log.info("resumed from %s at step %d", resume_from, position.global_step)

        logger = RunLogger(out, config, accelerator.is_main_process, history, position.global_step)
        stack.callback(logger.close)
        checkpointer = Checkpointer(
            ckpt_root, model, optimizer, scheduler, accelerator, config, logger
        )
        stop_at = config.runtime.stop_at_step
        signals = stack.enter_context(StopSignals())
        progress = progress_bar(accelerator.is_main_process and config.runtime.progress)
        bar = stack.enter_context(progress) if progress is not None else None
        task = (
            bar.add_task("train", total=total_steps, completed=position.global_step, loss="")
            if bar is not None
            else None
        )
        stopped, stop_reason = False, None
        pace = _Pace()
        while position.epoch < config.optim.epochs and not stopped:
            train_set.set_epoch(position.epoch)
            loader = step_loader(
                train_set,
                StepBatchSampler(
                    len(train_set),
                    **sampler_args,
                    epoch=position.epoch,
                    start_step=position.step_in_epoch,
                ),
                config,
            )
            steps = optimizer_steps(
                loader, model, optimizer, scheduler, accelerator, config, silence, signals.vote
            )
            for stats in steps:
                position.step_in_epoch += 1
                position.global_step += 1
                pace.add(stats.samples * accelerator.num_processes)
                if logger.logs(position.global_step):
                    # The one host sync of the losses, at logged steps only.
                    losses = dict(zip(LOSS_KEYS, stats.losses.cpu().tolist(), strict=True))
                    record = {
                        "kind": "train",
                        "step": position.global_step,
                        "epoch": position.epoch + position.step_in_epoch / steps_per_epoch,
                        "lr": stats.lr,
                        **losses,
                        "samples_per_s": pace.rate(),
                    }
                    logger.train_step(record)
                    if bar is not None:
                        bar.update(task, loss=f"loss {record['loss']:.4f}")
                skipped, any_stop = stats.skipped, None
                if accelerator.num_processes > 1:  # agreed in the step's all-reduce
                    any_stop, skipped_anywhere = stats.votes.read()
                    skipped = gather_object(skipped) if skipped_anywhere else []
                logger.skipped(skipped, position)
                if bar is not None:
                    bar.update(task, advance=1)
                if stop_at is not None and position.global_step >= stop_at:
                    stopped, stop_reason = True, "stop_at_step"
                elif signals.agreed(any_stop):
                    stopped, stop_reason = True, f"signal {signals.name}"
                every = config.runtime.checkpoint_every_steps
                if stopped or (every and position.global_step % every == 0):
                    checkpointer.save(position, best)
                if stopped:
                    break
            if not stopped and signals.requested(accelerator):  # asked during the last step
                stopped, stop_reason = True, f"signal {signals.name}"
                checkpointer.save(position, best)  # resumes into this epoch's validation
            if stopped:
                break
            position.epoch += 1
            position.step_in_epoch = 0
            every_epochs = config.eval.every_epochs
            if evaluator is not None and every_epochs and position.epoch % every_epochs == 0:
                scores = evaluator.run(accelerator, model, position)
                if accelerator.is_main_process:
                    logger.validation(scores)
                improved = improves(best, scores, config) if accelerator.is_main_process else False
                if accelerator.num_processes > 1:
                    improved = gather_object([improved])[0]
                if improved:  # the main process's `best` and `scores` go into best.json
                    summary = {**vars(best), "scores": scores}
                    save_model(accelerator, model, out, "best", summary)
            checkpointer.save(position, best)

    if stop_reason is not None:  # `final/` is only for a run that did all its epochs
        final = ckpt_root / ckpt.step_dir_name(position.global_step) / ckpt.MODEL_DIR
    else:
        final = out / "final"
        save_model(accelerator, model, out, "final")
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


class _Pace:
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


def ddp_kwargs() -> DistributedDataParallelKwargs:
    """DDP without its search for unused parameters, in both stages: every parameter that
    trains takes part in each step's loss (an unreadable micro-batch's stand-in too, times
    zero), so the search would only add a walk of the autograd graph to every backward."""
    return DistributedDataParallelKwargs(find_unused_parameters=False)


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
    device: torch.device,
) -> Any:
    """Model to train: the resumed checkpoint's, else `init_from`'s (with the recipe's loss and
    decoding fields applied; both with their backbones found through `init_backbones`), else
    one built from `model` (`preset: tiny` builds the tiny model with a vocabulary over the
    manifests' captions). The CLIP tower is loaded only to pre-train. Built on the CPU
    (Accelerate or FSDP places it), with `llm.dtype: auto` resolved for `device`, the one it
    will train on."""
    from multi2cap.model.config import Multi2CapConfig

    load_vision = config.stage == "pretrain"
    backbones = config.init_backbones
    place = dict(load_vision=load_vision, device=device, move=False, backbones=backbones)
    if resume_from is not None:
        return model_cls.from_pretrained(resume_from / ckpt.MODEL_DIR, **place)
    section = dict(config.model)
    preset = section.pop("preset", None)
    if backbones and config.init_from is None:
        raise ConfigError(
            "init_backbones: applies to the init_from checkpoint (or a resumed run's), and "
            "init_from is not set; a new model takes its backbones from model.<role>.source"
        )
    if config.init_from is not None:
        model = model_cls.from_pretrained(config.init_from, **place)
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
        model_config = Multi2CapConfig.tiny(texts, **section)
    elif preset is not None:
        raise ConfigError(f"model.preset: unknown preset {preset!r} (known: tiny)")
    else:
        model_config = Multi2CapConfig.model_validate(section)
    if config.stage == "finetune" and model_config.grounding and config.warn_without_init_from:
        log.warning(
            "fine-tuning a model with grounding without init_from: its VFR never saw a frame "
            "(random weights%s), so g_hat is a random projection of the audio, not reconstructed "
            "visual features. Set init_from to a pre-trained checkpoint (the recipe's "
            "`multi2cap train --config pretrain_vggcaps` best/), model.grounding="
            "false for the audio-only baseline, or warn_without_init_from=false to silence this",
            ", frozen by model.freeze_vfr_in_finetune"
            if model_config.freeze_vfr_in_finetune
            else "",
        )
    return model_cls(model_config, load_vision=load_vision, device=device)
