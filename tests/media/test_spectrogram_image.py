"""spectrogram_image: orientation, colour scale, axes, settings."""

from __future__ import annotations

import numpy as np
import pytest

from multi2cap.media.audio import load_audio
from multi2cap.media.spectrogram_image import (
    SpectrogramImageSettings,
    colormap_table,
    spectrogram_image,
)

SR = 16000


def tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(round(SR * seconds)) / SR)).astype(np.float32)


def brightest_row(image) -> int:
    luminance = np.asarray(image.convert("L"), dtype=np.float64)
    return int(np.argmax(luminance.mean(axis=1)))


def test_size_mode_and_low_frequencies_at_bottom() -> None:
    settings = SpectrogramImageSettings(width=200, height=100)
    low = spectrogram_image(tone(300), SR, settings)
    high = spectrogram_image(tone(6000), SR, settings)
    assert low.size == (200, 100) and low.mode == "RGB"
    assert brightest_row(low) > 80  # near the bottom
    assert brightest_row(high) < 20  # near the top


def test_linear_axis_places_tone_proportionally() -> None:
    settings = SpectrogramImageSettings(width=50, height=101, frequency_axis="linear")
    row = brightest_row(spectrogram_image(tone(4000), SR, settings))
    assert row == pytest.approx(50, abs=2)  # 4 kHz is half of the 8 kHz Nyquist
    mel = SpectrogramImageSettings(width=50, height=101)
    # on the mel axis 4 kHz sits above the middle (mel compresses high frequencies)
    assert brightest_row(spectrogram_image(tone(4000), SR, mel)) < 40


def test_colour_scale_endpoints() -> None:
    table = colormap_table("magma")
    assert table.shape == (256, 3) and table.dtype == np.uint8
    settings = SpectrogramImageSettings(width=64, height=32, db_range=60.0)
    silent = np.asarray(spectrogram_image(np.zeros(SR, np.float32), SR, settings))
    assert (silent == table[0]).all()  # digital silence is the darkest colour, not the brightest
    native = SpectrogramImageSettings(width=101, height=128, db_range=60.0)  # no resampling
    loud = np.asarray(spectrogram_image(tone(1000), SR, native)).reshape(-1, 3)
    assert (loud == table[255]).all(axis=1).any()  # the peak gets the top colour
    assert (loud == table[0]).all(axis=1).any()  # cells 60 dB down get the bottom one


def test_other_colormap_and_real_clip(tuxpaint_dir) -> None:
    wave = load_audio(tuxpaint_dir / "animals" / "mammals" / "dogs" / "dog.ogg")
    image = spectrogram_image(wave, SR, SpectrogramImageSettings(colormap="gray"))
    pixels = np.asarray(image)
    assert (pixels[..., 0] == pixels[..., 1]).all()  # grey map: R == G == B
    assert pixels.std() > 10  # a real bark has structure


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown matplotlib colormap"):
        spectrogram_image(tone(100), SR, SpectrogramImageSettings(colormap="nope"))
    with pytest.raises(ValueError, match="frequency_axis"):
        SpectrogramImageSettings(frequency_axis="bark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        spectrogram_image(np.array([np.nan] * 1000), SR)
    with pytest.raises(ValueError, match="mono"):
        spectrogram_image(np.zeros((2, 100)), SR)
    assert spectrogram_image(np.ones(10, np.float32), SR).size == (800, 400)  # tiny input
