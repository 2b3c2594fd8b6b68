"""Progress lines for trainers that run in other processes: one line per job (stage, step / total,
loss, ETA), read from the `train_log.csv` each trainer already writes into its run folder.

The trainer (`multi2cap.train.engine`) appends one row per logged optimizer step (`step`, `loss`,
...) and the stage-0 trainers (`multi2cap.demo.stage0`) append `step,total,loss` rows; polling
those files needs no hook into either loop and works across processes. A job is a sequence of
stages, each a log file with its expected number of steps; the line shows the stage that is
running and the steps done over the whole job.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console


@dataclass(frozen=True)
class Stage:
    """One trainer run of a job: its name, its `train_log.csv` and its optimizer steps."""

    name: str
    log: Path
    total: int


@dataclass
class StageState:
    """What a log says: steps done and the last logged loss (None before the first row)."""

    steps: int
    loss: float | None


def read_log(path: Path) -> StageState:
    """Steps done (the largest `step`) and the last loss in a `train_log.csv`; zero steps when
    the file is missing, empty, or being written (a partial last line is ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return StageState(0, None)
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    steps, loss = 0, None
    for row in csv.DictReader(io.StringIO(text)):
        try:
            steps = max(steps, int(float(row["step"])))
            loss = float(row["loss"])
        except (KeyError, TypeError, ValueError):
            continue
    return StageState(steps, loss)


def describe(job: str, stages: Sequence[Stage]) -> tuple[str, int, int]:
    """(`"job: stage step/total, loss x"`, steps done over the job, total steps of the job)."""
    done, total, current = 0, sum(s.total for s in stages), None
    for stage in stages:
        state = read_log(stage.log)
        steps = min(state.steps, stage.total)
        done += steps
        if current is None and steps < stage.total:
            current = (stage, state)
    if current is None:
        return f"{job}: done", done, total
    stage, state = current
    loss = f", loss {state.loss:.3f}" if state.loss is not None else ""
    return f"{job}: {stage.name} {min(state.steps, stage.total)}/{stage.total}{loss}", done, total


@contextmanager
def monitor(
    jobs: dict[str, Sequence[Stage]], console: Console, enabled: bool = True
) -> Iterator[Callable[[], None]]:
    """Rich progress rows, one per job; the caller calls the yielded `poll()` while it waits.

    The ETA column is rich's estimate from the job's own step rate (steps of all its stages)."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("    {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        tasks = {
            name: progress.add_task(name, total=sum(s.total for s in st))
            for name, st in jobs.items()
        }

        def poll() -> None:
            for name, stages in jobs.items():
                text, done, total = describe(name, stages)
                progress.update(tasks[name], description=text, completed=done, total=total)

        yield poll
        poll()


def wait(done: Callable[[], bool], poll: Callable[[], None], every_s: float = 0.5) -> None:
    """Poll until `done()`."""
    while not done():
        poll()
        time.sleep(every_s)
