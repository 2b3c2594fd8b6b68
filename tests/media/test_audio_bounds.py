"""Bounded decoding (issue 26, item 4): a small file that describes a lot of audio is refused
from its header, or decoded in blocks whose memory does not grow with the file's channels and
rate. Memory is the peak of the process's traced allocations (numpy's buffers are traced)."""

from __future__ import annotations

import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
from media_helpers import write_silent_flac

from multi2cap.media.audio import (
    BLOCK_SAMPLES,
    MAX_SAMPLE_RATE,
    SAMPLE_RATE,
    DecodeLimits,
    decode_audio,
    load_audio,
)
from multi2cap.media.errors import AudioTooLargeError

MB = 1 << 20
# the server's defaults (serve/limits.py): 600 s, 600 s of 96 kHz stereo to decode
SERVER = DecodeLimits(max_duration_s=600.0, max_input_samples=115_200_000)


def peak_bytes(call: Callable[[], Any]) -> tuple[Any, int]:
    """(what `call` returned or raised, the peak of memory traced while it ran)."""
    tracemalloc.start()
    try:
        try:
            result: Any = call()
        except Exception as err:  # the refusals under test
            result = err
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The review's upload: 1 MB of FLAC, 595 s of 192 kHz x 8 channels of silence."""
    return write_silent_flac(tmp_path_factory.mktemp("a") / "bomb.flac", 192_000, 8, 595.0)


def test_the_review_file_is_refused_from_its_header_before_decoding(attack: Path) -> None:
    assert attack.stat().st_size < 1.1 * MB
    refused, peak = peak_bytes(lambda: load_audio(attack, limits=SERVER))
    assert isinstance(refused, AudioTooLargeError), refused
    assert "913.9 M samples to decode (192000 Hz x 8 channels x 595.0 s" in str(refused)
    assert peak < BLOCK_SAMPLES  # not one block decoded (the full decode: 3.6 GB)
    too_long = DecodeLimits(max_duration_s=60.0)
    with pytest.raises(AudioTooLargeError, match=r"longer than the 60-s limit \(595.0 s"):
        load_audio(attack, limits=too_long)


def test_a_rate_beyond_any_real_format_is_refused_by_default(tmp_path: Path) -> None:
    path = write_silent_flac(tmp_path / "fast.flac", 655_350, 1, 2.0)
    with pytest.raises(AudioTooLargeError, match=r"fast\.flac: sample rate 655350 Hz is above"):
        load_audio(path)
    with pytest.raises(AudioTooLargeError, match=f"the {MAX_SAMPLE_RATE} Hz accepted"):
        decode_audio(path)
    assert load_audio(path, limits=DecodeLimits(max_sample_rate=None)).shape == (32_000,)


@pytest.mark.parametrize("suffix", [".flac", ".mkv"])  # libsndfile, PyAV (FLAC in any name)
def test_memory_holds_the_output_and_a_block_not_the_file(tmp_path: Path, suffix: str) -> None:
    """20 s of 192 kHz x 8 channels is 123 MB as float32; the 16-kHz mono output 1.3 MB."""
    path = write_silent_flac(tmp_path / f"wide{suffix}", 192_000, 8, 20.0)
    wave, peak = peak_bytes(lambda: load_audio(path))
    assert wave.shape == (20 * SAMPLE_RATE,) and not wave.any()
    assert peak < 3 * wave.nbytes + 4 * BLOCK_SAMPLES * 4, f"{peak / MB:.1f} MB"


@pytest.mark.parametrize(("suffix", "declared_s"), [(".flac", 0.0), (".mkv", 0.0), (".mkv", 1.0)])
def test_a_header_that_lies_is_caught_while_decoding(
    tmp_path: Path, suffix: str, declared_s: float
) -> None:
    """120 s whose header gives no length (0) or 1 s: decoding stops at the limit, in bounded
    memory. (libsndfile reads no further than a header's length, so a FLAC that claims 1 s
    decodes as 1 s there: only FFmpeg meets the lie.)"""
    path = write_silent_flac(tmp_path / f"liar{suffix}", 192_000, 8, 120.0, declared_s=declared_s)
    limits = DecodeLimits(max_duration_s=30.0)
    refused, peak = peak_bytes(lambda: load_audio(path, limits=limits))
    assert isinstance(refused, AudioTooLargeError), refused
    assert "longer than the 30-s limit (decoding stopped there)" in str(refused)
    assert peak < 8 * MB, f"{peak / MB:.1f} MB"
    with pytest.raises(AudioTooLargeError, match=r"M samples to decode .*decoding stopped"):
        load_audio(path, limits=DecodeLimits(max_input_samples=10_000_000))


def test_eight_channels_through_pyav(tmp_path: Path) -> None:
    """A 7.1 file read by FFmpeg (PyAV 18 crashed the process converting 8-channel planar
    frames to arrays: one such upload killed the server)."""
    ramp = (np.arange(4800 * 8).reshape(4800, 8) % 97 / 97 - 0.5).astype(np.float32)
    flac = tmp_path / "surround.flac"
    sf.write(flac, ramp, 48_000, subtype="PCM_24")
    samples, rate = decode_audio(shutil.copyfile(flac, tmp_path / "surround.mkv"))
    assert rate == 48_000
    np.testing.assert_allclose(samples, ramp.T, atol=1e-6)


@pytest.mark.parametrize("suffix", [".flac", ".mkv"])
def test_blocks_give_the_samples_of_a_whole_file_decode(tmp_path: Path, suffix: str) -> None:
    """Several blocks of 3 channels at 48 kHz: the same samples as mixing the whole file down
    and resampling it in one call, and a window starting inside a block."""
    rng = np.random.default_rng(0)
    channels = rng.uniform(-0.5, 0.5, (3 * 48_000 * 2, 3)).astype(np.float32)
    assert channels.size > 2 * BLOCK_SAMPLES
    flac = tmp_path / "noise.flac"
    sf.write(flac, channels, 48_000, subtype="PCM_24")
    path = flac if suffix == ".flac" else shutil.copyfile(flac, tmp_path / "noise.mkv")
    pcm = sf.read(flac, dtype="float32")[0]
    whole = soxr.resample(pcm.mean(axis=1, dtype=np.float32), 48_000, SAMPLE_RATE, quality="HQ")
    np.testing.assert_array_equal(load_audio(path), whole)
    window = soxr.resample(
        pcm[12_345 : 12_345 + 100_000].mean(axis=1, dtype=np.float32), 48_000, SAMPLE_RATE,
        quality="HQ",
    )  # fmt: skip
    got = load_audio(path, start_s=12_345 / 48_000, duration_s=100_000 / 48_000)
    np.testing.assert_allclose(got, window, atol=1e-6)
    samples, rate = decode_audio(path)
    assert rate == 48_000 and samples.shape == (3, pcm.shape[0])
    np.testing.assert_array_equal(samples, pcm.T)
