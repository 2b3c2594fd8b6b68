"""The server attacks of issue 26 (items 4 and 5), measured against `multi2cap serve` in its own
process on loopback. The review's figures are the "before"; run this script once with this tree
and once with `PYTHONPATH` pointing at an older `src/` to compare (the server is started with
options both know, plus `--serve-args`).

1. `bomb`: one upload of 1 MB of FLAC holding 595 s of 192 kHz x 8 channels of silence: the
   answer and the server's peak RSS (review: 4.2 GB, 7.4 GB in another run, then 500).
2. `fast`: the same at 655,350 Hz (FLAC's highest rate): answer and peak RSS (review: the
   decoder asked for 11.6 GiB).
3. `slowloris`: `--slow` (600) connections that send a request line, then one header line every
   `--every-s` (5 s) for `--hold-s` (60 s): how many the server closed, and how many of
   `--normal` (9) ordinary requests sent meanwhile failed (review: 0 of 600 closed; with 1,100
   connections against a 1,024-descriptor limit, `--slow 1100 --server-fds 1024`, 9 of 9
   failed for 45 s).

The uploads are written directly as FLAC (`tests/media/media_helpers.py`, a fraction of a
second; libFLAC takes 30 s). Peak RSS is the server process's `VmHWM`. An old tree really
allocates the gigabytes: run it where that is harmless. Tiny check (this tree):
`--bomb-s 5 --slow 20 --every-s 0.2 --hold-s 3 --normal 2 --serve-args="--header-timeout-s 1"`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "media"), str(REPO / "tests" / "model")]

from media_helpers import write_silent_flac  # noqa: E402
from multi2cap_testkit import tiny  # noqa: E402

from slow_clients import open_slow, trickle_until_closed  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`multi2cap serve` on a tiny checkpoint, in its own process (a fresh one per attack, so
    that each peak RSS is its own)."""

    def __init__(self, checkpoint: Path, extra: list[str], fds: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fds, fds))) if fds else None
        command = [sys.executable, "-m", "multi2cap.cli.main", "serve", "-c", str(checkpoint)]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port), *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=limit,
        )
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited at start")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in 180 s")
            time.sleep(0.2)
        self.start_rss = peak_rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def upload(server: Server, path: Path) -> str:
    files = [("file", (path.name, path.read_bytes(), "audio/flac"))]
    start = time.monotonic()
    try:
        reply = httpx.post(f"{server.url}/v1/captions", files=files, timeout=600)
        answer = f"{reply.status_code} {reply.text[:160]}"
    except httpx.HTTPError as err:
        answer = f"no answer ({type(err).__name__})"
    peak = peak_rss_mb(server.proc.pid) if server.proc.poll() is None else float("nan")
    return (
        f"{path.stat().st_size / 1e6:.2f} MB upload -> {answer}; server peak RSS {peak:.0f} MB "
        f"(at start {server.start_rss:.0f} MB); {time.monotonic() - start:.1f} s"
    )


def slowloris(server: Server, args: argparse.Namespace) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the client needs the fds
    clients, refused = [], 0
    for _ in range(args.slow):
        try:
            clients += open_slow(server.port, 1, "header", "/healthz")
        except OSError:
            refused += 1
    failures: list[str] = []

    def normal() -> None:
        for _ in range(args.normal):
            try:
                httpx.get(f"{server.url}/healthz", timeout=10).raise_for_status()
            except httpx.HTTPError as err:
                failures.append(type(err).__name__)
            time.sleep(args.hold_s / max(args.normal, 1))

    worker = threading.Thread(target=normal)
    worker.start()
    trickle_until_closed(clients, tick_s=args.every_s, within_s=args.hold_s)
    worker.join()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    closed = [c for c in clients if c.lived_s is not None]
    lived = sorted(c.lived_s for c in closed)
    median = f", median life {lived[len(lived) // 2]:.1f} s" if lived else ""
    return (
        f"{len(closed)} of {len(clients)} slow connections closed by the server within "
        f"{args.hold_s:g} s{median} ({refused} refused at connect); {len(failures)} of "
        f"{args.normal} normal requests failed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default="bomb,fast,slowloris")
    parser.add_argument("--bomb-s", type=float, default=595.0, help="seconds of the uploads")
    parser.add_argument("--slow", type=int, default=600)
    parser.add_argument("--every-s", type=float, default=5.0)
    parser.add_argument("--hold-s", type=float, default=60.0)
    parser.add_argument("--normal", type=int, default=9)
    parser.add_argument("--server-fds", type=int, default=None, help="the server's fd limit")
    parser.add_argument("--serve-args", default="", help="more `multi2cap serve` options")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-attacks-") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        checkpoint = tiny().save_pretrained(root / "ckpt")
        extra = shlex.split(args.serve_args)
        uploads = {
            "bomb": (192_000, 8, 4096),
            "fast": (655_350, 8, 4096),
        }
        for attack in args.attacks.split(","):
            server = Server(checkpoint, extra, args.server_fds if attack == "slowloris" else None)
            try:
                if attack in uploads:
                    rate, channels, block = uploads[attack]
                    path = write_silent_flac(
                        root / f"{attack}.flac", rate, channels, args.bomb_s, block=block
                    )
                    print(f"{attack}: {upload(server, path)}", flush=True)
                else:
                    print(f"{attack}: {slowloris(server, args)}", flush=True)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
