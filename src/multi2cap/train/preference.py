"""`stage: preference`: DPO on the fine-tuned model's own candidates (after EGPL-AAC).

1. The `init_from` model (fine-tuned) decodes candidates for the training clips (beams and
   samples), a scorer ranks them against each clip's references, and (best, worst) pairs above
   a margin are kept, with the `init_from` model's log-probabilities of both captions: the
   reference policy, exact and computed once (`multi2cap.train.pairs`; everything is written
   to `<output_dir>/preference/`, so the stage resumes without decoding again).
2. The chosen parts (`preference.train`, the decoder's LoRA by default) train with the DPO loss
   (`multi2cap.train.dpo`), with the trainer's machinery: the step sampler, warm-up + cosine,
   accumulation, DDP, validation and best-checkpoint selection, atomic step checkpoints and
   exact `--resume`.

Before the first update the model is validated (epoch 0, when validation is on), so the run's
`val_log.csv` holds the before / after figures and `best/` can be the starting model when
preference tuning does not help.
"""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed

from multi2cap.train import pairs as prefdata
from multi2cap.train import state as ckpt
from multi2cap.train.batches import SkipTracking, step_loader
from multi2cap.train.checkpointing import Checkpointer, latest_checkpoint, restore
from multi2cap.train.config import ConfigError, TrainConfig
from multi2cap.train.dpo import PREFERENCE_KEYS, PairLogprobs, preference_steps, select_trainable
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
from multi2cap.train.sampler import StepBatchSampler
from multi2cap.train.schedule import warmup_cosine
from multi2cap.train.signals import StopSignals
from multi2cap.train.state import Best, Position
from multi2cap.train.validation import Validator

log = logging.getLogger("multi2cap.train")

# The recipe's `model` entries a preference run may change on its `init_from` model.
_CHANGEABLE = frozenset({"generation"})


