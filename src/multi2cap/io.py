"""Crash-safe file writing shared by every long job (stores, manifests, checkpoints, reports).

This module sits below every other one (it imports nothing of multi2cap), so `media` and `metrics`
may use it without breaking the one-way dependency rule.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`.

    A reader (or a rerun after SIGKILL) sees either the old file or the new one, never a torn one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 & ~umask).
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Write all `records` as JSON lines, atomically."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path, lines)


def append_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Append records to a JSONL file and fsync before returning.

    Each record is one `write` of a whole line; a crash can at worst leave a partial last line,
    which `read_jsonl` skips.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not payload:
        return
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(
    path: str | os.PathLike[str], *, skip_torn_tail: bool = True
) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file.

    A last line without its newline (a write cut short by a crash) is skipped when
    `skip_torn_tail`; any other malformed line raises `ValueError` naming the file and line.
    """
    target = Path(path)
    with open(target, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last = number == len(lines)
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            if is_last and skip_torn_tail and not line.endswith("\n"):
                return
            raise ValueError(f"{target}:{number}: malformed JSON line ({err.msg})") from err


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary sibling of the folder `path` to fill; when the block ends without
    error it is renamed to `path` (an existing folder there is replaced only then), otherwise it
    is removed. So a folder at `path` is always a whole one: a crash or a kill leaves at most a
    hidden `.NAME.tmp-PID` sibling, which the next write to `path` by that process id clears."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def type_name(value: Any) -> str:
    """What a value is, for errors that say what they found: `dict`, `str`, `list[int]` (a
    non-empty list or tuple shows its first element's type)."""
    name = type(value).__name__
    if isinstance(value, list | tuple) and value:
        return f"{name}[{type(value[0]).__name__}]"
    return name
