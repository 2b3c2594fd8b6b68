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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType, gather_object, set_seed

from multi2cap.data.manifest import ManifestRecord
from multi2cap.train import state as ckpt
from multi2cap.train.batches import stand_in, step_loader, train_dataset
from multi2cap.train.checkpointing import Checkpointer, latest_checkpoint, restore
from multi2cap.train.config import ConfigError, TrainConfig
from multi2cap.train.loop import (
    StepBook,
    TrainResult,
    adamw,
    finish,
    make_accelerator,
    read_records,
    validate_and_select,
    validation_records,
    with_threads,
)
from multi2cap.train.run_log import RunLogger, progress_bar
from multi2cap.train.sampler import StepBatchSampler, StepPlan
from multi2cap.train.schedule import warmup_cosine
from multi2cap.train.sharding import shard_model
from multi2cap.train.signals import StopSignals
from multi2cap.train.state import Best, Position
from multi2cap.train.steps import LOSS_KEYS, optimizer_steps
from multi2cap.train.validation import Validator, check_caption_budgets

log = logging.getLogger("multi2cap.train")


def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Run (or with `resume`, continue from the newest checkpoint in the output folder) a recipe."""
    return with_threads(config, lambda: _train(config, resume))


def _train(config: TrainConfig, resume: bool) -> TrainResult:
    from multi2cap.model.multi2cap import Multi2Cap

    if config.stage == "preference":
        raise ConfigError("stage preference runs through multi2cap.train.train")

    partial = PartialState(cpu=config.runtime.cpu)
    accumulation = config.accumulation_steps(partial.num_processes)
    accelerator = make_accelerator(config, partial)
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
    train_records = read_records(config.data.train_manifest, "data.train_manifest")
    val_records = validation_records(config)

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
        optimizer = adamw(list(model.trainable_parameters()), config.optim)
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
        signals = stack.enter_context(StopSignals())
        progress = progress_bar(accelerator.is_main_process and config.runtime.progress)
        bar = stack.enter_context(progress) if progress is not None else None
        task = (
            bar.add_task("train", total=total_steps, completed=position.global_step, loss="")
            if bar is not None
            else None
        )
        book = StepBook(
            config,
            accelerator,
            logger,
            checkpointer,
            signals,
            steps_per_epoch,
            LOSS_KEYS,
            bar,
            task,
        )
        stop_reason = None
        while position.epoch < config.optim.epochs and stop_reason is None:
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
                skipped, any_stop = stats.skipped, None
                if accelerator.num_processes > 1:  # agreed in the step's all-reduce
                    any_stop, skipped_anywhere = stats.votes.read()
                    skipped = gather_object(skipped) if skipped_anywhere else []
                stop_reason = book.step(
                    position,
                    best,
                    samples=stats.samples,
                    lr=stats.lr,
                    # The one host sync of the losses, at logged steps only.
                    values=lambda stats=stats: stats.losses.cpu().tolist(),
                    skipped=skipped,
                    stop_signal=lambda any_stop=any_stop: signals.agreed(any_stop),
                )
                if stop_reason is not None:
                    break
            if stop_reason is None and signals.requested(accelerator):  # during the last step
                stop_reason = f"signal {signals.name}"
                checkpointer.save(position, best)  # resumes into this epoch's validation
            if stop_reason is not None:
                break
            position.epoch += 1
            position.step_in_epoch = 0
            every_epochs = config.eval.every_epochs
            if every_epochs and position.epoch % every_epochs == 0:
                validate_and_select(
                    evaluator, accelerator, model, model, out, config, logger, position, best
                )
            checkpointer.save(position, best)

    return finish(accelerator, model, out, position, best, stop_reason, logger)


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
