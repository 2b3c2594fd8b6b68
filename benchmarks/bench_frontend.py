"""Front-end throughput: clips per second for the two jobs the pipeline repeats most.

(a) audio: load a 10-s file, mix to mono, resample to 16 kHz, CED log-mel (batches of 16);
    measured on 44.1 kHz wav (Clotho-like, needs resampling) and 16 kHz flac (pre-converted).
(b) video: `extract_clip` on 10-s 640x360 25 fps h264 + 48 kHz stereo AAC mp4 files: the middle
    frame as a PIL image plus the 10-s segment at 16 kHz mono; measured with x264's default
    GOP (one key frame per 10-s clip, the worst case for seeking) and a 2-s GOP.

Each job runs in one process and in a pool of 2 worker processes (torch limited to one thread
per process). Inputs are made first (untimed) from the Tux Paint sounds and pictures when they
are installed, else from generated noise. Figures are medians over `--repeats` passes; on a
shared machine they move with the neighbours' load, so the load average is printed too.

    .venv/bin/python benchmarks/bench_frontend.py [--audio-clips 64] [--video-clips 24]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import soundfile as sf

from multi2cap.assets import AssetNotFoundError, tuxpaint_stamps_dir
from multi2cap.media.audio import load_audio, resample
from multi2cap.media.video import extract_clip

if TYPE_CHECKING:
    import torch

SECONDS = 10.0
BATCH = 16
TARGETS = {"audio": 200.0, "video": 20.0}  # clips/s on 2 cores (issue 2)


def source_material(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real sounds (mono, 44.1 kHz) and pictures (RGB arrays) from Tux Paint, or noise."""
    try:
        stamps = tuxpaint_stamps_dir()
    except AssetNotFoundError:
        sounds = [rng.standard_normal(44100 * 3).astype(np.float32) * 0.1 for _ in range(8)]
        pictures = [rng.integers(0, 256, (360, 640, 3), np.uint8) for _ in range(4)]
        return sounds, pictures
    from PIL import Image

    oggs = sorted(p for p in stamps.rglob("*.ogg") if "_desc" not in p.name)
    sounds = []
    for path in oggs[:: max(1, len(oggs) // 40)]:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        sounds.append(resample(data.mean(axis=1), sr, 44100))
    pngs = [p.with_suffix(".png") for p in oggs if p.with_suffix(".png").is_file()]
    pictures = [
        np.asarray(Image.open(p).convert("RGB").resize((640, 360)))
        for p in pngs[:: max(1, len(pngs) // 8)]
    ]
    return sounds, pictures


def ten_seconds(sounds: Sequence[np.ndarray], start: int, sr: int = 44100) -> np.ndarray:
    """Concatenate sounds (from index `start`) until 10 s at `sr`."""
    parts, total, i = [], 0, start
    while total < SECONDS * sr:
        parts.append(sounds[i % len(sounds)])
        total += parts[-1].size
        i += 1
    return np.concatenate(parts)[: int(SECONDS * sr)]


def make_audio(folder: Path, sounds: Sequence[np.ndarray], n: int) -> dict[str, list[Path]]:
    sets: dict[str, list[Path]] = {"wav 44.1 kHz": [], "flac 16 kHz": []}
    for i in range(n):
        wave = ten_seconds(sounds, i)
        sets["wav 44.1 kHz"].append(folder / f"a{i:03d}.wav")
        sf.write(sets["wav 44.1 kHz"][-1], wave, 44100, subtype="PCM_16")
        sets["flac 16 kHz"].append(folder / f"a{i:03d}.flac")
        sf.write(sets["flac 16 kHz"][-1], resample(wave, 44100, 16000), 16000)
    return sets


def make_video(path: Path, picture: np.ndarray, audio: np.ndarray, gop: int | None) -> None:
    """10 s of 640x360 25 fps h264 (a picture panning) + 48 kHz stereo AAC."""
    fps = 25
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "23"}
        if gop is not None:
            video.options = {**video.options, "g": str(gop), "keyint_min": str(gop)}
        sound = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(int(SECONDS * fps)):
            frame = av.VideoFrame.from_ndarray(np.roll(picture, 6 * i, axis=1), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        stereo = np.stack([audio, audio[::-1]]).astype(np.float32)
        chunk = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
        chunk.sample_rate = 48000
        chunk.pts, chunk.time_base = 0, Fraction(1, 48000)
        out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


@functools.lru_cache(maxsize=1)
def _frontend() -> torch.nn.Module:
    from multi2cap.media.melspec import CedLogMel

    return CedLogMel()


def audio_chunk(paths: Sequence[Path]) -> tuple[int, float]:
    """Load, resample and log-mel a chunk of files: (clips done, CPU seconds used)."""
    import torch

    cpu = time.process_time()
    frontend = _frontend()
    waves = np.zeros((len(paths), int(SECONDS * 16000)), np.float32)
    for row, path in enumerate(paths):
        wave = load_audio(path)[: waves.shape[1]]
        waves[row, : wave.size] = wave
    with torch.inference_mode():
        frontend(torch.from_numpy(waves))
    return len(paths), time.process_time() - cpu


def video_chunk(paths: Sequence[Path]) -> tuple[int, float]:
    """Middle frame + 10-s 16 kHz segment of each file: (clips done, CPU seconds used)."""
    cpu = time.process_time()
    for path in paths:
        clip = extract_clip(path, start_s=0.0, duration_s=SECONDS)
        clip.frames[0].load()
    return len(paths), time.process_time() - cpu


def throughput(
    job: Callable[[Sequence[Path]], tuple[int, float]],
    paths: Sequence[Path],
    chunk: int,
    workers: int,
    repeats: int,
) -> tuple[float, float]:
    """Median wall-clock clips/s and median CPU ms per clip over `repeats` passes over
    `paths` (after an untimed warm-up)."""
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    rates, cpu_ms = [], []
    pool = None
    if workers == 1:
        _init_worker()
        job(chunks[0])
    else:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
        pool.map(job, chunks[:workers])
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            results = pool.map(job, chunks, chunksize=1) if pool else [job(c) for c in chunks]
            elapsed = time.perf_counter() - start
            done = sum(n for n, _ in results)
            rates.append(done / elapsed)
            cpu_ms.append(1000.0 * sum(c for _, c in results) / done)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return statistics.median(rates), statistics.median(cpu_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio-clips", type=int, default=64)
    parser.add_argument("--video-clips", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_frontend_") as tmp:
        folder = Path(tmp)
        sounds, pictures = source_material(rng)
        audio_sets = make_audio(folder, sounds, args.audio_clips)
        video_sets: dict[str, list[Path]] = {"x264 default GOP": [], "2-s GOP": []}
        for i in range(args.video_clips):
            audio48 = resample(ten_seconds(sounds, 3 * i), 44100, 48000)
            picture = pictures[i % len(pictures)]
            for name, gop in (("x264 default GOP", None), ("2-s GOP", 50)):
                path = folder / f"v{i:03d}_{gop or 'default'}.mp4"
                make_video(path, picture, audio48, gop)
                video_sets[name].append(path)

        print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()}")
        print(
            "clips/s = wall-clock throughput; cpu ms = CPU time per clip, from which "
            "'2 idle cores' = 2000 / cpu ms projects the rate without neighbours"
        )
        header = (
            f"{'job':50s} {'1 proc':>8s} {'2 workers':>9s} {'cpu ms':>7s} {'2 idle cores':>12s}"
        )
        print(header + "  target")
        jobs = [
            ("(a) 10-s " + label + " -> 16 kHz -> log-mel", audio_chunk, paths, BATCH, "audio")
            for label, paths in audio_sets.items()
        ] + [
            ("(b) 10-s 360p mp4, " + label + " -> frame+audio", video_chunk, paths, 2, "video")
            for label, paths in video_sets.items()
        ]
        for label, job, paths, chunk, kind in jobs:
            single, cpu_single = throughput(job, paths, chunk, 1, args.repeats)
            double, cpu_double = throughput(job, paths, chunk, 2, args.repeats)
            cpu = min(cpu_single, cpu_double)
            print(
                f"{label:50s} {single:8.1f} {double:9.1f} {cpu:7.1f} {2000.0 / cpu:12.1f}"
                f"  >= {TARGETS[kind]:.0f} clips/s on 2 cores"
            )
        print(f"load average after: {os.getloadavg()}  (medians of {args.repeats} passes)")


if __name__ == "__main__":
    main()
