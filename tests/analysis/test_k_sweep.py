"""What the K sweep's FLOPs count, and its slope per grounding token beside the paper's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multi2cap.analysis import k_sweep as ks
from multi2cap.model.adapter import GroundAdapter
from multi2cap.model.grounding import AVGrounding
from multi2cap.model.vfr import VisualFeatureReconstructor


def test_fused_attention_on_cpu_is_counted() -> None:
    """torch's FlopCounterMode alone counts 0 for the CPU flash-attention kernel that a fused
    `nn.MultiheadAttention` runs; ours counts it: 2 x (Q K^T + A V) multiply-adds."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    q, kv = torch.randn(2, 16, 32), torch.randn(2, 10, 32)
    projections = 2 * 2 * (16 * 32 * 32 + 2 * 10 * 32 * 32 + 16 * 32 * 32)
    attention = 2 * 2 * (2 * 16 * 10 * 32)
    with torch.no_grad(), ks.flop_counter() as counter:
        mha(q, kv, kv, need_weights=False)
    assert counter.get_total_flops() == projections + attention
    with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as plain:
        mha(q, kv, kv, need_weights=False)
    assert plain.get_total_flops() == projections  # what the count was before


@pytest.mark.parametrize("pool", ["space", "time"])
def test_grounding_path_counts_the_same_on_meta_and_real_tensors(pool: str) -> None:
    """The benchmark counts at the paper's widths on meta tensors: the same numbers as a real
    run (checked at small widths), per part."""

    def parts(device: str) -> dict[str, int]:
        torch.manual_seed(0)
        with torch.device(device):
            grounding = AVGrounding(24, 40, 32, 4, 4, pool=pool).eval()
            vfr = VisualFeatureReconstructor(24, 48, 32, k=4, pool=pool).eval()
            adapter = GroundAdapter(24, 64, 32).eval()
            tokens = torch.randn(1, 9, 24)
            mask = torch.ones(1, 9, dtype=torch.bool)
            patches = torch.randn(1, 36, 40)
        return ks.grounding_path_flops(grounding, vfr, adapter, tokens, mask, patches, (6, 6))

    real = parts("cpu")
    assert real == parts("meta") and all(v > 0 for v in real.values())


def test_slopes_per_grounding_token() -> None:
    slope, intercept = ks.paper_slope()
    assert slope == pytest.approx(0.0343, abs=5e-5)
    assert (9.72 - intercept) / slope == pytest.approx(265, abs=1)  # Table 5's unlabelled row
    assert ks.flops_slope([1, 4, 16], [1.0 + 0.5 * k for k in (1, 4, 16)]) == pytest.approx(0.5)
    assert ks.flops_slope([4, 4], [1.0, 2.0]) is None
