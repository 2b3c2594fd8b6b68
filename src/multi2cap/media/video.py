"""Video front end on PyAV (FFmpeg bundled in the wheel; no system ffmpeg).

`extract_clip` turns a video and a start time into what the VggCaps builder and the
audio-visual model need: representative frame(s) as PIL images, the audio segment as 16 kHz
mono float32 of exactly the requested length (zero-padded and flagged when the media is
shorter), and the media's true duration. `probe_media` reads stream metadata without decoding.
`mux_image_audio_to_mp4` writes a still image plus a waveform as a small h264 + AAC mp4 (test
clips, demos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from multi2cap.media.audio import (
    SAMPLE_RATE,
    check_media_file,
    decode_audio_pyav,
    media_origin_s,
    open_container,
    resample,
)
from multi2cap.media.errors import (
    CorruptMediaError,
    NoAudioStreamError,
    NoVideoStreamError,
    SegmentOutOfRangeError,
)

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class MediaInfo:
    """Stream metadata of a media file. Durations in seconds, `None` when the file omits them."""

    path: Path
    duration_s: float | None
    has_audio: bool
    has_video: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_duration_s: float | None = None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_duration_s: float | None = None


@dataclass
class VideoClip:
    """One segment of a video.

    `frames` are RGB PIL images taken at `frame_times_s` (seconds on the media timeline);
    `audio` is `(round(requested duration * sample_rate),)` float32 mono, zero-padded at the end
    when `padded`; `duration_s` is the whole media's true duration (not the segment's).
    """

    path: Path
    start_s: float
    frames: list[Image.Image]
    frame_times_s: list[float]
    audio: np.ndarray
    sample_rate: int
    duration_s: float
    padded: bool


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _probe_container(path: Path, container: Any) -> MediaInfo:
    audio = container.streams.audio[0] if container.streams.audio else None
    video = container.streams.video[0] if container.streams.video else None
    audio_dur = _seconds(audio.duration, audio.time_base) if audio is not None else None
    video_dur = _seconds(video.duration, video.time_base) if video is not None else None
    duration = container.duration / 1_000_000 if container.duration is not None else None
    if duration is None:
        known = [d for d in (audio_dur, video_dur) if d is not None]
        duration = max(known) if known else None
    rate = (video.average_rate or video.guessed_rate) if video is not None else None
    return MediaInfo(
        path=path,
        duration_s=duration,
        has_audio=audio is not None,
        has_video=video is not None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
        audio_channels=int(audio.codec_context.channels) if audio is not None else None,
        audio_duration_s=audio_dur,
        video_codec=video.codec_context.name if video is not None else None,
        width=int(video.codec_context.width) if video is not None else None,
        height=int(video.codec_context.height) if video is not None else None,
        fps=float(rate) if rate else None,
        video_duration_s=video_dur,
    )


def probe_media(path: str | Path) -> MediaInfo:
    """Read container and stream metadata (no decoding). Raises `MediaError` subclasses."""
    path = check_media_file(path)
    with open_container(path) as container:
        return _probe_container(path, container)


def _scan_to(container: Any, target: float, seek: bool) -> tuple[Any, float | None]:
    """Decode the first video stream up to `target` (absolute seconds): (the last frame with
    time <= target or the first one decoded, the time of the first frame decoded)."""
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    switch_at = target - (0.5 + 4.0 / rate)  # > the decoder's reordering delay
    codec = stream.codec_context
    codec.skip_frame = "NONREF"
    chosen, first_time = None, None
    try:
        if seek:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if first_time is None:
                first_time = frame.time
            if codec.skip_frame != "DEFAULT" and (frame.time is None or frame.time >= switch_at):
                codec.skip_frame = "DEFAULT"
            if chosen is not None and frame.time is not None and frame.time > target + 1e-6:
                break
            chosen = frame
    finally:
        codec.skip_frame = "DEFAULT"
    return chosen, first_time


def _frame_at(path: Path, container: Any, target_s: float) -> Image.Image:
    """The frame on screen at `target_s` (media timeline): the last one whose time is <= it.

    Decoding starts at the key frame before the target. Until the decoder is within a margin
    of the target, frames no other frame references are skipped (`skip_frame="NONREF"`), which
    cannot change any later picture but saves much of the work on long GOPs. When the seek
    lands past the target or on no decodable frame (imprecise seeking, e.g. in MPEG-TS), the
    file is decoded again from its start.
    """
    import av

    target = media_origin_s(container) + target_s
    try:
        chosen, first_time = _scan_to(container, target, seek=True)
        if chosen is None or (first_time is not None and first_time > target + 1e-6):
            with open_container(path) as fresh:
                chosen, _ = _scan_to(fresh, target, seek=False)
                image = chosen.to_image() if chosen is not None else None
        else:
            image = chosen.to_image()
    except av.FFmpegError as err:
        raise CorruptMediaError(path, f"video stream failed to decode ({err})") from err
    if image is None:
        raise CorruptMediaError(path, f"no video frame decodes at {target_s:.3f} s")
    return image


def frame_times(start_s: float, end_s: float, n_frames: int) -> list[float]:
    """Centres of `n_frames` equal parts of `[start_s, end_s]`: one frame = the middle."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    step = (end_s - start_s) / n_frames
    return [start_s + (i + 0.5) * step for i in range(n_frames)]


