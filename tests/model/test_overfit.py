"""Pre-training on 8 clips memorises them, and audio-only decoding (through the VFR) returns
the training captions; fine-tuning then runs with no image anywhere."""

from __future__ import annotations

import torch
from multi2cap_testkit import CAPTIONS, make_batch, tiny

MAX_STEPS = 400


def test_pretraining_overfits_eight_clips_and_decodes_their_captions() -> None:
    model = tiny()
    batch = make_batch(8)
    model.set_stage("pretrain")
    vfr = list(model.vfr.parameters())
    others = [p for p in model.trainable_parameters() if all(p is not q for q in vfr)]
    # The VFR chases a moving target (g); a larger step lets it catch up within the budget.
    optimizer = torch.optim.AdamW([{"params": others, "lr": 3e-3}, {"params": vfr, "lr": 1e-2}])
    first = None
    for _ in range(MAX_STEPS):
        out = model(batch, "pretrain")
        first = first if first is not None else out.loss_cap.item()
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        # L_vfr is Eq. 3's squared norm per clip (`vfr_reduction` sum) over K x d_g = 4 x 32
        # elements: stop when the mean squared element is below 0.003.
        if out.loss_cap.item() < 0.02 and out.loss_vfr.item() / (4 * 32) < 0.003:
            break
    assert first > 3.0
    assert out.loss_cap.item() < 0.05
    assert out.loss_align.item() < 0.1

    model.eval()
    assert model.caption(batch["audio"], num_beams=1) == CAPTIONS
    assert model.caption(batch["audio"], num_beams=3) == CAPTIONS

    model.train()
    finetune = model(make_batch(8, images=False), "finetune")
    assert finetune.loss_cap.item() < 0.1  # g_hat stands in for g
    finetune.loss.backward()
