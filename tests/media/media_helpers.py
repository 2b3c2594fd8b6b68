"""Helpers for media tests: write audio into FFmpeg containers with PyAV (no system ffmpeg)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# container suffix -> (audio codec, sample format the encoder takes)
AUDIO_CODECS = {
    ".m4a": ("aac", "fltp"),
    ".mp4": ("aac", "fltp"),
    ".mkv": ("libopus", "s16"),
    ".webm": ("libopus", "s16"),
}


def write_audio_container(path: Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Encode a mono float waveform `(n,)` into `path` (codec chosen by the suffix)."""
    codec, fmt = AUDIO_CODECS[path.suffix]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sample_rate, layout="mono")
        data = wave.astype(np.float32)[None, :]
        if fmt == "s16":
            data = (np.clip(data, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate = sample_rate
        frame.pts, frame.time_base = 0, Fraction(1, sample_rate)  # lets mp4 hide AAC priming
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_counting_video(
    path: Path,
    seconds: float,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    audio_sr: int | None = 16000,
    clicks_s: tuple[float, ...] = (),
    preset: str = "ultrafast",
    container_format: str = "mp4",
) -> Path:
    """An h264 mp4 whose frame i is a flat grey of level `(8 * i) % 256` (so the frame shown at
    a time can be read back from its pixels) and, unless `audio_sr` is None, an AAC track that is
    silent except for short clicks at `clicks_s` seconds. Presets slower than ultrafast add
    B-frames (some of them not referenced), x264's default GOP is one key frame per 250."""
    width, height = size
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": preset, "qp": "2"}  # near-lossless (qp 0 disables B-frames)
        sound = out.add_stream("aac", rate=audio_sr, layout="mono") if audio_sr else None
        for i in range(round(seconds * fps)):
            pixels = np.full((height, width, 3), (8 * i) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None and audio_sr is not None:
            wave = np.zeros((1, round(seconds * audio_sr)), np.float32)
            for at in clicks_s:
                start = round(at * audio_sr)
                wave[0, start : start + 32] = 0.8 * np.hanning(32)
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate = audio_sr
            frame.pts, frame.time_base = 0, Fraction(1, audio_sr)
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def grey_level(image) -> float:
    return float(np.asarray(image.convert("L"), dtype=np.float64).mean())
