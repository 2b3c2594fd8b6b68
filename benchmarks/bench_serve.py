"""Serving throughput and latency: `multi2cap serve` under loopback load at concurrency 1, 8
and 32, beside `Multi2Cap.caption` called one clip at a time in a loop, in the same run.

The checkpoint is demo-sized: `Multi2CapConfig.tiny` over the demo's caption vocabulary and
prompt, decoding as the demo captions (3 beams, at most 30 new tokens), random weights (no
trained demo checkpoint ships with the repository; pass `--checkpoint` to use one). Clips are
10-s WAV files made from real Tux Paint sounds (looped to length) when they are installed, else
from tones. Each request uploads one clip to `POST /v1/captions`; latency is measured by the
client from sending to the full reply. The direct baseline reads the same files
(`model.caption(path)`), so both sides decode audio; it runs before and after the load runs
(throughput baseline: both together), and concurrency 1 alternates one direct call with one
request, so that their latencies are compared under the same moment's machine load.

    .venv/bin/python benchmarks/bench_serve.py [--threads 1] [--requests-per-client 4]

Targets (2 CPU cores): >= 4x the one-at-a-time throughput at concurrency 32; p99 latency at
concurrency 1 within 1.2x of a direct call. The server and the load generator share the
machine, so these are whole-system figures.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch

from multi2cap.assets import AssetNotFoundError, tuxpaint_stamps_dir
from multi2cap.media.audio import load_audio
from multi2cap.model import Multi2Cap, Multi2CapConfig
from multi2cap.model.config import GenerationSpec

SAMPLE_RATE = 16000
DEMO_PROMPT = "Describe the sound. Audio: <audio> Caption:"  # multi2cap.demo.run
DEMO_WORDS = (
    "the sound of a dog barking cat meowing cow mooing duck quacking horse neighing bird "
    "chirping rooster crowing sheep bleating frog croaking lion roaring bell ringing drum "
    "beating guitar strumming piano playing trumpet violin flute whistle clock ticking door "
    "creaking water running rain falling wind blowing car engine train horn people talking "
    "while in and with then quiet place loud softly far away close by outdoors indoors"
)


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    """`n` distinct `seconds`-long 16-kHz WAV files (looped Tux Paint sounds, else tones)."""
    length = int(seconds * SAMPLE_RATE)
    try:
        sources = sorted(p for p in tuxpaint_stamps_dir().rglob("*.ogg") if "_desc" not in p.name)
    except AssetNotFoundError:
        sources = []
    clips = []
    for i in range(n):
        if sources:
            wave = load_audio(sources[(i * 7) % len(sources)])
            wave = np.tile(wave, math.ceil(length / max(1, wave.shape[0])))[:length]
        else:
            t = np.arange(length) / SAMPLE_RATE
            wave = (0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t)).astype(np.float32)
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
        clips.append(path)
    return clips


def demo_sized_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    config = Multi2CapConfig.tiny(
        [DEMO_WORDS],
        prompt=DEMO_PROMPT,
        generation=GenerationSpec(num_beams=3, max_new_tokens=30),
    )
    return Multi2Cap(config, load_vision=False).save_pretrained(folder / "ckpt")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def direct(model: Multi2Cap, clips: list[Path], repeats: int) -> tuple[float, list[float]]:
    """(clips/s, latencies in s) of `model.caption(path)` one clip at a time."""
    model.caption(clips[0])  # warm-up
    latencies = []
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        model.caption(clips[i % len(clips)])
        latencies.append(time.perf_counter() - t0)
    return repeats / (time.perf_counter() - start), latencies


def interleaved(
    model: Multi2Cap, url: str, clips: list[Path], n: int
) -> tuple[list[float], list[float]]:
    """`n` pairs (a direct `model.caption(path)`, then the same clip through the server):
    the two latency lists (s), measured under the same moment's machine load."""
    direct_lat, server_lat = [], []
    with httpx.Client(timeout=600) as http:
        for i in range(n):
            clip = clips[i % len(clips)]
            t0 = time.perf_counter()
            model.caption(clip)
            direct_lat.append(time.perf_counter() - t0)
            data = clip.read_bytes()
            t0 = time.perf_counter()
            reply = http.post(f"{url}/v1/captions", files=[("file", (clip.name, data))])
            server_lat.append(time.perf_counter() - t0)
            reply.raise_for_status()
    return direct_lat, server_lat


