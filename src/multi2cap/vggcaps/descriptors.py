"""Measured audio and image descriptors behind the `offline` backend's template captions.

These are plain signal statistics (no model): a loudness envelope, onset times, the spectral
centroid, and the frame's brightness and dominant colour. They make offline captions differ from
clip to clip in ways that follow the media, which is what a demo pre-training run needs.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image

FRAME_S = 0.05  # envelope frame length in seconds (50 ms)
SILENCE_DBFS = -60.0


@dataclass(frozen=True)
class AudioDescriptors:
    """Summary of one clip's audio.

    `rms_dbfs`: mean loudness (dB re full scale) over non-silent frames; `peak_dbfs`;
    `variation`: std of the envelope in dB over non-silent frames (steadiness);
    `onsets_s`: onset times in seconds; `centroid_hz`: energy-weighted mean spectral centroid;
    `trend_db`: loudness of the last third minus the first third (rising/fading);
    `active_fraction`: share of 50-ms frames above -60 dBFS.
    """

    duration_s: float
    rms_dbfs: float
    peak_dbfs: float
    variation: float
    onsets_s: tuple[float, ...]
    centroid_hz: float
    trend_db: float
    active_fraction: float


def loudness_envelope(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level in dBFS per 50-ms frame, shape (n_frames,), floored at -100 dB."""
    hop = max(1, round(FRAME_S * sample_rate))
    n_frames = max(1, len(wave) // hop)
    frames = np.asarray(wave[: n_frames * hop], dtype=np.float64)
    if frames.size < n_frames * hop:
        frames = np.pad(frames, (0, n_frames * hop - frames.size))
    rms = np.sqrt(np.mean(frames.reshape(n_frames, hop) ** 2, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-5))


def detect_onsets(
    envelope_db: np.ndarray, rise_db: float = 9.0, floor_db: float = -45.0
) -> np.ndarray:
    """Frame indices where the level jumps by >= `rise_db` over the previous 100 ms and ends above
    `floor_db`; onsets closer than 150 ms to the previous one are merged."""
    if envelope_db.size < 3:
        return np.zeros(0, dtype=np.int64)
    previous = np.minimum(envelope_db[:-2], envelope_db[1:-1])
    rises = (
        np.flatnonzero((envelope_db[2:] - previous >= rise_db) & (envelope_db[2:] > floor_db)) + 2
    )
    onsets: list[int] = []
    for index in rises:
        if not onsets or index - onsets[-1] >= 3:
            onsets.append(int(index))
    return np.asarray(onsets, dtype=np.int64)


def spectral_centroid(wave: np.ndarray, sample_rate: int, n_fft: int = 1024) -> float:
    """Energy-weighted mean spectral centroid in Hz over 50%-overlapping Hann frames."""
    x = np.asarray(wave, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    hop = n_fft // 2
    n_frames = 1 + (x.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    power = np.abs(np.fft.rfft(x[index] * np.hanning(n_fft), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    energy = power.sum(axis=1)
    if energy.sum() <= 0:
        return 0.0
    centroids = (power @ freqs) / np.maximum(energy, 1e-20)
    return float(np.sum(centroids * energy) / energy.sum())


def describe_audio(wave: np.ndarray, sample_rate: int) -> AudioDescriptors:
    """Measure the descriptors of a mono float waveform (shape (n,), full scale +-1)."""
    envelope = loudness_envelope(wave, sample_rate)
    active = envelope > SILENCE_DBFS
    level = envelope[active] if active.any() else envelope
    thirds = max(1, envelope.size // 3)
    onsets = detect_onsets(envelope) * FRAME_S
    peak = float(np.max(np.abs(wave))) if len(wave) else 0.0
    return AudioDescriptors(
        duration_s=len(wave) / sample_rate,
        rms_dbfs=float(10 * np.log10(np.mean(10 ** (level / 10)))),
        peak_dbfs=float(20 * np.log10(max(peak, 1e-5))),
        variation=float(np.std(level)),
        onsets_s=tuple(round(float(t), 2) for t in onsets),
        centroid_hz=spectral_centroid(wave, sample_rate),
        trend_db=float(np.mean(envelope[-thirds:]) - np.mean(envelope[:thirds])),
        active_fraction=float(np.mean(active)),
    )


@dataclass(frozen=True)
class ImageDescriptors:
    """`brightness` in [0, 1] (mean luma); `saturation` in [0, 1]; `hue_name` of the mean colour."""

    brightness: float
    saturation: float
    hue_name: str


_HUES = (
    (15, "red"),
    (45, "orange"),
    (70, "yellow"),
    (165, "green"),
    (200, "teal"),
    (260, "blue"),
    (300, "purple"),
    (340, "pink"),
    (361, "red"),
)


def describe_image(image: Image.Image) -> ImageDescriptors:
    """Brightness, saturation and dominant hue of a frame (measured on a 64x64 thumbnail)."""
    pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float64) / 255.0
    luma = float(np.mean(pixels @ np.array([0.299, 0.587, 0.114])))
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in pixels.reshape(-1, 3)[::4]])
    weights = hsv[:, 1] * hsv[:, 2] + 1e-9
    angle = np.angle(np.sum(weights * np.exp(2j * np.pi * hsv[:, 0])))
    hue_deg = float(np.degrees(angle) % 360)
    hue_name = next(name for bound, name in _HUES if hue_deg < bound)
    return ImageDescriptors(
        brightness=luma, saturation=float(np.mean(hsv[:, 1])), hue_name=hue_name
    )
