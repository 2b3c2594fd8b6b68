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
dies is simply redone on the next run. A write that fails (disk full, I/O error) raises
`StoreWriteError` naming the file, at once: the build stops sending requests it could not keep.
The other writes of a build (each clip's media on a full disk, the final files of the split
step, `last_run.json`, the lock) raise it too, through `writing(path)`: a write to a full disk
names no file by itself, and used to end as an internal error (exit 3) or, during extraction,
as one failure record per clip.

A process killed in the middle of an append can leave a torn last line; `Store.cut_torn_tails`
(run when a build opens the folder) cuts it off, keeping the fragment in `<file>.torn-<time>`
beside it, so the next append does not bury it mid-file. `FolderLock` keeps a second build off
a folder that one is already writing.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from multi2cap.io import OutputPathError, append_jsonl, read_jsonl
from multi2cap.io import writing as io_writing

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


# errors that will be the same for every later write to the output folder: the build stops
OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class StoreWriteError(OutputPathError):
    """Writing to the output folder failed (a work file, a clip's media, a final file); `path`
    names the file. What was written before is kept. The CLI exits 2 with this message: the
    folder cannot be used as it is (README's exit codes)."""

    advice = (
        "the build stopped, everything written before is kept: free the disk or fix the folder "
        "and rerun"
    )


def writing(path: Path) -> AbstractContextManager[None]:
    """Raise an `OSError` of the block as a `StoreWriteError` naming `path`."""
    return io_writing(path, StoreWriteError)


class FolderLockedError(ValueError):
    """Another build holds the output folder's lock."""


class Store:
    """Paths and readers of the work files of one output folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.work_dir = self.out_dir / "work"

    def require_work_dir(self) -> None:
        """Raise `FileNotFoundError` (with the next step) when nothing was extracted here."""
        if not self.work_dir.is_dir():
            raise FileNotFoundError(
                f"{self.work_dir} not found: run `multi2cap vggcaps extract` or `build` into "
                f"{self.out_dir} first"
            )

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
        path = self.path(name)
        with writing(path):
            append_jsonl(path, records)

    def cut_torn_tails(self) -> list[Path]:
        """Cut a torn last line (no final newline) off every work file, keeping the fragment
        in `<file>.torn-<UTC time>`; returns the fragment files written."""
        kept = []
        for name in STAGE_FILES.values():
            path = self.work_dir / name
            with writing(path):
                if path.is_file() and (fragment := _cut_torn_tail(path)) is not None:
                    kept.append(fragment)
        return kept


def _cut_torn_tail(path: Path) -> Path | None:
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        # read back from the end until the last newline (a torn line is at most one record)
        start, chunk = size, 1 << 16
        while start > 0:
            start = max(0, start - chunk)
            handle.seek(start)
            block = handle.read(size - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                start += cut + 1
                break
        handle.seek(start)
        fragment = handle.read()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        kept = path.with_name(f"{path.name}.torn-{stamp}")
        kept.write_bytes(fragment)
        handle.truncate(start)
        handle.flush()
        os.fsync(handle.fileno())
    return kept


class FolderLock:
    """An exclusive `flock` on `<out>/work/build.lock`, which holds the owner's pid, host and
    start time. The kernel drops the lock when the owner exits, even by SIGKILL, so a stale
    file never blocks a rerun; a second build raises `FolderLockedError` saying who holds it."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / "work" / "build.lock"
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(
                f"{self.path.parent.parent} is in use by another build ({owner}); wait for it "
                "to end or stop it, then rerun (two builds on one folder pay twice)"
            ) from None
        started = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0
            )
        except OSError as err:
            os.close(fd)
            raise StoreWriteError(self.path, err) from err
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


class BufferedAppender:
    """Collects records per stage file and appends them from a worker thread, one fsync per group.

    `put` never blocks on disk; `aclose` flushes everything that is pending. After a failed
    write, `put` and `check` raise the `StoreWriteError` (the caption workers call `check`
    before every request, so no request is paid for a record that cannot be kept) and
    `failed` is set for whoever waits on it.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.error: StoreWriteError | None = None
        self.failed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, name: str, record: dict[str, Any]) -> None:
        self.check()
        self._pending.setdefault(name, []).append(record)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            for name, records in pending.items():
                try:
                    await asyncio.to_thread(self._store.append, name, records)
                except StoreWriteError as err:
                    self.error = err
                    self.failed.set()
                    return
            if self._closing and not self._pending:
                return

    async def aclose(self) -> None:
        """Flush what is pending; raises the write error if there was one."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self.check()