def load(
    url: str, clips: list[Path], concurrency: int, per_client: int
) -> tuple[float, list[float]]:
    """(clips/s, latencies in s) of `concurrency` clients each sending `per_client` requests."""
    payloads = [(p.name, p.read_bytes()) for p in clips]
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as http:
            for j in range(per_client):
                name, data = payloads[(k * per_client + j) % len(payloads)]
                t0 = time.perf_counter()
                reply = http.post(f"{url}/v1/captions", files=[("file", (name, data))])
                elapsed = time.perf_counter() - t0
                if reply.status_code != 200:
                    errors.append(f"{reply.status_code}: {reply.text[:200]}")
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return len(latencies) / wall, latencies


def start_server(checkpoint: Path, threads: int, max_batch: int, max_wait_ms: float) -> tuple:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    process = subprocess.Popen(
        [sys.executable, "-m", "multi2cap.cli.main", "serve", "--checkpoint", str(checkpoint),
         "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--direct-calls", type=int, default=24)
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        checkpoint = args.checkpoint or demo_sized_checkpoint(root)
        clips = make_clips(root, 32, args.clip_seconds)
        process, url = start_server(checkpoint, args.threads, args.max_batch, args.max_wait_ms)
        try:
            model = Multi2Cap.from_pretrained(checkpoint)
            gen = model.config.generation
            print(
                f"multi2cap serve, {args.clip_seconds:g}-s clips, {gen.num_beams} beams, "
                f"<= {gen.max_new_tokens} new tokens, torch threads {args.threads}, "
                f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at start), "
                f"--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}"
            )
            half = args.direct_calls // 2
            before_rate, before_lat = direct(model, clips, half)
            load(url, clips, 1, 2)  # warm-up
            # Concurrency 1, interleaved with direct calls so both see the same machine load.
            paired_direct, paired_server = interleaved(model, url, clips, args.direct_calls)
            server_rate = len(paired_server) / sum(paired_server)
            rows = [("server, concurrency 1", server_rate, paired_server)]
            for concurrency in (8, 32):
                per_client = max(args.requests_per_client, 24 // concurrency)
                rate, lat = load(url, clips, concurrency, per_client)
                rows.append((f"server, concurrency {concurrency}", rate, lat))
            after_rate, after_lat = direct(model, clips, half)
            calls = httpx.get(f"{url}/healthz").json()
            one_lat = before_lat + after_lat
            one_rate = len(one_lat) / sum(one_lat)
            rows.insert(0, ("direct, one clip at a time", one_rate, one_lat))
            rows.insert(1, ("direct, paired with c=1", 1 / statistics.mean(paired_direct),
                            paired_direct))  # fmt: skip
            print(
                f"direct clips/s before the load runs {before_rate:.2f}, after {after_rate:.2f} "
                "(the baseline is both together)"
            )
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"{'':30s} {'clips/s':>8s} {'x direct':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'n':>4s}")
    for name, rate, lat in rows:
        print(
            f"{name:30s} {rate:8.2f} {rate / one_rate:9.2f} {percentile(lat, 50) * 1e3:8.0f} "
            f"{percentile(lat, 99) * 1e3:8.0f} {len(lat):4d}"
        )
    p99_c1 = percentile(paired_server, 99)
    print(
        f"throughput at concurrency 32: {rows[4][1] / one_rate:.2f}x direct (target >= 4); "
        f"p99 at concurrency 1: {p99_c1 / statistics.median(paired_direct):.2f}x the median and "
        f"{p99_c1 / percentile(paired_direct, 99):.2f}x the p99 of the paired direct calls "
        "(target <= 1.2); "
        f"server: {calls['model_calls']} model calls for {calls['clips']} clips, "
        f"largest batch {calls['largest_batch']}"
    )


if __name__ == "__main__":
    main()
