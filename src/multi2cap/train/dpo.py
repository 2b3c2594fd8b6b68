"""The DPO objective (Rafailov et al. 2023) on preference pairs, and its optimizer-step loop.

For a pair (clip x, chosen y_w, rejected y_l) with the reference model's log-probabilities
cached when the pairs were built (`multi2cap.train.pairs`):

    z = beta ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)))
    L_dpo = -log sigmoid(z)
    L_anchor = max(0, (log ref(y_w|x) - log pi(y_w|x)) / |y_w| - tolerance)^2   (EGPL-AAC)
    L = L_dpo + anchor_weight L_anchor

log p(y|x) is the sum over the caption's tokens and EOS (`logp: sum`, the DPO paper) or their
mean (`logp: mean`, EGPL-AAC's length normalisation); the anchor is per token either way. The
policy runs without dropout (as TRL's DPO does by default): with dropout its log-probabilities
would differ from the reference's at step 0 by noise, and z would start away from 0.

The effective batch's loss is the mean over its pairs, whatever the split into devices and
accumulation steps: the step's usable pairs are counted over all processes (one small
all-reduce), and each micro-batch contributes its pairs' sum over that count.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader

from multi2cap.train.batches import to_device
from multi2cap.train.preference_config import PreferenceConfig, PreferencePart

#: What the preference stage logs per optimizer step (`train_log.csv`), means over the effective
#: batch: the loss, its two terms, the implicit reward margin z and the fraction of pairs with
#: z > 0 (the policy prefers the chosen caption more than the reference does).
PREFERENCE_KEYS = ("loss", "loss_dpo", "loss_anchor", "reward_margin", "reward_accuracy")


@dataclass
class DpoTerms:
    """Per-pair values `(B,)`: the loss, its DPO and anchor terms, and z."""

    loss: Tensor
    loss_dpo: Tensor
    loss_anchor: Tensor
    z: Tensor

    def stacked(self) -> Tensor:
        """`(len(PREFERENCE_KEYS), B)` in `PREFERENCE_KEYS` order (z > 0 as the accuracy)."""
        return torch.stack(
            [self.loss, self.loss_dpo, self.loss_anchor, self.z, (self.z > 0).to(self.z.dtype)]
        )


def dpo_terms(
    policy: Tensor,
    reference: Tensor,
    tokens: Tensor,
    config: PreferenceConfig,
) -> DpoTerms:
    """DPO (and anchor) terms of B pairs from summed log-probabilities `(B, 2)` (column 0 the
    chosen caption, 1 the rejected) of the policy and of the reference, and token counts
    `(B, 2)` (caption tokens + EOS)."""
    tokens = tokens.to(policy.dtype).clamp_min(1)
    reference = reference.to(policy)
    if config.logp == "mean":
        pi, ref = policy / tokens, reference / tokens
    else:
        pi, ref = policy, reference
    z = config.beta * ((pi[:, 0] - ref[:, 0]) - (pi[:, 1] - ref[:, 1]))
    loss_dpo = -F.logsigmoid(z)
    drop = (reference[:, 0] - policy[:, 0]) / tokens[:, 0] - config.anchor_tolerance
    loss_anchor = drop.clamp_min(0).square()
    return DpoTerms(loss_dpo + config.anchor_weight * loss_anchor, loss_dpo, loss_anchor, z)


class PairLogprobs(nn.Module):
    """The policy as DDP wraps it: `forward` gives the log-probabilities of each clip's captions
    (chosen and rejected), encoding each clip's audio once. Saving and the trainer's checkpoints
    go to the `Multi2Cap` it holds (`save_pretrained`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, audio: Tensor, lengths: Tensor, captions: Sequence[Sequence[str]]
    ) -> tuple[Tensor, Tensor]:
        """Summed log-probabilities and token counts, both `(B, n)`, of `captions[b][j]` (n
        captions per clip) given clip b's audio-only prefix."""
        return caption_logprobs(self.model, audio, lengths, captions)

    def save_pretrained(
        self, folder: str | os.PathLike[str], *, is_main_process: bool = True
    ) -> Path:
        return self.model.save_pretrained(folder, is_main_process=is_main_process)


