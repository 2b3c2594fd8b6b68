"""Validation during training (AAC metrics on a fixed subset) and best-checkpoint selection."""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader

from multi2cap.data.manifest import ManifestRecord
from multi2cap.media.audio import SAMPLE_RATE
from multi2cap.train.batches import SkipTracking, collate, stand_in, to_device
from multi2cap.train.config import ConfigError, TrainConfig
from multi2cap.train.sharding import is_sharded
from multi2cap.train.state import Best, Position

log = logging.getLogger("multi2cap.train")

FRAME = "frame"  # pre-training's path: g from the video frame feeds the adapter
AUDIO_ONLY = "audio_only"  # g_hat from the VFR: fine-tuning and inference
AUDIO_ONLY_PREFIX = "audio_only_"


class Validator:
    """Teacher-forced caption loss and decoded-caption metrics on a fixed validation subset.

    Each process decodes its share; the main process scores. The path scored is the one the
    stage trains: in fine-tuning the audio-only path (g_hat from the VFR, as at inference); in
    pre-training with grounding and `pretrain_adapter_input` g (or mix) the path with the frame
    (g, the adapter's pre-training input), under the plain names (`val_loss`, `cider_d`, ...),
    and beside it the audio-only path under `audio_only_<name>`. `eval.select_path` says which
    of the two selects the best checkpoint. The metric back-ends are checked when the run
    starts: a `best_metric` that cannot be computed here is a configuration error before any
    training, other unavailable metrics are logged and left out.
    """

    def __init__(self, config: TrainConfig, records: list[ManifestRecord], main: bool) -> None:
        from multi2cap.metrics import Evaluator, resolve_metrics

        self.config = config
        self.records = records
        self._evaluator: Any = None
        self._warned = False
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

    def run(self, accelerator: Accelerator, model: torch.nn.Module, position: Position) -> dict:
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
        """Per path (`AUDIO_ONLY` and, pre-training with frames, `FRAME`): caption loss sum and
        candidates for `records`, and their references, running at least `min_batches`
        forward passes."""
        from multi2cap.data.dataset import CaptionDataset

        cfg = self.config
        inner = accelerator.unwrap_model(model)  # a DDP wrapper would sync in forward
        paths = self.paths(inner)
        image_size = None
        if FRAME in paths:
            image_size = cfg.data.image_size or inner.vision.image_size
        dataset = SkipTracking(
            CaptionDataset(
                records,
                train=False,
                clip_seconds=cfg.data.clip_seconds,
                with_images=image_size is not None,
                image_size=image_size or 224,
                augment=None,
                seed=cfg.seed,
            )
        )
        loader = DataLoader(
            dataset,
            batch_size=cfg.eval.batch_size,
            collate_fn=collate,
            num_workers=cfg.data.num_workers if records else 0,
        )
        was_training, stage = inner.training, inner.stage
        trainable = [p.requires_grad for p in inner.parameters()]  # the stage's, or narrower
        inner.eval()
        part: dict[str, Any] = {
            "n_items": 0,
            "references": [],
            "paths": {path: {"loss_sum": 0.0, "candidates": []} for path in paths},
        }
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
                    batch = stand_in(cfg.data.clip_seconds, image_size)
                batch = to_device(batch, accelerator.device)
                n = batch["audio"].shape[0]
                for path in paths:
                    loss, captions = self._path(inner, batch, path)
                    if real:
                        part["paths"][path]["loss_sum"] += float(loss) * n
                        part["paths"][path]["candidates"] += captions
                if real:
                    part["n_items"] += n
                    part["references"] += batch["references"]
        inner.set_stage(stage)
        for param, flag in zip(inner.parameters(), trainable, strict=True):
            param.requires_grad_(flag)
        inner.train(was_training)
        return part

    def paths(self, inner: Any) -> dict[str, str]:
        """The paths validated, name -> score-key prefix: the trained path unprefixed."""
        pretrain_with_frames = (
            self.config.stage == "pretrain"
            and inner.vision is not None
            and inner.config.pretrain_adapter_input != "g_hat"
        )
        if pretrain_with_frames and all(r.image for r in self.records):
            return {FRAME: "", AUDIO_ONLY: AUDIO_ONLY_PREFIX}
        if pretrain_with_frames and not self._warned:
            log.warning(
                "validation records without an image: pre-training is validated on the "
                "audio-only path only (the trained path needs the frames)"
            )
            self._warned = True
        return {AUDIO_ONLY: ""}

    def _path(self, inner: Any, batch: dict[str, Any], path: str) -> tuple[Any, list[str]]:
        """(teacher-forced L_cap, decoded captions) of `batch` through `path`."""
        cfg = self.config.eval
        budget = decoding_budget(self.config, inner)
        if path == FRAME:
            return inner.validate(batch, "g", num_beams=cfg.num_beams, max_new_tokens=budget)
        loss = inner(batch, "finetune").loss_cap
        n = batch["audio"].shape[0]
        waves = [
            batch["audio"][i, : int(batch["audio_lengths"][i])].float().cpu() for i in range(n)
        ]
        captions = inner.caption(
            waves,
            sampling_rate=SAMPLE_RATE,  # the data module's rate
            num_beams=cfg.num_beams,
            max_new_tokens=budget,
            batch_size=cfg.batch_size,
        )
        return loss, captions

    def _score(self, parts: list[dict[str, Any]], position: Position) -> dict[str, Any]:
        n_items = sum(p["n_items"] for p in parts)
        references = [r for p in parts for r in p["references"]]
        scores: dict[str, Any] = {
            "kind": "val",
            "epoch": position.epoch,
            "step": position.global_step,
            "val_items": n_items,
        }
        for path in parts[0]["paths"]:
            prefix = "" if path == FRAME or len(parts[0]["paths"]) == 1 else AUDIO_ONLY_PREFIX
            candidates = [c for p in parts for c in p["paths"][path]["candidates"]]
            loss_sum = sum(p["paths"][path]["loss_sum"] for p in parts)
            scores[f"{prefix}val_loss"] = loss_sum / max(n_items, 1)
            if candidates:
                result = self._evaluator.evaluate(candidates, references)
                scores.update(
                    {f"{prefix}{k}": v for k, v in result.corpus.items() if v is not None}
                )
                scores[f"{prefix}examples"] = [
                    {"candidate": c, "references": r}
                    for c, r in zip(candidates[:3], references[:3], strict=True)
                ]
        return scores