def train_preference(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Run (or with `resume`, continue) a `stage: preference` recipe; see the module docstring."""
    return with_threads(config, lambda: _train(config, resume))


def _check(config: TrainConfig, processes: int) -> None:
    if config.stage != "preference":
        raise ConfigError(f"train_preference runs stage preference, not {config.stage!r}")
    if config.init_from is None:
        raise ConfigError(
            "stage preference: init_from is not set; it must name the fine-tuned checkpoint "
            "whose candidates make the pairs and which is the reference policy"
        )
    fixed = sorted(set(config.model) - _CHANGEABLE)
    if fixed:
        raise ConfigError(
            f"model.{fixed[0]}: stage preference tunes the init_from model as it is "
            f"(changeable: {', '.join(sorted(_CHANGEABLE))})"
        )
    if config.runtime.strategy == "fsdp" and processes > 1:
        raise ConfigError(
            "runtime.strategy fsdp: stage preference runs under DDP only (it trains a LoRA; "
            "set runtime.strategy=ddp)"
        )


def _load(config: TrainConfig, folder: Path | str) -> Any:
    """The init_from model (or a resumed checkpoint's), with the recipe's `generation`."""
    from multi2cap.model.config import Multi2CapConfig
    from multi2cap.model.multi2cap import Multi2Cap

    model = Multi2Cap.from_pretrained(folder, load_vision=False, backbones=config.init_backbones)
    if config.model:
        model.config = Multi2CapConfig.model_validate({**model.config.model_dump(), **config.model})
    model.set_stage("finetune")
    return model


def _train(config: TrainConfig, resume: bool) -> TrainResult:
    from multi2cap.data.dataset import CaptionDataset
    from multi2cap.model.hub import resolve_checkpoint

    partial = PartialState(cpu=config.runtime.cpu)
    _check(config, partial.num_processes)
    accelerator = make_accelerator(config, partial)
    main = accelerator.is_main_process
    out = Path(config.runtime.output_dir)
    ckpt_root = out / "checkpoints"
    resume_from = latest_checkpoint(ckpt_root) if resume else None
    set_seed(config.seed)
    records = read_records(config.data.train_manifest, "data.train_manifest")
    val_records = validation_records(config)
    index = {r.id: i for i, r in enumerate(records)}
    if len(index) != len(records):
        raise ConfigError(f"{config.data.train_manifest}: clip ids are not unique")
    clips = SkipTracking(
        CaptionDataset(
            records, train=False, clip_seconds=config.data.clip_seconds, seed=config.seed
        )
    )

    with ExitStack() as stack:
        evaluator: Validator | None = None
        if val_records:
            evaluator = Validator(config, val_records, main)
            stack.callback(evaluator.close)
        init = resolve_checkpoint(config.init_from)
        loaded: list[Any] = []

        def init_model() -> Any:
            """The init_from model, loaded once and only when needed."""
            if not loaded:
                loaded.append(_load(config, init).to(accelerator.device))
            return loaded[0]

        pairs = _pairs(
            config, init_model, records, index, clips, accelerator, init, resume_from, resume
        )
        if resume_from is not None:  # the policy as it was saved; the pairs hold the reference
            model = _load(config, resume_from / ckpt.MODEL_DIR).to(accelerator.device)
        else:
            model = init_model()
        params = select_trainable(model, config.preference.train)
        if config.runtime.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        optimizer = adamw(params, config.optim)
        dataset = prefdata.PairDataset(pairs, index, clips)
        sampler_args = dict(
            micro_batch_size=config.optim.micro_batch_size,
            accumulation_steps=accelerator.gradient_accumulation_steps,
            num_replicas=accelerator.num_processes,
            rank=accelerator.process_index,
            seed=config.seed,
        )
        steps_per_epoch = StepBatchSampler(len(dataset), **sampler_args).steps_per_epoch
        if steps_per_epoch == 0:
            raise ConfigError(
                f"{len(dataset)} preference pairs, fewer than one effective batch "
                f"(optim.batch_size={config.optim.batch_size}); lower it, or preference.margin"
            )
        total_steps = steps_per_epoch * config.optim.epochs
        warmup_steps = round(config.optim.warmup_epochs * steps_per_epoch)
        scheduler = warmup_cosine(optimizer, warmup_steps, total_steps, config.optim.min_lr_ratio)
        policy, optimizer = accelerator.prepare(PairLogprobs(model), optimizer)

        position, best, history = Position(), Best(), []
        if resume_from is not None:
            position, best, history = restore(
                resume_from, policy, optimizer, scheduler, accelerator, config
            )
            log.info("resumed from %s at step %d", resume_from, position.global_step)
        logger = RunLogger(
            out, config, main, history, position.global_step, loss_keys=PREFERENCE_KEYS
        )
        stack.callback(logger.close)
        checkpointer = Checkpointer(
            ckpt_root, policy, optimizer, scheduler, accelerator, config, logger
        )

        def validate() -> None:
            validate_and_select(
                evaluator, accelerator, model, policy, out, config, logger, position, best
            )

        if resume_from is None and config.eval.every_epochs:
            validate()  # epoch 0: the fine-tuned model before any preference update
        signals = stack.enter_context(StopSignals())
        progress = progress_bar(main and config.runtime.progress)
        bar = stack.enter_context(progress) if progress is not None else None
        task = (
            bar.add_task("preference", total=total_steps, completed=position.global_step, loss="")
            if bar is not None
            else None
        )
        book = StepBook(
            config, accelerator, logger, checkpointer, signals, steps_per_epoch, PREFERENCE_KEYS,
            bar, task,
        )  # fmt: skip
        stop_reason = None
        silence = prefdata.stand_in_pair()
        while position.epoch < config.optim.epochs and stop_reason is None:
            loader = step_loader(
                dataset,
                StepBatchSampler(
                    len(dataset),
                    **sampler_args,
                    epoch=position.epoch,
                    start_step=position.step_in_epoch,
                ),
                config,
                prefdata.collate_pairs,
            )
            steps = preference_steps(
                loader,
                policy,
                optimizer,
                scheduler,
                accelerator,
                config.preference,
                config.optim.max_grad_norm,
                silence,
            )
            for stats in steps:
                if accelerator.num_processes > 1:
                    skipped = [i for part in _gather(stats.skipped) for i in part]
                else:
                    skipped = stats.skipped
                stop_reason = book.step(
                    position,
                    best,
                    samples=stats.pairs,
                    lr=stats.lr,
                    values=lambda stats=stats: stats.values.cpu().tolist(),
                    skipped=skipped,
                    stop_signal=lambda: signals.requested(accelerator),
                )
                if stop_reason is not None:
                    break
            if stop_reason is not None:
                break
            position.epoch += 1
            position.step_in_epoch = 0
            every_epochs = config.eval.every_epochs
            if every_epochs and position.epoch % every_epochs == 0:
                validate()
            checkpointer.save(position, best)

    return finish(accelerator, policy, out, position, best, stop_reason, logger)


def _gather(items: list[str]) -> list[list[str]]:
    from accelerate.utils import gather_object

    return gather_object([items])


def _pairs(
    config: TrainConfig,
    init_model: Any,
    records: list[Any],
    index: dict[str, int],
    clips: Any,
    accelerator: Accelerator,
    init: Path,
    resume_from: Path | None,
    resume: bool,
) -> list[prefdata.Pair]:
    """The run's preference pairs: read back when a resumed run finished them with the same
    settings, else built (candidates resumed where decoding stopped)."""
    from multi2cap.model.config import TRAINABLE_FILE

    out = prefdata.folder(config)
    candidates = prefdata.candidate_settings(
        config, records, prefdata.file_sha256(init / TRAINABLE_FILE)
    )
    settings = prefdata.pair_settings(config, candidates)
    finished = prefdata.read_pairs(out) if resume else None
    if finished is not None and finished[1].get("settings") == settings:
        pairs = finished[0]
        log.info("preference: %d pairs read from %s", len(pairs), out / prefdata.PAIRS)
    elif resume_from is not None:
        raise ConfigError(
            f"--resume: training checkpoints exist in {resume_from.parent} but the preference "
            f"pairs in {out} are missing or were made with other settings; restore them, or "
            "run without --resume to start the stage again"
        )
    else:
        model = init_model()
        found = prefdata.generate_candidates(
            model, records, config, accelerator, candidates, clips, resume
        )
        chosen, counts = prefdata.on_main(
            accelerator, lambda: prefdata.select_pairs(records, found, config)
        )
        pairs = prefdata.reference_logprobs(model, chosen, index, clips, config, accelerator)
        if accelerator.is_main_process:
            summary = {"settings": settings, **counts, "pairs_with_logprobs": len(pairs)}
            prefdata.write_pairs(out, pairs, summary)
            log.info(
                "preference: %d pairs from %d clips' candidates (%s)",
                len(pairs),
                counts["clips_with_candidates"],
                out / prefdata.PAIRS,
            )
        accelerator.wait_for_everyone()
    if not pairs:
        raise ConfigError(
            f"no preference pair: no clip's best and worst candidates differ by more than "
            f"preference.margin ({config.preference.margin}) under {config.preference.scorer}; "
            "lower the margin or add candidates"
        )
    if not math.isfinite(sum(p.ref_logp[0] + p.ref_logp[1] for p in pairs)):
        raise ConfigError(f"{out / prefdata.PAIRS}: reference log-probabilities are not finite")
    return pairs
