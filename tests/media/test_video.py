"""extract_clip / probe_media / mux_image_audio_to_mp4 on real and muxed mp4 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_helpers import grey_level, write_audio_container, write_counting_video
from PIL import Image

from multi2cap.media.audio import load_audio
from multi2cap.media.errors import (
    CorruptMediaError,
    EmptyMediaError,
    MediaNotFoundError,
    NoAudioStreamError,
    NoVideoStreamError,
    SegmentOutOfRangeError,
)
from multi2cap.media.video import extract_clip, frame_times, mux_image_audio_to_mp4, probe_media

FPS = 10


@pytest.fixture(scope="module")
def counting_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "counting.mp4"
    return write_counting_video(path, seconds=12.0, fps=FPS, clicks_s=(1.5, 6.25))


@pytest.fixture(scope="module")
def dog_mp4(tmp_path_factory: pytest.TempPathFactory, tuxpaint_dir: Path) -> Path:
    stamp = tuxpaint_dir / "animals" / "mammals" / "dogs" / "dog"
    path = tmp_path_factory.mktemp("video") / "dog.mp4"
    return mux_image_audio_to_mp4(
        Image.open(stamp.with_suffix(".png")), load_audio(stamp.with_suffix(".ogg")), 16000, path
    )


def expected_grey(t: float) -> float:
    return float((8 * int(t * FPS + 1e-9)) % 256)


def test_middle_frame_and_aligned_audio_segment(counting_mp4: Path) -> None:
    clip = extract_clip(counting_mp4, start_s=1.0, duration_s=2.0)
    assert clip.frame_times_s == [2.0]
    assert grey_level(clip.frames[0]) == pytest.approx(expected_grey(2.0), abs=3)
    assert clip.audio.shape == (32000,) and clip.audio.dtype == np.float32
    assert not clip.padded and clip.sample_rate == 16000
    assert clip.duration_s == pytest.approx(12.0, abs=0.05)
    # the click at 1.5 s (32-sample Hann, centre +16) lands 0.5 s into the segment
    assert int(np.argmax(np.abs(clip.audio))) == pytest.approx(8000 + 16, abs=8)


def test_evenly_spaced_frames(counting_mp4: Path) -> None:
    clip = extract_clip(counting_mp4, start_s=0.0, duration_s=2.0, n_frames=4)
    assert clip.frame_times_s == pytest.approx([0.25, 0.75, 1.25, 1.75])
    levels = [grey_level(f) for f in clip.frames]
    for level, t in zip(levels, clip.frame_times_s, strict=True):
        assert level == pytest.approx(expected_grey(t), abs=3)


def test_exact_frames_in_a_long_gop_with_b_frames(tmp_path: Path) -> None:
    path = write_counting_video(tmp_path / "bframes.mp4", seconds=6.0, preset="medium")
    import av
    from av.video.frame import PictureType

    with av.open(str(path)) as container:
        kinds = {PictureType(frame.pict_type) for frame in container.decode(video=0)}
    assert PictureType.B in kinds  # frames that _frame_at may skip on the way to the target
    for start in (0.0, 1.23, 2.5, 3.77, 5.5):
        clip = extract_clip(path, start_s=start, duration_s=0.4)
        t = clip.frame_times_s[0]
        assert grey_level(clip.frames[0]) == pytest.approx(expected_grey(t), abs=3), t


def test_mpegts_with_timestamp_offsets(tmp_path: Path) -> None:
    # FFmpeg's MPEG-TS muxer starts the timeline late and the video later still (no edit lists),
    # and seeks in TS are imprecise: frames and audio must still come from the right times.
    import av

    path = write_counting_video(
        tmp_path / "counting.ts", 12.0, clicks_s=(6.25,), preset="medium", container_format="mpegts"
    )
    with av.open(str(path)) as container:
        origin = container.start_time / 1e6
        video = container.streams.video[0]
        video_delay = float(video.start_time * video.time_base) - origin
    assert origin > 0 and video_delay > 0
    whole = load_audio(path)
    for start in (0.0, 3.0, 5.0, 9.0):
        clip = extract_clip(path, start_s=start, duration_s=2.0, n_frames=2)
        for frame, t in zip(clip.frames, clip.frame_times_s, strict=True):
            assert grey_level(frame) == pytest.approx(expected_grey(t - video_delay), abs=3)
        segment = whole[round(start * 16000) : round((start + 2.0) * 16000)]
        # seeking restarts the AAC decoder: skip its first frames, then samples must agree
        np.testing.assert_allclose(clip.audio[4096:], segment[4096:], atol=1e-4)


def test_segment_past_the_end_is_padded(counting_mp4: Path) -> None:
    clip = extract_clip(counting_mp4, start_s=5.0, duration_s=10.0)
    assert clip.padded
    assert clip.audio.shape == (160000,)
    assert clip.frame_times_s == pytest.approx([8.5])  # middle of the covered 5-12 s
    assert grey_level(clip.frames[0]) == pytest.approx(expected_grey(8.5), abs=3)
    assert int(np.argmax(np.abs(clip.audio))) == pytest.approx(20000 + 16, abs=8)
    assert float(np.abs(clip.audio[7 * 16000 + 1024 :]).max()) == 0.0  # zero padding
    with pytest.raises(SegmentOutOfRangeError, match=r"counting\.mp4: start 12\.500 s"):
        extract_clip(counting_mp4, start_s=12.5)


def test_bigbuckbunny(bigbuckbunny: Path) -> None:
    info = probe_media(bigbuckbunny)
    assert (info.width, info.height, info.fps) == (1280, 720, 25.0)
    assert info.audio_channels == 6 and info.audio_sample_rate == 48000
    assert info.video_duration_s == pytest.approx(5.28)
    clip = extract_clip(bigbuckbunny, n_frames=2)
    assert clip.padded and clip.audio.shape == (160000,)
    assert clip.duration_s == pytest.approx(5.31, abs=0.01)
    assert [f.size for f in clip.frames] == [(1280, 720)] * 2
    assert clip.frame_times_s == pytest.approx([1.32, 3.96])
    first, second = (np.asarray(f, dtype=np.float64) for f in clip.frames)
    assert np.abs(first - second).mean() > 5  # different moments of the film
    whole = load_audio(bigbuckbunny)
    np.testing.assert_allclose(clip.audio[: whole.size], whole, atol=1e-6)
    assert float(np.abs(clip.audio[whole.size :]).max()) == 0.0


def test_muxed_tuxpaint_clip_round_trips(dog_mp4: Path, tuxpaint_dir: Path) -> None:
    stamp = tuxpaint_dir / "animals" / "mammals" / "dogs" / "dog"
    source_audio = load_audio(stamp.with_suffix(".ogg"))
    source_image = Image.open(stamp.with_suffix(".png")).convert("RGB")
    info = probe_media(dog_mp4)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.duration_s == pytest.approx(source_audio.size / 16000, abs=0.1)
    clip = extract_clip(dog_mp4)
    assert clip.padded
    frame = np.asarray(clip.frames[0], dtype=np.float64)
    w, h = clip.frames[0].size
    reference = np.asarray(source_image, dtype=np.float64)[:h, :w]
    assert np.abs(frame - reference).mean() < 8  # lossy h264, same picture
    decoded = clip.audio[: source_audio.size]
    error = np.sqrt(np.mean((decoded - source_audio) ** 2) / np.mean(source_audio**2))
    assert error < 0.15  # AAC is lossy but sample-aligned (priming hidden by the edit list)


def test_mux_helper_even_size_stereo_and_frame_count(tmp_path: Path) -> None:
    image = Image.new("RGB", (101, 75), (200, 30, 30))
    stereo = np.stack([np.zeros(48000), 0.1 * np.ones(48000)]).astype(np.float32)
    path = mux_image_audio_to_mp4(image, stereo, 48000, tmp_path / "sub" / "x.mp4", fps=1)
    info = probe_media(path)
    assert (info.width, info.height, info.fps) == (100, 74, 1.0)
    assert info.audio_channels == 2 and info.audio_sample_rate == 48000
    import av

    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1
    with pytest.raises(ValueError, match="channels"):
        mux_image_audio_to_mp4(image, np.zeros((3, 10), np.float32), 16000, tmp_path / "y.mp4")


def test_video_without_audio(tmp_path: Path) -> None:
    path = write_counting_video(tmp_path / "mute.mp4", seconds=1.0, audio_sr=None)
    assert not probe_media(path).has_audio
    with pytest.raises(NoAudioStreamError, match=r"mute\.mp4: container has no audio stream"):
        extract_clip(path)


def test_audio_without_video(tmp_path: Path) -> None:
    tone = np.sin(np.arange(16000) * 0.1).astype(np.float32) * 0.3
    path = write_audio_container(tmp_path / "voice.m4a", tone, 16000)
    with pytest.raises(NoVideoStreamError, match=r"voice\.m4a: container has no video stream"):
        extract_clip(path)


def test_corrupt_and_truncated_files(tmp_path: Path, counting_mp4: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(CorruptMediaError, match=r"garbage\.mp4: cannot open"):
        extract_clip(garbage)
    with pytest.raises(CorruptMediaError, match=r"garbage\.mp4"):
        probe_media(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(counting_mp4.read_bytes()[: counting_mp4.stat().st_size // 3])
    with pytest.raises(CorruptMediaError, match=r"truncated\.mp4"):
        extract_clip(truncated)


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(MediaNotFoundError, match=r"absent\.mp4: file not found"):
        extract_clip(tmp_path / "absent.mp4")
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(EmptyMediaError, match=r"empty\.mp4"):
        probe_media(tmp_path / "empty.mp4")


def test_frame_times_and_bad_arguments(counting_mp4: Path) -> None:
    assert frame_times(0.0, 10.0, 1) == [5.0]
    assert frame_times(2.0, 4.0, 2) == [2.5, 3.5]
    with pytest.raises(ValueError, match="n_frames"):
        frame_times(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="duration_s"):
        extract_clip(counting_mp4, duration_s=0)
