from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from multi2cap.model.grounding import (
    AlignmentLoss,
    AVGrounding,
    InfoNCE,
    masked_mean,
    segment_weights,
)
from multi2cap.model.vfr import VisualFeatureReconstructor, vfr_loss


@pytest.mark.parametrize(("length", "k"), [(10, 4), (62, 4), (7, 3), (4, 4), (2, 4), (1, 4)])
def test_segment_pooling_matches_adaptive_avg_pool_on_valid_frames(length: int, k: int) -> None:
    width = 70
    x = torch.randn(1, width, 5)
    mask = torch.arange(width).unsqueeze(0) < length
    pooled = torch.bmm(segment_weights(mask, k), x)
    reference = F.adaptive_avg_pool1d(x[:, :length].transpose(1, 2), k).transpose(1, 2)
    torch.testing.assert_close(pooled, reference)


def test_segment_weights_ignore_padding_and_sum_to_one() -> None:
    mask = torch.tensor([[True] * 8 + [False] * 4, [True] * 12])
    weights = segment_weights(mask, 4)
    assert weights.shape == (2, 4, 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))
    assert torch.all(weights[0, :, 8:] == 0)
    # 8 valid frames, K=4: segments of exactly two frames each
    assert torch.equal(weights[0, 1, :8], torch.tensor([0, 0, 0.5, 0.5, 0, 0, 0, 0]))


def test_masked_mean_uses_valid_steps_only() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


def test_time_grounding_shapes_and_padding_does_not_leak() -> None:
    grounding = AVGrounding(d_audio=6, d_visual=10, d_g=8, heads=2, k=4, pool="time").eval()
    audio = torch.randn(2, 9, 6)
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    visual = torch.randn(2, 16, 10)
    out = grounding(audio, mask, visual, need_weights=True)
    assert out.g.shape == (2, 4, 8)
    assert out.attention.shape == (2, 9, 16)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 9))
    garbage = audio.clone()
    garbage[1, 5:] = 1e3
    torch.testing.assert_close(grounding(garbage, mask, visual).g, out.g)
    # the visual input matters: other patches give other grounding tokens
    assert not torch.allclose(grounding(audio, mask, visual.flip(0)).g, out.g)


def _aten_ops(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize(("pool", "attention_shape"), [("time", (3, 9, 16)), ("space", (3, 16, 9))])
def test_grounding_runs_fused_attention_unless_weights_are_asked_for(
    pool: str, attention_shape: tuple[int, ...]
) -> None:
    """Training and captioning take the SDPA path (no weights); the probe path materialises
    the weights; both compute the same g and the same gradients, under either reading."""
    torch.manual_seed(0)
    grounding = AVGrounding(d_audio=6, d_visual=10, d_g=16, heads=4, k=4, pool=pool).train()
    audio = torch.randn(3, 9, 6, requires_grad=True)
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4, [True] * 2 + [False] * 7])
    visual = torch.randn(3, 16, 10)
    grid = (4, 4)

    def run(need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        out = grounding(audio, mask, visual, grid=grid, need_weights=need_weights)
        params = [audio, *grounding.parameters()]
        grads = torch.autograd.grad(out.g.square().sum(), params)
        return out.g, out.attention, list(grads)

    fused_g, fused_attention, fused_grads = run(False)
    probe_g, probe_attention, probe_grads = run(True)
    assert fused_attention is None
    assert probe_attention is not None and probe_attention.shape == attention_shape
    torch.testing.assert_close(fused_g, probe_g, rtol=1e-5, atol=1e-6)
    for got, want in zip(fused_grads, probe_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    fused_ops = _aten_ops(lambda: grounding(audio, mask, visual, grid=grid))
    probe_ops = _aten_ops(lambda: grounding(audio, mask, visual, grid=grid, need_weights=True))
    assert "aten::scaled_dot_product_attention" in fused_ops
    assert "aten::scaled_dot_product_attention" not in probe_ops
    assert "aten::_softmax" in probe_ops and "aten::_softmax" not in fused_ops


def test_info_nce_value_matches_symmetric_cross_entropy() -> None:
    nce = InfoNCE(temperature=0.1)
    q, k = torch.randn(5, 4), torch.randn(5, 4)
    logits = 10.0 * F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T
    target = torch.arange(5)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(nce(q, k), expected)


def test_info_nce_rewards_aligned_pairs() -> None:
    nce = InfoNCE(temperature=0.07)
    q = torch.randn(8, 16)
    aligned = nce(q, q.clone())
    shuffled = nce(q, q.roll(1, dims=0))
    assert aligned.item() < 0.1 < math.log(8) < shuffled.item()


def test_alignment_loss_averages_over_k_and_both_targets() -> None:
    align = AlignmentLoss(d_g=6, d_audio=4, d_visual=5, align_dim=3, temperature=0.07)
    g, a, v = torch.randn(4, 2, 6), torch.randn(4, 4), torch.randn(4, 5)
    g_s, a_s, v_s = align.project(g, a, v)
    expected = sum(align.nce(g_s[:, i], a_s) + align.nce(g_s[:, i], v_s) for i in range(2)) / 4
    torch.testing.assert_close(align(g, a, v), expected)


def test_time_vfr_reconstructs_per_segment_and_its_loss_stops_gradients_into_g() -> None:
    vfr = VisualFeatureReconstructor(d_audio=4, hidden=8, d_g=6, k=4, pool="time")
    audio = torch.randn(2, 8, 4)
    mask = torch.ones(2, 8, dtype=torch.bool)
    g_hat = vfr(audio, mask)
    assert g_hat.shape == (2, 4, 6)
    assert set(vfr.state_dict()) == {f"mlp.{i}.{p}" for i in (0, 1, 3) for p in ("weight", "bias")}
    # segment k depends only on the frames of segment k
    changed = audio.clone()
    changed[:, :2] += 1.0
    moved = (vfr(changed, mask) - g_hat).abs().sum(dim=(0, 2))
    assert moved[0] > 0 and torch.all(moved[1:] == 0)
    g = torch.randn(2, 4, 6, requires_grad=True)
    for reduction in ("sum", "mean"):
        vfr_loss(g_hat, g, reduction).backward(retain_graph=True)
        assert g.grad is None
        torch.testing.assert_close(vfr_loss(g, g, reduction), torch.tensor(0.0))
