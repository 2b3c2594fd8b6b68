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


def _crc_table(poly: int, width: int) -> list[int]:
    top, mask, table = 1 << (width - 1), (1 << width) - 1, []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return table


_CRC8, _CRC16 = _crc_table(0x07, 8), _crc_table(0x8005, 16)


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    """FLAC's frame footer CRC (polynomial 0x8005, MSB first, initial value 0)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's UTF-8-like coding of a frame number (up to 31 bits)."""
    if n < 0x80:
        return bytes([n])
    length = next(k for k in range(2, 7) if n < 1 << (5 * k + 1))
    tail = [0x80 | (n >> (6 * i) & 0x3F) for i in range(length - 1)][::-1]
    head = (0xFF << (8 - length) & 0xFF) | n >> (6 * (length - 1))
    return bytes([head, *tail])


def write_silent_flac(
    path: Path,
    sample_rate: int,
    channels: int,
    seconds: float,
    block: int = 4096,
    declared_s: float | None = None,
) -> Path:
    """A valid 16-bit FLAC of digital silence, written directly (every subframe CONSTANT 0)
    in a fraction of a second whatever its length: libFLAC takes about 30 s to encode the 595 s
    of 192 kHz x 8 channels that this writes into 1 MB. Rates up to FLAC's 655,350 Hz.
    `declared_s` is the length its header gives (default: the truth; 0: "unknown")."""
    total = round(seconds * sample_rate)
    declared = total if declared_s is None else round(declared_s * sample_rate)
    info = (sample_rate << 44) | ((channels - 1) << 41) | (15 << 36) | declared
    streaminfo = block.to_bytes(2, "big") * 2 + bytes(6) + info.to_bytes(8, "big") + bytes(16)
    out = bytearray(b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo)
    # header: sync + fixed blocking, block size in 16 bits at the end, rate from STREAMINFO,
    # independent channels, 16-bit samples
    subframes = bytes(3) * channels  # CONSTANT subframe (type 0) holding a 16-bit 0
    for number, start in enumerate(range(0, total, block)):
        size = min(block, total - start)
        head = bytes([0xFF, 0xF8, 0x70, (channels - 1) << 4 | 0b100 << 1])
        head += _utf8_number(number) + (size - 1).to_bytes(2, "big")
        frame = head + bytes([_crc8(head)]) + subframes
        out += frame + _crc16(frame).to_bytes(2, "big")
    path.write_bytes(bytes(out))
    return path