def caption_logprobs(
    model: Any, audio: Tensor, lengths: Tensor, captions: Sequence[Sequence[str]]
) -> tuple[Tensor, Tensor]:
    """`(B, n)` summed log-probabilities (float32) and token counts of `captions[b][j]` under a
    `Multi2Cap` given clip b's audio alone (`Multi2Cap.audio_prefix`: g_hat, as at inference);
    every clip has the same number n of captions."""
    n = len(captions[0])
    if any(len(group) != n for group in captions):
        raise ValueError("caption_logprobs needs the same number of captions for every clip")
    prefix, mask = model.audio_prefix(audio, lengths)
    flat = [c for group in captions for c in group]
    logp, counts = model.decoder.sequence_logprobs(
        prefix.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0), flat
    )
    return logp.view(-1, n), counts.view(-1, n)


def select_trainable(model: Any, parts: Sequence[PreferencePart]) -> list[nn.Parameter]:
    """Freeze `model` (a Multi2Cap) but the `parts` named; return their parameters. A part the
    model does not have (LoRA disabled in its config) is an error naming it."""
    groups = {
        "llm_lora": [p for n, p in model.decoder.named_parameters() if "lora_" in n],
        "audio_lora": [p for n, p in model.audio_encoder.named_parameters() if "lora_" in n],
        "adapter": list(model.adapter.parameters()),
    }
    model.requires_grad_(False)
    chosen: list[nn.Parameter] = []
    for part in parts:
        if not groups[part]:
            raise ValueError(
                f"preference.train: {part} has no parameters in this model (is its LoRA enabled "
                "in the init_from checkpoint's config?)"
            )
        for param in groups[part]:
            param.requires_grad_(True)
        chosen += groups[part]
    return chosen


def dropout_off(module: nn.Module) -> None:
    """Train mode (so that gradient checkpointing, which HF applies only in training, stays on)
    with every dropout layer in eval mode: the policy's forward is the reference's."""
    module.train()
    for child in module.modules():
        if isinstance(child, nn.Dropout):
            child.eval()


@dataclass
class PreferenceStats:
    """One optimizer step on this process: `values` `(len(PREFERENCE_KEYS),)` are the effective
    batch's means over all processes, on the device; `pairs` this process's usable pairs."""

    values: Tensor
    lr: float
    pairs: int
    skipped: list[str]


def preference_steps(
    loader: DataLoader,
    policy: nn.Module,
    optimizer: Any,
    scheduler: Any,
    accelerator: Accelerator,
    config: PreferenceConfig,
    max_grad_norm: float | None,
    stand_in: dict[str, Any],
) -> Iterator[PreferenceStats]:
    """Each optimizer step's micro-batches through `accelerator.accumulate`; yield after each
    step. A micro-batch without a readable clip runs the previous good one (before any: under
    DDP, `stand_in`) with its loss times zero, so that every process takes part in each gradient
    reduction; it adds nothing to the gradient."""
    dropout_off(accelerator.unwrap_model(policy))
    device = accelerator.device
    accumulation = accelerator.gradient_accumulation_steps
    replicas = accumulation * accelerator.num_processes
    fallback: dict[str, Any] | None = None
    batches = iter(loader)
    while group := list(itertools.islice(batches, accumulation)):
        usable = [len(b["ids"]) > 0 for b in group]
        fallback = next((b for b, ok in zip(group, usable, strict=True) if ok), fallback)
        total = torch.tensor(float(sum(len(b["ids"]) for b in group)), device=device)
        if accelerator.num_processes > 1:
            total = accelerator.reduce(total, "sum")
        total = total.clamp_min(1.0)
        sums = torch.zeros(len(PREFERENCE_KEYS), device=device)
        pairs = 0
        for batch, ok in zip(group, usable, strict=True):
            with accelerator.accumulate(policy):
                run = batch if ok else fallback
                if run is None and accelerator.num_processes > 1:
                    run = stand_in
                if run is not None:
                    run = to_device(run, device)
                    with accelerator.autocast():
                        captions = list(zip(run["chosen"], run["rejected"], strict=True))
                        logp, tokens = policy(run["audio"], run["audio_lengths"], captions)
                    terms = dpo_terms(logp, run["reference"], tokens, config)
                    share = replicas / total
                    accelerator.backward(terms.loss.sum() * share * (1.0 if ok else 0.0))
                    if ok:
                        sums += terms.stacked().detach().float().sum(dim=1) * share
                        pairs += len(run["ids"])
                if accelerator.sync_gradients and max_grad_norm is not None:
                    accelerator.clip_grad_norm_(policy.parameters(), max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        yield PreferenceStats(
            accelerator.reduce(sums / replicas, "sum"),
            lr,
            pairs,
            [i for b in group for i in b["skipped"]],
        )
