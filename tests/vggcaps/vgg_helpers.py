"""Helpers for the VggCaps tests: a pre-extracted output folder (small synthetic media written
the way the extract step writes them), so the LLM side can be tested without decoding video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from PIL import Image

from multi2cap.vggcaps.extract import media_paths
from multi2cap.vggcaps.store import Store

SAMPLE_RATE = 16000
API_KEY = "sk-loopback-SECRET-0123456789"


def tone_with_bursts(
    freq_hz: float, burst_times_s: list[float], seconds: float = 2.0
) -> np.ndarray:
    """A quiet sine with loud 100-ms noise-free bursts of the same tone at the given times."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    level = np.full_like(t, 0.01)
    for start in burst_times_s:
        level[(t >= start) & (t < start + 0.1)] = 0.5
    return (level * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def make_extracted(out: Path, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Write media and extract records for (id, category) pairs; returns the records."""
    records = []
    for index, (clip_id, category) in enumerate(items):
        paths = media_paths(clip_id)
        for key in paths:
            (out / paths[key]).parent.mkdir(parents=True, exist_ok=True)
        wave = tone_with_bursts(200.0 + 300.0 * index, [0.3 + 0.2 * (index % 4)])
        soundfile.write(out / paths["audio"], wave, SAMPLE_RATE, format="FLAC")
        shade = (37 * index) % 256
        Image.new("RGB", (32, 24), (shade, 255 - shade, 90)).save(out / paths["frame"], "JPEG")
        Image.new("RGB", (32, 16), (0, shade, 200)).save(out / paths["spectrogram"], "PNG")
        ytid, _, start = clip_id.rpartition("_")
        records.append(
            {
                "id": clip_id,
                "category": category,
                "youtube_id": ytid,
                "start_s": float(start),
                "vggsound_split": "train",
                "video": f"/nowhere/{clip_id}.mp4",
                "read_start_s": 0.0,
                "duration_s": 2.0,
                "padded": True,
                **paths,
            }
        )
    Store(out).append("extract", records)
    return records


def clip_items(n: int) -> list[tuple[str, str]]:
    """n VGGSound-like ids (including one starting with '-') with simple categories."""
    categories = ["dog barking", "playing violin", "rain falling", "car engine idling"]
    ids = [f"-x{i:09d}"[:11] if i == 0 else f"yt{i:09d}" for i in range(n)]
    return [(f"{ytid}_{10 * i:06d}", categories[i % 4]) for i, ytid in enumerate(ids)]


def make_videos(folder: Path, items: list[tuple[str, str]], csv_path: Path) -> None:
    """Small real mp4 clips (a still picture over a 1-s tone with a burst, h264 + AAC) named
    `{id}.mp4` in `folder` for (id, category) pairs, and their CSV `id,category` at
    `csv_path`."""
    from multi2cap.media.video import mux_image_audio_to_mp4

    folder.mkdir(parents=True, exist_ok=True)
    for index, (clip_id, _) in enumerate(items):
        wave = tone_with_bursts(300.0 + 200.0 * index, [0.4], seconds=1.0)
        picture = Image.new("RGB", (64, 48), ((60 * index) % 256, 120, 200))
        mux_image_audio_to_mp4(picture, wave, SAMPLE_RATE, folder / f"{clip_id}.mp4")
    rows = "".join(f"{clip_id},{category}\n" for clip_id, category in items)
    csv_path.write_text("id,category\n" + rows, encoding="utf-8")
