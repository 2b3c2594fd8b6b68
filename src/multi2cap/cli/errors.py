"""Exit codes of every `multi2cap` command, and the one place that turns exceptions into them.

| code | meaning |
|---|---|
| 0 | success |
| 1 | the job ran, but some items failed (each one listed, e.g. in `failures.jsonl`) |
| 2 | bad input: a usage error, a missing or malformed file, a missing asset, an output path |
|   | that cannot be written (a folder where a file goes, a file where a folder is needed, no |
|   | permission, a full disk); the message names the file and what was found |
| 3 | internal error: an exception nobody expected; one line on screen names a log file that |
|   | holds the traceback |

Commands say "bad input" by raising `BadInputError` (or one of the typed errors in
`BAD_INPUT_ERRORS`, such as `AssetNotFoundError` or `ConfigError`), and "some items failed" by
`raise typer.Exit(EXIT_ITEMS_FAILED)`. `GuardedGroup` is the root group's class: it wraps the
invocation of every command of every group (those registered later included, without edits to
them), so an uncaught exception can never exit 1, which would read as "some items failed".

The crash log holds the command line, versions and traceback, with secrets removed: values of
environment variables whose names look secret (`*KEY*`, `*TOKEN*`, ...) and strings shaped like
API keys (`sk-...`, `Bearer ...`) are replaced by `***`. Its folder is `$MULTI2CAP_LOG_DIR`, else
`$XDG_STATE_HOME/multi2cap/logs` (`~/.local/state/multi2cap/logs`), else the temp folder.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from multi2cap.fsnames import printable

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3

LOG_DIR_ENV = "MULTI2CAP_LOG_DIR"

# Typed errors whose message already says what was wrong with the input and how to fix it.
# Named, not imported: the guard must not load torch or httpx to classify an exception, and a
# subclass matches through its MRO.
BAD_INPUT_ERRORS = frozenset(
    {
        "multi2cap.assets.AssetNotFoundError",
        "multi2cap.train.config.ConfigError",
        "multi2cap.metrics.files.CaptionFileError",
        "multi2cap.metrics.resources.MetricUnavailableError",
        "multi2cap.data.readers.common.DatasetFormatError",
        "multi2cap.vggcaps.catalog.CatalogError",
        "multi2cap.llm_client.settings.BackendConfigError",
        "multi2cap.media.errors.MediaError",
        "multi2cap.io.OutputPathError",  # an output that cannot be written (vggcaps' included)
        "multi2cap.io.JsonlFormatError",
        "multi2cap.model.config.CheckpointFileError",
        "multi2cap.human.store.StudyDatabaseError",
    }
)

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
_SECRET_SHAPES = (
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys
    re.compile(r"\bhf_[A-Za-z0-9]{8,}"),  # Hugging Face tokens
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
)


class BadInputError(Exception):
    """The command cannot start on this input; the message says what was found and what to do."""


def bad_input(message: str) -> NoReturn:
    """Print `error: message` and exit with `EXIT_BAD_INPUT` (through `GuardedGroup`)."""
    raise BadInputError(message)


def is_bad_input(error: BaseException) -> bool:
    """Whether `error` is a typed input error (see `BAD_INPUT_ERRORS`) or `BadInputError`."""
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(error).__mro__}
    return isinstance(error, BadInputError) or not names.isdisjoint(BAD_INPUT_ERRORS)


def redact_secrets(text: str, environ: dict[str, str] | None = None) -> str:
    """`text` with secret-looking environment values and key-shaped strings replaced by `***`."""
    env = os.environ if environ is None else environ
    values = sorted(
        (v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= 6),
        key=len,
        reverse=True,
    )
    for value in values:
        text = text.replace(value, "***")
    for pattern in _SECRET_SHAPES:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + "***", text)
    return text


def log_dir() -> Path:
    """Folder of the crash logs (see the module docstring for the order of choices)."""
    override = os.environ.get(LOG_DIR_ENV)
    if override:
        return Path(override)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "multi2cap" / "logs"


def write_crash_log(error: BaseException, argv: list[str] | None = None) -> Path:
    """Write the traceback of `error` (secrets removed) to a new file and return its path."""
    from multi2cap import __version__

    argv = sys.argv if argv is None else argv
    text = "".join(
        [
            f"multi2cap {__version__}, Python {platform.python_version()}, {platform.platform()}\n",
            f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}, pid {os.getpid()}\n",
            f"command: {' '.join(argv)}\n\n",
            *traceback.format_exception(error),
        ]
    )
    text = redact_secrets(text)
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir()) / "multi2cap-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(printable(text), encoding="utf-8")
            return path
        except OSError:
            continue
    raise OSError("no writable folder for the crash log")  # both folders refused


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _echo_error(message: str) -> None:
    typer.secho(f"error: {printable(message)}", fg="red", err=True)


class GuardedGroup(TyperGroup):
    """The root command group: maps every exception of every command to an exit code.

    Typer's own exits (`typer.Exit`, usage errors = 2, Ctrl-C = 130) pass through unchanged.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.TyperException, typer.Abort, KeyboardInterrupt, EOFError):
            raise  # Typer's own exits: usage errors = 2, Ctrl-C = 130
        except Exception as error:
            if isinstance(error, OSError) and error.errno == errno.EPIPE:
                raise  # `multi2cap ... | head`: Typer's own handling exits quietly
            if is_bad_input(error):
                _echo_error(redact_secrets(str(error)))
                raise typer.Exit(EXIT_BAD_INPUT) from None
            _internal(error)


def _internal(error: Exception) -> NoReturn:
    summary = redact_secrets(_one_line(f"{type(error).__name__}: {error}"))
    try:
        where = f"traceback in {write_crash_log(error)}"
    except OSError as log_error:
        where = f"no crash log written ({log_error})"
    _echo_error(f"internal error ({summary}); {where}")
    raise typer.Exit(EXIT_INTERNAL) from None
