"""Crash-safe file writing shared by every long job (stores, manifests, checkpoints, reports),
and the one way outputs that cannot be written are reported.

Every write here (`atomic_write_bytes`, `append_jsonl`, `make_folder`) raises `OutputPathError`
naming the file when the system refuses it (a folder where a file goes, a file where a folder is
needed, no permission, a full disk), and `check_output` refuses such a path before a command
does any work. The CLI maps `OutputPathError` to exit code 2 (bad input; `cli/errors.py`): the
command could not use the path it was given, which is no bug of the program.

This module sits below every other one (it imports only `multi2cap.fsnames`, which imports
nothing), so `media` and `metrics` may use it without breaking the one-way dependency rule.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from multi2cap.fsnames import printable


class OutputPathError(OSError):
    """An output that cannot be written: `path` names it, the message says what was found.

    `problem` is a description or the `OSError` the system raised (its `errno` is kept, so a
    caller can still tell a full disk from a misplaced file). `advice` is the next step shown
    after the problem (subclasses set their own)."""

    advice = "fix the path (or free the disk) and rerun"

    def __init__(
        self, path: str | os.PathLike[str], problem: str | OSError, advice: str | None = None
    ) -> None:
        self.path = Path(path)
        self.problem = problem
        cause = isinstance(problem, OSError)
        what = f"{type(problem).__name__}: {problem}" if cause else problem
        if advice is not None:
            self.advice = advice
        super().__init__(f"could not write {printable(self.path)} ({what}); {self.advice}")
        self.errno = problem.errno if isinstance(problem, OSError) else None

    def __reduce__(self) -> tuple[Any, ...]:
        # The constructor's arguments, picklable (errors cross worker processes).
        return (type(self), (self.path, self.problem, self.advice))


@contextmanager
def writing(
    path: str | os.PathLike[str], error: type[OutputPathError] = OutputPathError
) -> Iterator[None]:
    """Raise an `OSError` of the block as `error(path, the OSError)`: a write the system refuses
    names no file by itself (a full disk), or names a temporary one. An `OutputPathError` from
    within keeps its own path and becomes an `error`."""
    try:
        yield
    except OutputPathError as err:
        if isinstance(err, error):
            raise
        raise error(err.path, err.problem) from err
    except OSError as err:
        raise error(path, err) from err


OutputKind = Literal["file", "folder"]


def check_output(
    path: str | os.PathLike[str], kind: OutputKind = "file", option: str | None = None
) -> Path:
    """`path` if a command can write it, else `OutputPathError` saying why, before any work.

    A `file` must not be an existing folder, a `folder` not an existing file; folders above it
    that are missing are fine (writes create them), but the nearest existing one must be a
    folder this process may write in (not a file, not read-only). `option` (`--out`) is named
    in the message, so the user sees which option to change."""
    target = Path(path)
    named = f"{option}: " if option else ""
    advice = "give another path"
    if kind == "file" and target.is_dir():
        example = printable(target / "out")
        problem = f"{named}a folder, not a file; name a file in it, e.g. {example}"
        raise OutputPathError(target, problem, advice)
    if kind == "folder" and target.exists() and not target.is_dir():
        raise OutputPathError(target, f"{named}a file, not a folder", advice)
    above = target.parent if kind == "file" or not target.exists() else target
    while not above.exists() and not above.is_symlink() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        problem = f"{named}{printable(above)} is a file, not a folder"
        raise OutputPathError(target, problem, advice)
    if not os.access(above, os.W_OK | os.X_OK):
        problem = f"{named}no permission to write in {printable(above)}"
        raise OutputPathError(target, problem, advice)
    return target


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create folder `path` (and its parents) unless it exists; `OutputPathError` if refused."""
    target = Path(path)
    with writing(target):
        target.mkdir(parents=True, exist_ok=True)
    return target


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`.

    A reader (or a rerun after SIGKILL) sees either the old file or the new one, never a torn one.
    Missing parent folders are created. A write the system refuses raises `OutputPathError`
    naming `path` (not the temporary file).
    """
    target = Path(path)
    with writing(target):
        _atomic_write(target, data)
    _fsync_dir(target.parent)


def _atomic_write(target: Path, data: bytes) -> None:
    if target.is_dir():  # os.replace would name the temporary file in its error
        raise OutputPathError(target, "a folder, not a file", "give another path")
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
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not payload:
        return
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())


class JsonlFormatError(ValueError):
    """A JSONL line that is not a JSON object; the message names the file and line."""


def read_jsonl(
    path: str | os.PathLike[str], *, skip_torn_tail: bool = True
) -> Iterator[dict[str, Any]]:
    """Yield the records (JSON objects) of a JSONL file.

    A last line without its newline (a write cut short by a crash) is skipped when
    `skip_torn_tail`; any other malformed line, and any line holding something else than an
    object (an array, a string), raises `JsonlFormatError` naming the file and line.
    """
    target = Path(path)
    with open(target, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last = number == len(lines)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if is_last and skip_torn_tail and not line.endswith("\n"):
                return
            where = f"{printable(target)}:{number}"
            raise JsonlFormatError(f"{where}: malformed JSON line ({err.msg})") from err
        if not isinstance(record, dict):
            where = f"{printable(target)}:{number}"
            raise JsonlFormatError(f"{where}: expected a JSON object, found {type_name(record)}")
        yield record


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
