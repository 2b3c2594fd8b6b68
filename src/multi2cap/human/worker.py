"""One thread owns the study's SQLite connection; the app's requests queue operations for it.

Why: SQLite has one writer at a time anyway, and a commit with `synchronous=FULL` costs one fsync
(~0.6 ms here). The thread takes every operation waiting in the queue, runs them in ONE
transaction (each inside its own SAVEPOINT, so a refused answer does not undo its neighbours),
commits once, and only then resolves the callers' futures: the reply to an answer is sent after
that answer is on disk (nothing acknowledged is lost to SIGKILL), and 50 concurrent raters cost
one fsync per batch instead of one per answer (group commit).
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from multi2cap.human.store import StudyStore, connect

T = TypeVar("T")
MAX_BATCH = 256
_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, asyncio.Future[Any]]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class StoreWorker:
    """Runs `fn(store, *args)` calls on the study database's own thread, batched per commit."""

    def __init__(self, db_path: str | os.PathLike[str], max_batch: int = MAX_BATCH) -> None:
        """`max_batch`: most operations per transaction (1 = a commit per answer, the benchmark's
        baseline)."""
        self.db_path = Path(db_path)
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="study-db", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` in the next batch; returns once its batch is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, loop, future))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            conn = connect(self.db_path)
            store = StudyStore(conn)
        except BaseException as err:  # reported to the constructor
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                batch = [job]
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)  # finish this batch, then stop
                        break
                    batch.append(nxt)
                self._run_batch(conn, store, batch)
        finally:
            conn.close()

    @staticmethod
    def _run_batch(conn: sqlite3.Connection, store: StudyStore, batch: list[_Job]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, _, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, fn(store, *args)))
                except Exception as err:
                    conn.execute("ROLLBACK TO op")
                    results.append((False, err))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as err:  # the commit (or BEGIN) failed: nothing of the batch is stored
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(False, err)] * len(batch)
        for (_, _, loop, future), (ok, value) in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_settle, future, ok, value)
