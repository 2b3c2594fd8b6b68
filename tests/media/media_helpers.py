"""Helpers for media tests: write audio into FFmpeg containers with PyAV (no system ffmpeg)."""

from __future__ import annotations

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
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
