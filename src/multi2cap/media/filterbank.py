"""HTK mel scale and triangular mel filterbank in numpy (shared by the torch front end and the
spectrogram images, so the filter formula exists once and this module needs no torch)."""

from __future__ import annotations

import numpy as np


def hz_to_mel_htk(freq: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: `2595 * log10(1 + f / 700)`."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, sample_rate: int, n_mels: int, f_min: float, f_max: float
) -> np.ndarray:
    """Triangular HTK-mel filters, `(n_freqs, n_mels)` float64, peak 1, no area normalisation.

    FFT bin `k` sits at `k * (sample_rate / 2) / (n_freqs - 1)` Hz; the `n_mels + 2` filter edges
    are equally spaced on the mel scale between `f_min` and `f_max` (torchaudio's
    `melscale_fbanks(norm=None, mel_scale="htk")` convention, which CED uses).
    """
    freqs = np.linspace(0.0, sample_rate / 2, n_freqs)
    edges = mel_to_hz_htk(np.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2))
    widths = np.diff(edges)  # (n_mels + 1,)
    offsets = edges[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    return np.clip(np.minimum(rising, falling), 0.0, None)
