"""The builder attacks of issue 26 (items 1 and 2), measured: what a trickling, huge or looping
endpoint costs a VggCaps build. The review's figures are the "before"; run this script once with
this tree and once with `PYTHONPATH` pointing at an older `src/` to compare (it only uses options
both know).

1. `trickle`: one request whose answer arrives one byte every `--trickle-s` (1 s), against
   `--timeout` (3 s), no retries: seconds until the request is given up (review: 40.6 s).
2. `fifth`: `--clips` clips (16) where every fifth reply trickles, `--max-retries 1`: build time
   (review: 272.6 s, against 2.3 s with no trickling).
3. `collapse`: CPU seconds of post-processing one 1-MB looping reply (review: 3.55 s).
4. `huge`: one `--huge-mb` (20) MB reply of junk, then normal ones: build time and peak RSS
   (review: the build froze for 300 s at 1.2 GB).
5. `loop`: `--clips` clips whose first stage-1 reply loops "la la la ..." to the 300-token cap:
   clips whose stage-1 or final caption still holds a "la" (review: 7 of 16).
6. `rejected`: 10 rejected `--reject-mb` (5) MB replies: bytes of work and output files
   (review: 50 MB).

The loopback server (tests/vggcaps/openai_loopback.py) runs in a separate process, so RSS is
the client's. Each attack runs in a thread bounded by `--deadline` (600 s): one that does not end
is reported as such. Tiny check: `--trickle-s 0.02 --timeout 0.3 --clips 5 --huge-mb 1
--reject-mb 0.2 --deadline 60`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "vggcaps"))

from openai_loopback import LoopbackServer  # noqa: E402
from vgg_helpers import clip_items, make_extracted  # noqa: E402

from multi2cap.io import read_jsonl  # noqa: E402
from multi2cap.vggcaps import postprocess  # noqa: E402
from multi2cap.vggcaps.backends import OpenAISettings  # noqa: E402
from multi2cap.vggcaps.pipeline import build_vggcaps  # noqa: E402
from multi2cap.vggcaps.records import BuildConfig  # noqa: E402

API_KEY = "sk-bench-attacks"
KEY_ENV = "M2C_BENCH_KEY"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _serve(conn: Any, faults: list[str], trickle_s: float, huge_bytes: int) -> None:
    server = LoopbackServer(API_KEY)
    server.state.record = False
    server.state.faults.extend(faults)
    server.state.trickle_s, server.state.huge_bytes = trickle_s, huge_bytes
    with server:
        conn.send(server.base_url)
        conn.recv()


def attack(
    faults: list[str], clips: int, args: argparse.Namespace, **openai: Any
) -> dict[str, Any]:
    """Caption `clips` pre-extracted clips against a loopback server answering with `faults`
    (one per request, "ok" for a normal answer); returns wall s, peak RSS, the summary, and the
    output folder's files (read before the folder goes)."""
    parent, child = multiprocessing.Pipe()
    context = multiprocessing.get_context("fork")
    huge = int(args.huge_mb * 1e6)
    server = context.Process(target=_serve, args=(child, faults, args.trickle_s, huge), daemon=True)
    server.start()
    base_url = parent.recv()
    os.environ[KEY_ENV] = API_KEY
    result: dict[str, Any] = {"rss_peak": rss_mb()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            result["rss_peak"] = max(result["rss_peak"], rss_mb())

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        make_extracted(out, clip_items(clips))
        settings = {
            "base_url": base_url,
            "api_key_env": KEY_ENV,
            "concurrency": 4,
            "timeout_s": args.timeout,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.02,
        } | openai
        config = BuildConfig(
            out=out,
            backend="openai",
            openai=OpenAISettings(**settings),
            steps=("caption", "split"),
            progress=False,
        )
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        done = threading.Event()

        def run() -> None:
            try:
                result["summary"] = build_vggcaps(config)
            except Exception as err:  # reported, not raised: the next attack still runs
                result["error"] = f"{type(err).__name__}: {err}"
            done.set()

        start = time.perf_counter()
        threading.Thread(target=run, daemon=True).start()
        finished = done.wait(args.deadline)
        result["wall_s"] = time.perf_counter() - start
        result["finished"] = finished
        stop.set()
        if finished:
            captions = out / "vggcaps.jsonl"
            records = list(read_jsonl(captions))
            result["captions"] = [f"{r['raw_caption']} {r['caption']}" for r in records]
            result["bytes"] = sum(p.stat().st_size for p in out.rglob("*.jsonl"))
    parent.send("stop")
    server.join(timeout=10)
    return result


def report(name: str, result: dict[str, Any], extra: str = "") -> None:
    if not result["finished"]:
        print(f"{name}: still running after {result['wall_s']:.0f} s (not finished)")
        return
    summary = result.get("summary")
    counts = f"failed {summary.failed}, retries {summary.retries}" if summary else result["error"]
    print(
        f"{name}: {result['wall_s']:.1f} s, peak RSS {result['rss_peak']:.0f} MiB, {counts}"
        + (f"; {extra}" if extra else "")
    )


def cpu_seconds(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trickle-s", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--huge-mb", type=float, default=20.0)
    parser.add_argument("--reject-mb", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=600.0)
    parser.add_argument(
        "--only", nargs="*", default=["trickle", "fifth", "collapse", "huge", "loop", "rejected"]
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; multi2cap from {postprocess.__file__}")
    n = args.clips
    if "trickle" in args.only:
        result = attack(["trickle"], 1, args, max_retries=0, concurrency=1)
        report(f"1 trickling request, --timeout {args.timeout:g}", result)
    if "fifth" in args.only:
        faults = ["trickle" if i % 5 == 4 else "ok" for i in range(4 * n)]
        report(f"{n} clips, every 5th reply trickling", attack(faults, n, args, max_retries=1))
        report(f"{n} clips, no trickling", attack([], n, args, max_retries=1))
    if "collapse" in args.only:
        looping = "A dog barks in the yard. " + "la " * 333_000
        seconds = cpu_seconds(lambda: postprocess.postprocess(looping, "dog barking", 1))
        print(f"post-processing a 1-MB looping reply: {seconds:.2f} CPU s")
        # growth for 8x the input: about 8 when linear, 64 when quadratic (the review's
        # collapse: 38-50x; a run of spaces after '>' backtracked in the prefix pattern)
        for name, make, n in (
            ("one looping word", lambda k: "la " * k, 25_000),
            ("a six-word loop", lambda k: "a b c d e f " * (k // 6), 25_000),
            ("spaces after '>'", lambda k: ">" + " " * k + "A dog barks.", 500),
        ):
            small, large = make(n), make(8 * n)
            grow = cpu_seconds(lambda t=large: postprocess.clean(t)) / max(
                cpu_seconds(lambda t=small: postprocess.clean(t)), 1e-4
            )
            print(f"post-processing growth for 8x the input ({name}): {grow:.1f}x CPU time")
    if "huge" in args.only:
        result = attack(["huge"], 2, args, max_retries=1)
        report(f"a {args.huge_mb:g}-MB reply among 2 clips", result)
    if "loop" in args.only:
        faults = ["loop" if i % 2 == 0 else "ok" for i in range(2 * n)]
        result = attack(faults, n, args, max_retries=1, concurrency=1)
        looped = sum(bool(re.search(r"\bla\b", c)) for c in result.get("captions", []))
        report(f"{n} clips whose first reply loops to the cap", result, f"{looped} kept a 'la'")
    if "rejected" in args.only:
        args.huge_mb = args.reject_mb
        result = attack(["huge"] * 10, 4, args, max_retries=1, concurrency=1)
        kept = result.get("bytes", 0) / 1e6
        report(f"10 rejected {args.reject_mb:g}-MB replies", result, f"{kept:.2f} MB of .jsonl")


if __name__ == "__main__":
    main()
