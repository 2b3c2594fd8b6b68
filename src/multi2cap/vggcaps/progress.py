"""A rich progress bar for long builds: ETA, clips/s, requests in flight, retries, dollars."""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from multi2cap.vggcaps.backends import RunStats


class StageProgress:
    """Context manager around one stage's bar; a no-op when `enabled` is False."""

    def __init__(self, description: str, total: int, stats: RunStats | None, enabled: bool) -> None:
        self._stats = stats
        self._enabled = enabled and total > 0
        self._done = 0
        self._start = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not self._enabled,
        )
        self._task = self._progress.add_task(description, total=total, info="")

    def __enter__(self) -> StageProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.refresh()
        self._progress.stop()

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
