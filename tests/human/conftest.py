"""Fixtures of the human-evaluation tests: studies built from real Tux Paint sounds and pictures,
and the app served by a real uvicorn process on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import browser  # noqa: F401  (the Chromium fixture, for test_browser.py)
from multi2cap.data.manifest import write_manifest
from multi2cap.human.store import StudyStore, open_study_db
from multi2cap.human.study import CreatedStudy, create_study
from stamp_manifests import stamp_records, write_stamp_manifest


@pytest.fixture(scope="session")
def stamp_manifest(tuxpaint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight real stamps (sound, picture, two captions each), split `test`."""
    return write_stamp_manifest(tuxpaint_dir, tmp_path_factory.mktemp("stamps") / "m.jsonl")


#: The stamps whose sounds last under 3 s (the browser tests listen to every clip to the end).
SHORT_STAMPS = ("frog", "crow", "cuckoo", "owl", "penguin")


@pytest.fixture(scope="session")
def short_manifest(tuxpaint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = [r for r in stamp_records(tuxpaint_dir, "test") if r.id in SHORT_STAMPS]
    return write_manifest(records, tmp_path_factory.mktemp("short") / "m.jsonl")


@pytest.fixture
def make_study(stamp_manifest: Path, tmp_path: Path) -> Callable[..., CreatedStudy]:
    """`make_study(kind, manifest=..., **create_study options)`: a study under tmp_path."""
    counter = iter(range(1000))

    def make(kind: str = "mos", manifest: Path | None = None, **options: Any) -> CreatedStudy:
        options.setdefault("n", 5)
        options.setdefault("raters", ["alice", "bob"])
        folder = tmp_path / f"study{next(counter)}"
        return create_study(kind, manifest or stamp_manifest, folder, **options)  # type: ignore[arg-type]

    return make


class DirectStore:
    """A StudyStore on its own connection, each call one committed transaction (for unit tests)."""

    def __init__(self, study: Path) -> None:
        self.conn = open_study_db(study)
        self.store = StudyStore(self.conn)

    def __call__(self, method: str, *args: Any) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = getattr(self.store, method)(*args)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    def rater(self, name: str) -> int:
        return int(self.conn.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()[0])

    def count_answers(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])


@pytest.fixture
def open_direct() -> Iterator[Callable[[Path], DirectStore]]:
    """Open a study's database directly (closed after the test)."""
    opened: list[DirectStore] = []

    def open_(study: Path) -> DirectStore:
        opened.append(DirectStore(study))
        return opened[-1]

    yield open_
    for direct in opened:
        direct.conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """`multi2cap human serve STUDY` in its own process, on a free loopback port."""

    def __init__(self, study: Path, log: Path, options: tuple[str, ...] = ()) -> None:
        self.study = study
        self.options = options
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "multi2cap.cli.main", "human", "serve", str(self.study)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port), *self.options],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in 60 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[[Path], LiveServer]]:
    servers: list[LiveServer] = []

    def start(study: Path, *options: str) -> LiveServer:
        server = LiveServer(study, tmp_path / f"server{len(servers)}.log", options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
