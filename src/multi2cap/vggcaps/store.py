"""The resumable store: one append-only, fsynced JSONL file per stage under `<out>/work/`.

- `extract.jsonl`: one record per clip whose media were written (media files are written
  atomically before their record is appended, so a record always points at whole files);
- `stage1.jsonl`, `stage2.jsonl`: one record per accepted caption, keyed by `key` (clip id,
  stage, prompt version, backend, model), so a rerun skips exactly the finished work and a change
  of prompt or model redoes it;
- `failures_log.jsonl`: every failure of every run, with its reason (the final `failures.jsonl`
  is derived from it: clips that are still unfinished, latest reason);
- `batches.jsonl`: Batch API submissions, so a rerun polls a submitted batch instead of paying
  for it twice.

Records are appended by a background writer in groups (one fsync per group), which keeps the
event loop free at hundreds of requests per second; a record not yet flushed when the process
dies is simply redone on the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from multi2cap.io import append_jsonl, read_jsonl

STAGE_FILES = {
    "extract": "extract.jsonl",
    "stage1": "stage1.jsonl",
    "stage2": "stage2.jsonl",
    "failures": "failures_log.jsonl",
    "batches": "batches.jsonl",
}


def stage_key(clip_id: str, stage: int, prompt_version: str, backend: str, model: str) -> str:
    """The resume key of one caption request."""
    return f"{clip_id}|s{stage}|{prompt_version}|{backend}|{model}"


class Store:
    """Paths and readers of the work files of one output folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.work_dir = self.out_dir / "work"

    def path(self, name: str) -> Path:
        return self.work_dir / STAGE_FILES[name]

    def records(self, name: str) -> Iterator[dict[str, Any]]:
        path = self.path(name)
        return read_jsonl(path) if path.is_file() else iter(())

    def by_key(self, name: str, field: str = "key") -> dict[str, dict[str, Any]]:
        """Records of a stage file indexed by `field`; the first record of a key wins (a later
        duplicate can only come from two processes racing on one folder)."""
        out: dict[str, dict[str, Any]] = {}
        for record in self.records(name):
            out.setdefault(record[field], record)
        return out

    def append(self, name: str, records: list[dict[str, Any]]) -> None:
        append_jsonl(self.path(name), records)


class BufferedAppender:
    """Collects records per stage file and appends them from a worker thread, one fsync per group.

    `put` never blocks on disk; `aclose` flushes everything that is pending.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def put(self, name: str, record: dict[str, Any]) -> None:
        self._pending.setdefault(name, []).append(record)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            for name, records in pending.items():
                await asyncio.to_thread(self._store.append, name, records)
            if self._closing and not self._pending:
                return

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
