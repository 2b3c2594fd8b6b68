"""Render a waveform as a coloured spectrogram picture (the image the VggCaps builder shows the
vision LLM in stage 1). numpy only: STFT, optional mel filterbank, dB, a matplotlib colormap
applied as a 256-entry lookup table; no figure is rendered, so one 10-s clip takes milliseconds.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import scipy.fft
from PIL import Image

from multi2cap.media.filterbank import mel_filterbank

_AMIN = 1e-10
_FLOOR_DB = 10.0 * np.log10(_AMIN)


FrequencyAxis = Literal["mel", "linear"]


@dataclass(frozen=True)
class SpectrogramImageSettings:
    """How the picture looks.

    `width`/`height` in pixels (time runs left to right, low frequencies at the bottom);
    `colormap` any matplotlib colormap name; `frequency_axis` `"mel"` (`n_mels` HTK-mel bands)
    or `"linear"` (FFT bins); the top `db_range` dB below the clip's peak span the colour scale
    (quieter cells get the darkest colour); `f_max` in Hz, None for the Nyquist frequency.
    """

    width: int = 800
    height: int = 400
    colormap: str = "magma"
    frequency_axis: FrequencyAxis = "mel"
    db_range: float = 80.0
    n_fft: int = 1024
    hop_length: int = 160
    n_mels: int = 128
    f_max: float | None = None

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.frequency_axis not in ("mel", "linear"):
            raise ValueError(
                f"frequency_axis must be 'mel' or 'linear', not {self.frequency_axis!r}"
            )
        if self.db_range <= 0:
            raise ValueError(f"db_range must be positive, got {self.db_range}")
        colormap_table(self.colormap)  # an unknown name fails here, not at every clip's render


@lru_cache(maxsize=16)
def colormap_table(name: str) -> np.ndarray:
    """`(256, 3)` uint8 RGB lookup table of a matplotlib colormap."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"unknown matplotlib colormap {name!r}; {hint}any name of matplotlib.colormaps "
            "works, e.g. magma, viridis, gray"
        ) from None
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


def _power_spectrogram(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """`(n_fft // 2 + 1, frames)` float32 power, centred frames, reflect padding (zero padding
    when the input is too short to reflect)."""
    pad_mode = "reflect" if wave.size > n_fft // 2 else "constant"
    padded = np.pad(wave.astype(np.float32), n_fft // 2, mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    spectrum = scipy.fft.rfft(frames * window, axis=1)  # complex64 for float32 input
    return (spectrum.real**2 + spectrum.imag**2).T


def spectrogram_image(
    wave: np.ndarray, sample_rate: int, settings: SpectrogramImageSettings | None = None
) -> Image.Image:
    """Render a mono waveform `(n,)` as an RGB `settings.width x settings.height` PIL image."""
    settings = settings or SpectrogramImageSettings()
    wave = np.asarray(wave)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"expected a non-empty mono waveform (n,), got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise ValueError("waveform holds NaN or infinite samples")
    power = _power_spectrogram(wave, settings.n_fft, settings.hop_length)
    f_max = settings.f_max or sample_rate / 2
    if settings.frequency_axis == "mel":
        bank = mel_filterbank(power.shape[0], sample_rate, settings.n_mels, 0.0, f_max)
        power = bank.T.astype(np.float32) @ power
    else:
        power = power[: int(np.floor(f_max / (sample_rate / settings.n_fft))) + 1]
    db = 10.0 * np.log10(np.maximum(power, _AMIN))
    # The scale's top is the clip's peak, but never so low that digital silence (the amin floor)
    # would be stretched over the whole colour range: near-silent clips render dark.
    low = max(float(db.max()), _FLOOR_DB + settings.db_range) - settings.db_range
    levels = np.round((np.clip(db, low, None) - low) / settings.db_range * 255.0)
    rgb = colormap_table(settings.colormap)[levels.astype(np.uint8)[::-1]]  # low freq at bottom
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return image.resize((settings.width, settings.height), Image.Resampling.BILINEAR)
