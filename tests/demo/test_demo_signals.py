"""SIGTERM to the demo reaches its job processes instead of leaving them running unattended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

JOBS = '''
import signal, time
from pathlib import Path


def wait_for_term(folder: str) -> str:
    """A stand-in for a trainer's own handling: on SIGTERM, note it and return."""
    got = []
    signal.signal(signal.SIGTERM, lambda *_: got.append(1))
    (Path(folder) / "ready").write_text("1")
    end = time.monotonic() + 30
    while not got and time.monotonic() < end:
        time.sleep(0.05)
    (Path(folder) / "result").write_text("SIGTERM" if got else "timeout")
    return "done"
'''

DEMO = """
import sys
from pathlib import Path

from rich.console import Console

import jobs
from multi2cap.demo.config import DemoConfig
from multi2cap.demo.training import DemoStopped, _run_jobs

if __name__ == "__main__":
    root = Path(sys.argv[1])
    config = DemoConfig(workdir=root, progress=False)
    named = [(name, jobs.wait_for_term, (str(root / name),), []) for name in ("a", "b")]
    try:
        _run_jobs(config, named, Console())
    except DemoStopped as stopped:
        print("STOPPED:", stopped)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_to_the_demo_reaches_its_jobs_and_stops_it(tmp_path):
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS))
    (tmp_path / "demo.py").write_text(textwrap.dedent(DEMO))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "demo.py"), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = [tmp_path / name / "ready" for name in ("a", "b")]
    deadline = time.monotonic() + 120
    while not all(p.is_file() for p in ready) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(p.is_file() for p in ready), "the jobs did not start"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    results = [(tmp_path / name / "result").read_text() for name in ("a", "b")]
    assert results == ["SIGTERM", "SIGTERM"], output  # both jobs got it, neither ran on
    assert process.returncode == 0 and "STOPPED: stopped by SIGTERM" in output, output
