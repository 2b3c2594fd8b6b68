"""Rich progress bars for long builds: ETA, clips/s, requests in flight, retries, dollars.

One `ProgressBoard` is one live display holding several bars (extraction and captioning run at
the same time in `build`); `StageProgress` is a board with a single bar.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from multi2cap.llm_client.chat import RunStats


class Bar:
    """One bar of a board; `advance` it as clips finish."""

    def __init__(
        self, progress: Progress, task: TaskID, stats: RunStats | None, enabled: bool
    ) -> None:
        self._progress, self._task, self._stats, self._enabled = progress, task, stats, enabled
        self._done = 0
        self._start = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self._done += n
        self._progress.update(self._task, advance=n)
        self.refresh()

    def info(self) -> str:
        """The figures shown after the bar: clips/s, and for LLM stages requests in flight,
        retries and dollars so far."""
        rate = self._done / max(time.monotonic() - self._start, 1e-9)
        text = f"{rate:.1f} clips/s"
        if self._stats is not None:
            text += (
                f" | in flight {self._stats.in_flight} | retries {self._stats.retries}"
                f" | ${self._stats.cost_usd:.2f}"
            )
        return text

    def refresh(self) -> None:
        if self._enabled:
            self._progress.update(self._task, info=self.info())


class ProgressBoard:
    """Context manager: one live display; a no-op when `enabled` is False."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bars: list[Bar] = []
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not enabled,
        )

    def bar(self, description: str, total: int, stats: RunStats | None = None) -> Bar:
        task = self._progress.add_task(description, total=total, info="")
        bar = Bar(self._progress, task, stats, self._enabled and total > 0)
        self._bars.append(bar)
        return bar

    def __enter__(self) -> ProgressBoard:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for bar in self._bars:
            bar.refresh()
        self._progress.stop()


class StageProgress:
    """A board with one bar, as a context manager."""

    def __init__(self, description: str, total: int, stats: RunStats | None, enabled: bool) -> None:
        self._board = ProgressBoard(enabled and total > 0)
        self._bar = self._board.bar(description, total, stats)

    def advance(self, n: int = 1) -> None:
        self._bar.advance(n)

    def info(self) -> str:
        return self._bar.info()

    def __enter__(self) -> StageProgress:
        self._board.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._board.__exit__(exc_type, exc, tb)
