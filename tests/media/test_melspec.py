"""CedLogMel against an independent numpy rendering of the CED front-end formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multi2cap.media.audio import load_audio
from multi2cap.media.melspec import CedLogMel

SR = 16000


def reference_logmel(wave: np.ndarray, top_db: float | None = 120.0) -> np.ndarray:
    """The CED front end from its formulas, float64 numpy, one clip: (64, n // 160 + 1) dB."""
    n_fft, hop, n_mels, f_lo, f_hi = 512, 160, 64, 0.0, 8000.0
    x = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic
    power = np.abs(np.fft.rfft(x[idx] * hann, axis=1)) ** 2  # (T, 257)
    bin_hz = np.arange(n_fft // 2 + 1) * (SR / 2) / (n_fft // 2)

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    edges_mel = np.linspace(mel(f_lo), mel(f_hi), n_mels + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(bin_hz):
            if lo < f <= mid:
                fb[k, m] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                fb[k, m] = (hi - f) / (hi - mid)
    db = 10.0 * np.log10(np.maximum(power @ fb, 1e-10)).T
    if top_db is not None:
        db = np.maximum(db, db.max() - top_db)
    return db


@pytest.fixture(scope="module")
def frontend() -> CedLogMel:
    return CedLogMel()


def test_matches_numpy_reference_on_generated_signals(frontend: CedLogMel) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    waves = np.stack(
        [
            0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(SR),
            0.2 * rng.standard_normal(SR),
            np.sign(np.sin(2 * np.pi * 97 * t)) * 0.5 * np.exp(-3 * t),
        ]
    ).astype(np.float32)
    ours64 = frontend(torch.from_numpy(waves).double()).numpy()
    ours32 = frontend(torch.from_numpy(waves)).numpy()
    assert ours32.dtype == np.float32
    for i, wave in enumerate(waves):
        expected = reference_logmel(wave)
        np.testing.assert_allclose(ours64[i], expected, atol=1e-4, rtol=0)
        # float32 arithmetic: a handful of low-energy cells drift by ~1e-4 dB.
        np.testing.assert_allclose(ours32[i], expected, atol=5e-4, rtol=0)


def test_matches_numpy_reference_on_real_clip(frontend: CedLogMel, tuxpaint_dir) -> None:
    wave = load_audio(tuxpaint_dir / "animals" / "mammals" / "dogs" / "dog.ogg")
    expected = reference_logmel(wave)
    np.testing.assert_allclose(
        frontend(torch.from_numpy(wave).double()).numpy(), expected, atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(frontend(torch.from_numpy(wave)).numpy(), expected, atol=5e-4)


def test_top_db_floor_matches_reference_on_quiet_tail(frontend: CedLogMel) -> None:
    wave = np.zeros(8000)
    wave[:2000] = np.sin(2 * np.pi * 300 * np.arange(2000) / SR)
    ours = frontend(torch.from_numpy(wave)).numpy()
    expected = reference_logmel(wave)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    assert ours.min() == pytest.approx(ours.max() - 120.0, abs=1e-6)  # the floor is reached


@pytest.mark.parametrize("n_samples", [257, 1600, 16000, 16159, 160000])
def test_frame_count(frontend: CedLogMel, n_samples: int) -> None:
    out = frontend(torch.zeros(2, n_samples))
    assert out.shape == (2, 64, n_samples // 160 + 1)
    assert frontend.n_frames(n_samples) == n_samples // 160 + 1


def test_sine_peaks_in_expected_mel_bin(frontend: CedLogMel) -> None:
    # Filter centres sit at m * mel(8000) / 65 (m = 1..64); 1000 Hz = 1000.0 mel is closest to
    # the 23rd edge (1004.6 mel), i.e. filter index 22.
    t = np.arange(SR) / SR
    out = frontend(torch.from_numpy(0.5 * np.sin(2 * np.pi * 1000.0 * t)).float())
    assert out.shape == (64, 101)
    inner = out[:, 2:99]  # frames whose 512-sample window lies inside the signal (no padding)
    assert set(inner.argmax(dim=0).tolist()) == {22}


def test_batched_equals_one_by_one_per_example_floor(frontend: CedLogMel) -> None:
    gen = torch.Generator().manual_seed(0)
    loud = torch.randn(1, 4000, generator=gen)
    quiet = torch.zeros(1, 4000)
    quiet[0, :100] = 1e-4 * torch.randn(100, generator=gen)
    batch = frontend(torch.cat([loud, quiet]))
    torch.testing.assert_close(batch[0], frontend(loud)[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(batch[1], frontend(quiet)[0], rtol=0, atol=1e-5)


def test_batch_scope_floors_over_whole_batch() -> None:
    frontend = CedLogMel(top_db_scope="batch")
    gen = torch.Generator().manual_seed(1)
    waves = torch.cat([torch.randn(1, 4000, generator=gen), torch.zeros(1, 4000)])
    out = frontend(waves)
    floor = out[0].max() - 120.0
    assert torch.allclose(out[1], torch.full_like(out[1], float(floor)))
    assert CedLogMel()(waves)[1].max().item() == pytest.approx(-100.0)  # 10*log10(1e-10)


def test_rejects_too_short_and_bad_rank(frontend: CedLogMel) -> None:
    with pytest.raises(ValueError, match="256"):
        frontend(torch.zeros(2, 256))
    with pytest.raises(ValueError, match="expected"):
        frontend(torch.zeros(1, 2, 1000))