def extract_clip(
    path: str | Path,
    start_s: float = 0.0,
    duration_s: float = 10.0,
    n_frames: int = 1,
    sample_rate: int = SAMPLE_RATE,
) -> VideoClip:
    """Frames and audio of `[start_s, start_s + duration_s)` of a video file.

    Frames are taken at the centres of `n_frames` equal parts of the part of the segment the
    media actually covers (one frame = its middle). The audio is decoded from the first audio
    stream, mixed to mono by the mean, resampled to `sample_rate` (see `audio.resample`) and
    zero-padded at the end to exactly `duration_s` (`padded=True` when padding was needed).

    Raises `MediaNotFoundError`, `EmptyMediaError`, `CorruptMediaError`, `NoVideoStreamError`,
    `NoAudioStreamError`, or `SegmentOutOfRangeError` when `start_s` lies past the end.
    """
    if start_s < 0 or duration_s <= 0:
        raise ValueError(f"need start_s >= 0 and duration_s > 0, got {start_s}, {duration_s}")
    path = check_media_file(path)
    with open_container(path) as container:
        info = _probe_container(path, container)
        if not info.has_video:
            raise NoVideoStreamError(path, "container has no video stream")
        if not info.has_audio:
            raise NoAudioStreamError(path, "container has no audio stream")
        media_end = info.duration_s if info.duration_s is not None else start_s + duration_s
        video_end = info.video_duration_s or media_end
        if start_s >= media_end:
            raise SegmentOutOfRangeError(
                path,
                f"start {start_s:.3f} s is at or past the end of the media ({media_end:.3f} s)",
            )
        end = min(start_s + duration_s, video_end)
        times = frame_times(start_s, max(end, start_s), n_frames)
        frames = [_frame_at(path, container, t) for t in times]
    samples, native_sr = decode_audio_pyav(path, start_s, duration_s)
    mono = samples.mean(axis=0) if samples.shape[0] > 1 else samples[0]
    audio = resample(mono, native_sr, sample_rate)
    want = round(duration_s * sample_rate)
    padded = audio.size < want
    audio = np.pad(audio, (0, want - audio.size)) if padded else audio[:want]
    return VideoClip(
        path=path,
        start_s=start_s,
        frames=frames,
        frame_times_s=times,
        audio=np.ascontiguousarray(audio, dtype=np.float32),
        sample_rate=sample_rate,
        duration_s=media_end,
        padded=padded,
    )


def mux_image_audio_to_mp4(
    image: Image.Image,
    audio: np.ndarray,
    sample_rate: int,
    path: str | Path,
    fps: int = 2,
    max_side: int | None = 640,
) -> Path:
    """Write a still `image` shown for the length of `audio` as an h264 + AAC mp4.

    `audio` is mono `(n,)` or `(channels, n)` float in [-1, 1]; the AAC encoder accepts the
    usual rates (8 to 96 kHz). The image is scaled down to `max_side` pixels (None keeps it)
    and cropped to even dimensions for yuv420p; `ceil(seconds * fps)` identical frames are
    encoded (x264 ultrafast, still-image tuning), so a 10-s clip takes well under a second.
    """
    import av
    from PIL import Image as PILImage

    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio[None, :] if audio.ndim == 1 else audio
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise ValueError(f"audio must be (n,) or (channels, n) with n > 0, got {audio.shape}")
    picture = image.convert("RGB")
    if max_side is not None and max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
    width, height = picture.size[0] // 2 * 2, picture.size[1] // 2 * 2
    if width == 0 or height == 0:
        raise ValueError(f"image too small for yuv420p: {picture.size}")
    picture = picture.crop((0, 0, width, height))
    seconds = audio.shape[1] / sample_rate
    layout = {1: "mono", 2: "stereo"}.get(audio.shape[0])
    if layout is None:
        raise ValueError(f"audio must have 1 or 2 channels, got {audio.shape[0]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "stillimage"}
        sound = out.add_stream("aac", rate=sample_rate, layout=layout)
        still = av.VideoFrame.from_image(picture)
        for index in range(max(1, math.ceil(seconds * fps))):
            still.pts = index
            still.time_base = Fraction(1, fps)
            out.mux(video.encode(still))
        out.mux(video.encode(None))
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), "fltp", layout=layout)
        frame.sample_rate = sample_rate
        # An explicit pts lets the encoder date its priming samples negatively, so the mp4 edit
        # list hides them and decoders start exactly at the first input sample.
        frame.pts, frame.time_base = 0, Fraction(1, sample_rate)
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return path
