"""Benchmark: 50 simulated raters submitting MOS answers as fast as they can on loopback.

The issue's target on the development machine (2 shared CPU cores): >= 300 answers/s, p99
latency < 100 ms, and zero lost (answers stored == answers acknowledged). The server is the real
`multi2cap.human` app under uvicorn in its own process, on a study built from real Tux Paint
sounds (`--items` clips, listen check off: simulated raters do not listen). Each rater opens
their link, reads the CSRF token from the page, then loops POST /api/answer (each reply carries
the next item) over one keep-alive connection. The client is a minimal asyncio HTTP/1.1 client
(httpx would cost the shared CPUs more than the server does). Latency = request sent to reply
read, per answer. The same run is repeated with a commit per answer (`max_batch=1`) as the
baseline that shows what group commit buys.

    .venv/bin/python benchmarks/bench_human.py [--raters 50] [--seconds 30] [--baseline-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from multi2cap.assets import tuxpaint_stamps_dir
from multi2cap.data.manifest import ManifestRecord, write_manifest
from multi2cap.human.study import create_study

STAMPS = (
    "animals/birds/crow",
    "animals/birds/duck",
    "animals/amphibians/frog",
    "animals/insects/bee",
)
SERVER = """
import sys, uvicorn
from multi2cap.human.app import create_app
uvicorn.run(create_app(sys.argv[1], max_batch=int(sys.argv[3])), host="127.0.0.1",
            port=int(sys.argv[2]), access_log=False, log_level="warning")
"""


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if self.cookie:
            lines.append(f"Cookie: {self.cookie}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        reply_headers: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                reply_headers[name.strip().lower()] = value.strip()
        length = int(reply_headers.get("content-length", "0"))
        data = await self.reader.readexactly(length) if length else b""
        if "set-cookie" in reply_headers:
            self.cookie = reply_headers["set-cookie"].split(";", 1)[0]
        return int(status_line.split()[1]), reply_headers, data


async def rater(port: int, token: str, until: float, latencies: list[float]) -> int:
    """Answer as fast as possible until `until`; returns the answers acknowledged (200)."""
    conn = Connection(port)
    await conn.open()
    status, _, _ = await conn.request("GET", f"/r/{token}")
    assert status == 303, status
    _, _, page = await conn.request("GET", "/rate")
    csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()
    _, _, data = await conn.request("GET", "/api/state")
    state = json.loads(data)
    headers = {
        "Content-Type": "application/json",
        "X-CSRF-Token": csrf,
        "Origin": f"http://127.0.0.1:{port}",
    }
    acknowledged = 0
    while time.perf_counter() < until:
        if state["done"]:
            raise RuntimeError("a rater ran out of items before the end: raise --items")
        body = json.dumps({"key": state["item"]["key"], "score": 1 + acknowledged % 5}).encode()
        start = time.perf_counter()
        status, _, data = await conn.request("POST", "/api/answer", body, headers)
        latencies.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"answer refused ({status}): {data[:200]!r}")
        acknowledged += 1
        state = json.loads(data)["state"]
    conn.writer.close()
    return acknowledged


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_study(folder: Path, raters: int, items: int) -> tuple[Path, list[str]]:
    stamps = tuxpaint_stamps_dir()
    records = [
        ManifestRecord(
            id=f"clip{i:05d}",
            dataset="tuxpaint",
            split="test",
            audio=str((stamps / STAMPS[i % len(STAMPS)]).with_suffix(".ogg")),
            captions=[f"a sound number {i}"],
        )
        for i in range(items)
    ]
    manifest = write_manifest(records, folder / "manifest.jsonl")
    study = create_study(
        "mos",
        manifest,
        folder / "study",
        n=items,
        raters=[f"r{i:03d}" for i in range(raters)],
        listen_check=False,
    )
    return study.path, [link.rsplit("/", 1)[1] for link in study.links.values()]


def run(study: Path, tokens: list[str], seconds: float, max_batch: int) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(study), str(port), str(max_batch)])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.1)
        conn = sqlite3.connect(study / "study.sqlite")
        before = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        latencies: list[float] = []

        async def everyone() -> list[int]:
            until = time.perf_counter() + seconds
            return await asyncio.gather(*(rater(port, t, until, latencies) for t in tokens))

        start = time.perf_counter()
        acknowledged = sum(asyncio.run(everyone()))
        elapsed = time.perf_counter() - start
    finally:
        server.kill()  # SIGKILL: what was acknowledged must be on disk already
        server.wait()
    stored = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] - before
    conn.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "answers_per_s": acknowledged / elapsed,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * quantiles[98],
        "acknowledged": acknowledged,
        "stored": stored,
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--items", type=int, default=1200, help="items per rater (enough for 30 s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        study, tokens = make_study(Path(tmp), args.raters, args.items)
        print(
            f"study: {args.items} items x {args.raters} raters ({time.perf_counter() - start:.1f} s, not timed)"
        )
        fresh = Path(tmp) / "baseline"
        shutil.copytree(study, fresh)  # the baseline starts from the same untouched study
        results = {"group commit": run(study, tokens, args.seconds, max_batch=256)}
        if args.baseline_seconds > 0:
            results["commit per answer"] = run(fresh, tokens, args.baseline_seconds, max_batch=1)
    for name, r in results.items():
        lost = r["acknowledged"] - r["stored"]
        print(
            f"{name:18s} {r['answers_per_s']:7.1f} answers/s  p50 {r['p50_ms']:6.1f} ms  "
            f"p99 {r['p99_ms']:6.1f} ms  acknowledged {r['acknowledged']:.0f}  stored "
            f"{r['stored']:.0f}  lost {lost:.0f}  ({r['seconds']:.1f} s)"
        )
    if "commit per answer" in results:
        ratio = (
            results["group commit"]["answers_per_s"] / results["commit per answer"]["answers_per_s"]
        )
        print(f"group commit / commit per answer: {ratio:.2f}x answers/s")
    main_run = results["group commit"]
    ok = main_run["answers_per_s"] >= 300 and main_run["p99_ms"] < 100
    ok = ok and all(r["acknowledged"] == r["stored"] for r in results.values())
    print("target (>= 300 answers/s, p99 < 100 ms, zero lost):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
