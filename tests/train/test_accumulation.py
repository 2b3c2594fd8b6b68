"""Gradient accumulation reproduces one large batch: the step loop's gradients for 4 accumulated
micro-batches of 2 clips equal those of one forward pass over the 8 clips, with ragged caption
lengths (L_cap a token mean over the effective batch) and L_align contrasting all 8 clips
(`optim.align_batch: effective`, the gradient cache). Tiny random backbones, one process."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from accelerate import Accelerator

from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.train.config import TrainConfig
from multi2cap.train.steps import optimizer_steps

# Captions of 1 to 9 words: token counts differ from one micro-batch to the next.
CAPTIONS = [
    "a dog barks",
    "rain",
    "a man speaks while a car passes by slowly",
    "birds sing in the morning",
    "water",
    "a door slams twice and then someone walks away",
    "wind blows",
    "an engine starts",
]


def _batch() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(3)
    n = len(CAPTIONS)
    return {
        "ids": [f"clip{i}" for i in range(n)],
        "skipped": [],
        "audio": torch.randn(n, 32_000, generator=gen) * 0.1,
        "audio_lengths": torch.tensor(
            [32_000, 20_000, 32_000, 9_000, 27_000, 32_000, 16_000, 30_000]
        ),
        "images": torch.rand(n, 3, 32, 32, generator=gen),
        "captions": list(CAPTIONS),
        "references": [[c] for c in CAPTIONS],
    }


def _micro(batch: dict[str, Any], part: slice) -> dict[str, Any]:
    return {k: v[part] for k, v in batch.items()}


def _model(stage: str) -> Multi2Cap:
    torch.manual_seed(0)
    model = Multi2Cap(Multi2CapConfig.tiny(CAPTIONS))
    model.set_stage(stage)
    return model.train()


class _Recorder(torch.optim.SGD):
    """SGD with lr 0 that keeps the gradients of each step."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        super().__init__(params, lr=0.0)
        self.grads: list[list[torch.Tensor]] = []

    def step(self, closure: Any = None) -> None:
        self.grads.append([p.grad.clone() for p in self.param_groups[0]["params"]])


def _accumulated(stage: str, micro: int, align_batch: str = "effective") -> list[torch.Tensor]:
    """Trainable gradients of one optimizer step of `optimizer_steps` over 8 clips."""
    batch = _batch()
    accumulation = len(CAPTIONS) // micro
    config = TrainConfig.model_validate(
        {
            "stage": stage,
            "optim": {
                "batch_size": len(CAPTIONS),
                "micro_batch_size": micro,
                "align_batch": align_batch,
            },
        }
    )
    model = _model(stage)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    optimizer = _Recorder(model.trainable_parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, prepared = accelerator.prepare(model, optimizer)
    loader = [_micro(batch, slice(i, i + micro)) for i in range(0, len(CAPTIONS), micro)]
    stats = list(optimizer_steps(loader, model, prepared, scheduler, accelerator, config, {}))
    assert len(stats) == 1 and len(optimizer.grads) == 1
    return optimizer.grads[0]


def _one_batch(stage: str) -> list[torch.Tensor]:
    """The reference: one forward and backward over the 8 clips, the model's own means."""
    model = _model(stage)
    model(_batch(), stage).loss.backward()
    return [p.grad.clone() for p in model.trainable_parameters()]


def _relative_errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> list[float]:
    """Per parameter tensor, |got - want| / |want| (Frobenius norms; 0 for zero gradients)."""
    assert len(got) == len(want)
    return [
        float((a - b).norm() / b.norm()) if b.norm() > 0 else float(a.norm())
        for a, b in zip(got, want, strict=True)
    ]


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    errors = _relative_errors(got, want)
    assert max(errors) < 1e-5, errors


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_four_micro_batches_of_two_give_the_gradient_of_one_batch_of_eight(stage: str) -> None:
    _assert_same(_accumulated(stage, micro=2), _one_batch(stage))


def test_one_micro_batch_of_eight_through_the_loop_is_the_plain_batch() -> None:
    _assert_same(_accumulated("pretrain", micro=8), _one_batch("pretrain"))


def test_align_batch_micro_contrasts_within_each_micro_batch() -> None:
    # The per-micro-batch InfoNCE (4 contrastive batches of 2) is another loss: the grounding
    # and alignment gradients differ from the batch of 8's, L_cap's do not change.
    got, want = _accumulated("pretrain", micro=2, align_batch="micro"), _one_batch("pretrain")
    assert max(_relative_errors(got, want)) > 1e-2
