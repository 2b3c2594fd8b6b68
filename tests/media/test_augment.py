"""The four augmentations and the composer: properties, not shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multi2cap.media.augment import (
    AddWhiteNoise,
    PolarityFlip,
    RandomAugment,
    TimeShift,
    TimeStretch,
)

SR = 16000


def sine(freq: float = 1000.0, seconds: float = 1.0, batch: int = 1) -> torch.Tensor:
    t = torch.arange(round(SR * seconds), dtype=torch.float64) / SR
    return (0.5 * torch.sin(2 * torch.pi * freq * t)).float().repeat(batch, 1)


def peak_hz(wave: torch.Tensor) -> float:
    x = wave.double().numpy()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), n=8 * x.size))
    return float(np.argmax(spectrum) * SR / (8 * x.size))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_white_noise_hits_drawn_snr_exactly() -> None:
    waves = torch.randn(6, 8000, generator=gen(0)) * torch.linspace(0.01, 1, 6).unsqueeze(1)
    out = AddWhiteNoise(snr_db=(20.0, 20.0))(waves, gen(1))
    noise = out - waves
    snr = 10 * torch.log10(waves.double().square().mean(1) / noise.double().square().mean(1))
    torch.testing.assert_close(snr, torch.full((6,), 20.0, dtype=torch.float64), atol=1e-3, rtol=0)
    assert abs(float(noise[0].mean())) < 0.1 * float(noise[0].std())  # zero-mean, white


def test_white_noise_snr_stays_in_range_and_varies() -> None:
    waves = sine(batch=16)
    out = AddWhiteNoise(snr_db=(5.0, 15.0))(waves, gen(2))
    noise = out - waves
    snr = 10 * torch.log10(waves.double().square().mean(1) / noise.double().square().mean(1))
    assert bool(((snr > 5.0 - 1e-3) & (snr < 15.0 + 1e-3)).all())
    assert float(snr.std()) > 1.0  # drawn per example
    silent = torch.zeros(2, 100)
    assert torch.equal(AddWhiteNoise()(silent, gen(3)), silent)


@pytest.mark.parametrize("mode", ["roll", "pad"])
def test_time_shift_moves_samples_exactly(mode: str) -> None:
    waves = torch.arange(1, 4 * 50 + 1, dtype=torch.float32).reshape(4, 50)
    shift = TimeShift(max_fraction=0.3, mode=mode)  # type: ignore[arg-type]
    shifts = shift.shifts(4, 50, gen(5))
    out = shift(waves, gen(5))
    assert shifts.abs().max() <= 15 and len(set(shifts.tolist())) > 1
    for row, k in zip(range(4), shifts.tolist(), strict=True):
        expected = torch.roll(waves[row], k)
        if mode == "pad":
            if k > 0:
                expected[:k] = 0
            elif k < 0:
                expected[k:] = 0
        assert torch.equal(out[row], expected)


def test_time_stretch_keeps_pitch_and_scales_length() -> None:
    wave = sine(1000.0, seconds=1.0)
    out = TimeStretch(factor=(1.2, 1.2), keep_length=False)(wave, gen(0))
    assert out.shape[-1] == pytest.approx(1.2 * SR, rel=0.01)
    assert peak_hz(out[0, 1000:-1000]) == pytest.approx(1000.0, rel=0.01)
    rms_in, rms_out = wave.square().mean().sqrt(), out[0, 1000:-1000].square().mean().sqrt()
    assert float(rms_out) == pytest.approx(float(rms_in), rel=0.03)  # phase-locked: no loss


def test_time_stretch_speed_up_keeps_pitch() -> None:
    out = TimeStretch(factor=(0.8, 0.8), keep_length=False)(sine(440.0), gen(0))
    assert out.shape[-1] == pytest.approx(0.8 * SR, rel=0.01)
    assert peak_hz(out[0, 1000:-1000]) == pytest.approx(440.0, rel=0.01)


def test_time_stretch_slows_down_a_real_event() -> None:
    # A click train: stretching by 1.25 must move the second click from 0.4 s to 0.5 s.
    wave = torch.zeros(1, SR)
    for at in (1600, 6400):
        wave[0, at : at + 80] = torch.hann_window(80) * torch.sin(torch.arange(80) * 1.3)
    out = TimeStretch(factor=(1.25, 1.25))(wave, gen(0))
    assert out.shape == wave.shape  # keep_length: cropped back
    envelope = out[0].abs()
    late = int(torch.argmax(envelope[4000:])) + 4000
    assert late == pytest.approx(6400 * 1.25, abs=400)


def test_time_stretch_keep_length_pads_sped_up_clips() -> None:
    waves = sine(batch=3)
    out = TimeStretch(factor=(0.8, 0.9))(waves, gen(4))
    assert out.shape == waves.shape
    assert float(out[:, -int(0.1 * SR) + 200 :].abs().max()) == 0.0  # zero-padded tail


def test_polarity_flip_is_exact_negation() -> None:
    waves = torch.randn(3, 100, generator=gen(0))
    assert torch.equal(PolarityFlip()(waves), -waves)


def test_random_augment_is_seedable_and_random() -> None:
    waves = torch.randn(8, 4000, generator=gen(0)) * 0.3
    aug = RandomAugment()
    a = aug(waves, gen(123))
    b = aug(waves, gen(123))
    c = aug(waves, gen(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == waves.shape


def test_random_augment_probabilities_and_order() -> None:
    waves = torch.randn(4, 1000, generator=gen(0))
    assert torch.equal(RandomAugment(probabilities=0.0)(waves, gen(1)), waves)
    flip_all = RandomAugment([PolarityFlip()], probabilities=1.0)
    assert torch.equal(flip_all(waves, gen(1)), -waves)
    # Order matters for non-commuting transforms; over seeds both orders must occur.
    shift = TimeShift(max_fraction=0.5, mode="pad")
    double = RandomAugment([shift, PolarityFlip()], probabilities=1.0)
    orders = {tuple(double.plan(4, gen(s))[0]) for s in range(20)}
    assert orders == {(0, 1), (1, 0)}
    # Per-example selection: p=0.5 over 64 examples touches some, not all.
    selected = RandomAugment([PolarityFlip()], probabilities=0.5).plan(64, gen(7))[1]
    assert 10 < int(selected.sum()) < 54
    flipped = RandomAugment([PolarityFlip()], probabilities=0.5)(torch.ones(64, 3), gen(7))
    assert torch.equal(flipped[:, 0] < 0, selected[0])


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="snr_db"):
        AddWhiteNoise(snr_db=(30.0, 10.0))
    with pytest.raises(ValueError, match="max_fraction"):
        TimeShift(max_fraction=1.5)
    with pytest.raises(ValueError, match="2 probabilities for 4"):
        RandomAugment(probabilities=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"\(B, n\)"):
        TimeShift()(torch.zeros(1, 1, 1))


def test_time_stretch_apply_reports_valid_lengths_of_the_stretched_part() -> None:
    waves = sine(batch=3)
    lengths = torch.tensor([SR, SR, SR // 2])  # the last row: half a second, then padding
    waves[2, SR // 2 :] = 0.0
    out, valid = TimeStretch(factor=(0.8, 0.8)).apply(waves, lengths, gen(0))
    assert out.shape == waves.shape
    assert valid.tolist() == [round(0.8 * SR), round(0.8 * SR), round(0.4 * SR)]
    for row, n in enumerate(valid.tolist()):
        assert float(out[row, n:].abs().max()) == 0.0
        assert float(out[row, n - 400 : n].abs().max()) > 0.1  # audio up to the valid end
    # the padded row's half second was stretched, not the whole padded row
    assert peak_hz(out[2, : valid[2]]) == pytest.approx(1000.0, abs=10.0)
    slowed, grown = TimeStretch(factor=(1.25, 1.25)).apply(waves[2:], lengths[2:], gen(0))
    assert grown.tolist() == [round(0.625 * SR)]  # grows into the padding, within the row
    assert float(slowed[0, grown[0] :].abs().max()) == 0.0
    assert torch.equal(TimeStretch(factor=(0.8, 0.8))(waves[:2], gen(0)), out[:2])


def test_random_augment_apply_keeps_the_padding_out_of_the_audio() -> None:
    """Stretch (speed-up) then noise and shift: the padding the speed-up left stays zero and
    is reported as padding, and the other transforms work on the valid part only."""
    composer = RandomAugment(
        [TimeStretch(factor=(0.8, 0.8)), AddWhiteNoise(snr_db=(20.0, 20.0)), TimeShift(0.2)],
        1.0,
    )
    waves = sine(batch=2)
    for seed in range(4):
        out, valid = composer.apply(waves, None, gen(seed))
        assert valid.tolist() == [round(0.8 * SR)] * 2
        assert float(out[:, round(0.8 * SR) :].abs().max()) == 0.0
    out, valid = composer.apply(waves, torch.tensor([SR, SR // 2]), gen(1))
    assert valid.tolist() == [round(0.8 * SR), round(0.4 * SR)]
    assert float(out[1, round(0.4 * SR) :].abs().max()) == 0.0
    # the plain call is the same draw, without the lengths
    assert torch.equal(composer(waves, gen(3)), composer.apply(waves, None, gen(3))[0])
