"""load_audio / resample: formats, channel mixing, anti-aliasing and every bad input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from media_helpers import write_audio_container

from multi2cap.media.audio import SAMPLE_RATE, decode_audio, load_audio, resample
from multi2cap.media.errors import (
    AudioDecodeError,
    EmptyMediaError,
    InvalidSamplesError,
    MediaError,
    MediaNotFoundError,
    NoAudioStreamError,
)


def tone(freq: float, sr: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(sr * seconds)) / sr)).astype(np.float32)


def peak_hz(wave: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * sr / wave.size)


@pytest.mark.parametrize(
    ("suffix", "subtype"),
    [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS"), (".mp3", "MPEG_LAYER_III")],
)
def test_soundfile_formats_to_mono_16k(tmp_path: Path, suffix: str, subtype: str) -> None:
    path = tmp_path / f"tone{suffix}"
    sf.write(path, tone(440, 44100), 44100, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - SAMPLE_RATE) <= 0.06 * SAMPLE_RATE  # mp3 adds encoder delay
    assert peak_hz(wave) == pytest.approx(440, abs=2)
    assert np.sqrt(np.mean(wave[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("suffix", [".m4a", ".mp4", ".mkv", ".webm"])
def test_container_formats_via_pyav(tmp_path: Path, suffix: str) -> None:
    path = write_audio_container(tmp_path / f"tone{suffix}", tone(440, 48000), 48000)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - SAMPLE_RATE) <= 0.05 * SAMPLE_RATE
    assert peak_hz(wave) == pytest.approx(440, abs=2)
    assert np.sqrt(np.mean(wave[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.2)


def test_real_ogg_clip(tuxpaint_dir: Path) -> None:
    path = tuxpaint_dir / "animals" / "mammals" / "dogs" / "dog.ogg"
    info = sf.info(str(path))
    native, sr = decode_audio(path)
    assert native.shape == (info.channels, info.frames) and sr == info.samplerate
    wave = load_audio(path)
    assert wave.size == pytest.approx(info.duration * SAMPLE_RATE, abs=2)
    np.testing.assert_allclose(wave, resample(native.mean(axis=0), sr, SAMPLE_RATE), atol=1e-6)
    assert 0.01 < np.abs(wave).max() < 1.1  # clipped source: the low-pass may overshoot a bit


def test_six_channel_48k_is_mean_downmixed(tmp_path: Path) -> None:
    channels = np.stack([tone(300 + 100 * c, 48000, amp=0.1) for c in range(6)], axis=1)
    path = tmp_path / "surround.wav"
    sf.write(path, channels, 48000, subtype="FLOAT")
    wave = load_audio(path)
    expected = resample(channels.mean(axis=1), 48000, SAMPLE_RATE)
    assert wave.shape == (SAMPLE_RATE,)
    np.testing.assert_allclose(wave, expected, atol=1e-6)


def test_real_six_channel_aac_track(bigbuckbunny: Path) -> None:
    samples, sr = decode_audio(bigbuckbunny)
    assert samples.shape[0] == 6 and sr == 48000
    wave = load_audio(bigbuckbunny)
    assert wave.size == pytest.approx(samples.shape[1] / 3, abs=1)
    np.testing.assert_allclose(wave, resample(samples.mean(axis=0), 48000, 16000), atol=1e-6)


def test_8bit_pcm(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    sf.write(path, tone(1000, 8000, amp=0.8), 8000, subtype="PCM_U8")
    assert sf.info(str(path)).subtype == "PCM_U8"
    wave = load_audio(path)
    assert wave.size == 2 * 8000
    assert peak_hz(wave) == pytest.approx(1000, abs=2)
    assert np.abs(wave).max() == pytest.approx(0.8, abs=0.03)


def test_window_selects_the_right_samples(tmp_path: Path) -> None:
    ramp = (np.arange(48000) / 48000).astype(np.float32)
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, 16000, subtype="FLOAT")
    part = load_audio(path, start_s=1.0, duration_s=0.5)
    np.testing.assert_array_equal(part, ramp[16000:24000])
    assert load_audio(path, start_s=2.5, duration_s=10).size == 8000  # stops at the end


def test_resample_is_anti_aliased() -> None:
    sr = 48000
    passband = resample(tone(5000, sr), sr, SAMPLE_RATE)
    assert peak_hz(passband) == pytest.approx(5000, abs=2)
    assert np.sqrt(np.mean(passband[500:-500] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    # Above the 8 kHz Nyquist: naive decimation would alias 12 kHz to 4 kHz and 8.5 kHz to
    # 7.5 kHz at full level; the filter must remove both (> 100 dB down).
    for freq in (12000, 8500):
        stopband = resample(tone(freq, sr), sr, SAMPLE_RATE)
        assert stopband.size == SAMPLE_RATE
        assert np.sqrt(np.mean(stopband[500:-500] ** 2)) < 0.5 * 10 ** (-100 / 20)
    # 7 kHz (87 % of Nyquist) passes within 0.1 dB
    edge = resample(tone(7000, sr), sr, SAMPLE_RATE)
    level_db = 20 * np.log10(np.sqrt(np.mean(edge[500:-500] ** 2)) / (0.5 / np.sqrt(2)))
    assert abs(level_db) < 0.1


def test_resample_44100_length_delay_and_identity() -> None:
    assert resample(np.zeros(44100), 44100, 16000).size == 16000
    click = np.zeros(44100, np.float32)
    click[22050] = 1.0  # at 0.5 s: must stay at 0.5 s (no filter delay)
    assert int(np.argmax(resample(click, 44100, 16000))) == 8000
    stereo = np.stack([tone(440, 44100), tone(880, 44100)])
    both = resample(stereo, 44100, 16000)
    assert both.shape == (2, 16000)
    np.testing.assert_allclose(both[1], resample(stereo[1], 44100, 16000), atol=1e-6)
    same = np.arange(10, dtype=np.float32)
    assert resample(same, 16000, 16000) is same
    with pytest.raises(ValueError, match="positive"):
        resample(same, 0, 16000)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaNotFoundError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")
    assert issubclass(MediaNotFoundError, FileNotFoundError)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(EmptyMediaError, match=r"empty\.wav: file is empty"):
        load_audio(path)


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioDecodeError, match=r"notes\.wav: not a readable audio file") as err:
        load_audio(path)
    assert err.value.path == path
    assert isinstance(err.value, MediaError)


def test_zero_sample_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(EmptyMediaError, match="zero audio samples"):
        load_audio(path)


def test_nan_samples_rejected_or_zeroed(tmp_path: Path) -> None:
    wave = tone(440, 16000)
    wave[100:110] = np.nan
    wave[200] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    with pytest.raises(InvalidSamplesError, match=r"nan\.wav: 11 of 16000 samples are NaN"):
        load_audio(path)
    cleaned = load_audio(path, nonfinite="zero")
    assert np.isfinite(cleaned).all()
    assert (cleaned[100:110] == 0).all() and cleaned[200] == 0
    np.testing.assert_array_equal(cleaned[:100], wave[:100])


def test_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=2)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(NoAudioStreamError, match=r"silent_film\.mp4: container has no audio"):
        load_audio(path)


def test_errors_pickle_for_worker_processes(tmp_path: Path) -> None:
    import pickle

    err = pickle.loads(pickle.dumps(AudioDecodeError(tmp_path / "x.wav", "broken")))
    assert isinstance(err, AudioDecodeError) and str(err).endswith("x.wav: broken")