def improves(best: Best, scores: dict[str, Any], config: TrainConfig) -> bool:
    """Update `best` when `scores` beat it on `eval.best_metric`; False when it is missing."""
    metric = config.eval.best_metric
    if config.eval.select_path == "audio_only" and f"{AUDIO_ONLY_PREFIX}{metric}" in scores:
        metric = f"{AUDIO_ONLY_PREFIX}{metric}"  # pre-training: the g_hat path beside the g one
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


def decoding_budget(config: TrainConfig, inner: Any) -> int:
    """New tokens validation decodes: `eval.max_new_tokens`, else the model's
    `generation.max_new_tokens` (by default its `max_caption_tokens`)."""
    return config.eval.max_new_tokens or inner.config.generation.max_new_tokens


def check_caption_budgets(config: TrainConfig, inner: Any, records: list[ManifestRecord]) -> int:
    """Measure the longest training caption in the decoder's tokens (EOS included), log it, and
    warn where training cuts captions (`model.max_caption_tokens`) or decoding would
    (`eval.max_new_tokens`, and `generation.max_new_tokens`, the checkpoint's `caption`
    default): a budget below the longest caption training keeps stops the model mid-caption.
    Returns that longest length."""
    captions = [c for r in records for c in r.captions]
    ids = inner.decoder.tokenizer(captions, add_special_tokens=False)["input_ids"]
    lengths = [len(i) + 1 for i in ids]
    longest, keep = max(lengths), inner.config.max_caption_tokens
    log.info(
        "longest training caption: %d decoder tokens with EOS (model.max_caption_tokens %d)",
        longest,
        keep,
    )
    cut = sum(n > keep for n in lengths)
    if cut:
        log.warning(
            "%d of %d training captions are longer than model.max_caption_tokens (%d, longest "
            "%d): training cuts them (their EOS kept)",
            cut,
            len(lengths),
            keep,
            longest,
        )
    needed = min(longest, keep)
    budgets = {
        "eval.max_new_tokens": decoding_budget(config, inner),
        "model.generation.max_new_tokens": inner.config.generation.max_new_tokens,
    }
    for name, budget in budgets.items():
        if budget < needed:
            log.warning(
                "%s is %d, below the %d tokens of the longest caption training keeps: decoding "
                "can stop mid-caption; raise it (or leave it unset: max_caption_tokens)",
                name,
                budget,
                needed,
            )
    return longest
