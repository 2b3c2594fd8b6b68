"""VggCaps builder benchmarks: extraction speed and the pipeline's own overhead per request.

1. Extraction: clips/s writing frame JPEG + 16-kHz FLAC + mel PNG from real 10-s mp4 clips
   (Tux Paint sounds and pictures muxed with PyAV), with 1 and 2 worker processes.
2. Captioning overhead: the `openai` backend at concurrency 64 against the loopback
   OpenAI-compatible server (tests/vggcaps/openai_loopback.py) running in a *separate process*, with a
   no-media path (every clip points at the same tiny images), so the figures are our client's
   cost: requests/s of wall time, and client CPU seconds per request (requests/s per core =
   1 / that). The target is >= 200 requests/s of our own overhead.
3. Memory: RSS of the client sampled while it captions N clips (default 10,000; 20,000 requests).

Run: `.venv/bin/python benchmarks/bench_vggcaps.py [--clips 10000] [--extract-clips 12]`.
The machine is shared: figures are medians of `--repeats` runs where repeated.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "vggcaps"))

from openai_loopback import LoopbackServer  # noqa: E402

from multi2cap.assets import tuxpaint_stamps_dir  # noqa: E402
from multi2cap.media.audio import load_audio  # noqa: E402
from multi2cap.media.video import mux_image_audio_to_mp4  # noqa: E402
from multi2cap.vggcaps.backends import OpenAISettings  # noqa: E402
from multi2cap.vggcaps.pipeline import build_vggcaps  # noqa: E402
from multi2cap.vggcaps.records import BuildConfig, BuildSummary  # noqa: E402
from multi2cap.vggcaps.store import Store  # noqa: E402

API_KEY = "sk-bench"
STAMPS = ("animals/insects/bee", "animals/insects/hornet", "animals/marsupials/koala")


def rss_mb() -> float:
    """Resident set size of this process in MiB (from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_videos(folder: Path, n: int) -> Path:
    """n 10-s mp4 clips (Tux Paint picture + sound, looped) and their VGGSound-style CSV."""
    stamps = tuxpaint_stamps_dir()
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        stamp = STAMPS[i % len(STAMPS)]
        image = Image.open(stamps / f"{stamp}.png").convert("RGB")
        sound = load_audio(stamps / f"{stamp}.ogg")
        audio = np.resize(sound, 16000 * 10)
        ytid = f"bench{i:06d}"
        mux_image_audio_to_mp4(image, audio, 16000, folder / f"{ytid}_000000.mp4")
        rows.append(f"{ytid},0,insect buzzing,train")
    csv = folder.parent / "vggsound.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def bench_extraction(n: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv = make_videos(Path(tmp) / "videos", n)
        for workers in (1, 2):
            rates = []
            for r in range(repeats):
                out = Path(tmp) / f"out-{workers}-{r}"
                config = BuildConfig(
                    out=out,
                    videos=Path(tmp) / "videos",
                    categories=csv,
                    workers=workers,
                    steps=("extract",),
                    progress=False,
                )
                start = time.perf_counter()
                summary = build_vggcaps(config)
                elapsed = time.perf_counter() - start
                assert summary.extracted == n, summary
                rates.append(n / elapsed)
            print(
                f"extraction, {workers} worker(s): median {statistics.median(rates):.2f} clips/s "
                f"(runs: {', '.join(f'{x:.2f}' for x in rates)}; {n} clips of 10 s)"
            )


def _serve(conn: multiprocessing.connection.Connection) -> None:
    server = LoopbackServer(API_KEY)
    server.state.record = False
    with server:
        conn.send(server.base_url)
        conn.recv()  # block until the parent says stop


def make_dry_store(out: Path, n: int) -> None:
    """n extract records that all point at one tiny frame, spectrogram and FLAC."""
    media = out / "media"
    media.mkdir(parents=True)
    Image.new("RGB", (16, 16), (90, 120, 30)).save(media / "f.jpg", "JPEG")
    Image.new("RGB", (16, 16), (10, 20, 200)).save(media / "s.png", "PNG")
    soundfile.write(media / "a.flac", np.zeros(1600, np.float32), 16000, format="FLAC")
    records = [
        {
            "id": f"dry{i:07d}_000000",
            "category": "insect buzzing",
            "youtube_id": f"dry{i:07d}",
            "start_s": 0.0,
            "vggsound_split": "train",
            "video": "-",
            "read_start_s": 0.0,
            "duration_s": 10.0,
            "padded": False,
            "audio": "media/a.flac",
            "frame": "media/f.jpg",
            "spectrogram": "media/s.png",
        }
        for i in range(n)
    ]
    Store(out).append("extract", records)


def run_overhead(n: int, concurrency: int) -> tuple[BuildSummary, float, float, list[float]]:
    """(summary, wall s, client CPU s, RSS samples in MiB) for captioning n dry clips."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(child,), daemon=True)
    process.start()
    base_url = parent.recv()
    os.environ["M2C_BENCH_KEY"] = API_KEY
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            samples.append(rss_mb())

    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            make_dry_store(out, n)
            config = BuildConfig(
                out=out,
                backend="openai",
                steps=("caption",),
                progress=False,
                openai=OpenAISettings(
                    base_url=base_url,
                    api_key_env="M2C_BENCH_KEY",
                    concurrency=concurrency,
                    max_retries=3,
                ),
            )
            sampler = threading.Thread(target=sample, daemon=True)
            samples.append(rss_mb())
            sampler.start()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            summary = build_vggcaps(config)
            wall = time.perf_counter() - start
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            stop.set()
            sampler.join()
    finally:
        parent.send("stop")
        process.join(timeout=10)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return summary, wall, cpu, samples


def bench_overhead(n: int, concurrency: int, repeats: int, memory_clips: int) -> None:
    walls, cpus = [], []
    for _ in range(repeats):
        summary, wall, cpu, _ = run_overhead(n, concurrency)
        assert summary.captioned == n and summary.failed == 0, summary
        walls.append(2 * n / wall)
        cpus.append(cpu / (2 * n))
    per_req_ms = statistics.median(cpus) * 1000
    print(
        f"pipeline vs loopback (separate process), concurrency {concurrency}, {n} clips "
        f"= {2 * n} requests: median {statistics.median(walls):.0f} requests/s wall "
        f"(runs: {', '.join(f'{x:.0f}' for x in walls)}); client CPU {per_req_ms:.2f} ms per "
        f"request = {1000 / per_req_ms:.0f} requests/s per core of our own overhead"
    )
    summary, wall, cpu, samples = run_overhead(memory_clips, concurrency)
    assert summary.captioned == memory_clips, summary
    tenth = samples[max(1, len(samples) // 10)]
    print(
        f"memory over {memory_clips} clips ({2 * memory_clips} requests, {wall:.0f} s, "
        f"{2 * memory_clips / wall:.0f} requests/s): RSS at start {samples[0]:.0f} MiB, "
        f"at 10 % {tenth:.0f} MiB, at 50 % {samples[len(samples) // 2]:.0f} MiB, "
        f"peak {max(samples):.0f} MiB, at end {samples[-1]:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extract-clips", type=int, default=12)
    parser.add_argument("--overhead-clips", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=10_000, help="clips for the memory run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores (shared with other jobs); medians of {args.repeats}")
    bench_extraction(args.extract_clips, args.repeats)
    bench_overhead(args.overhead_clips, args.concurrency, args.repeats, args.clips)


if __name__ == "__main__":
    main()
