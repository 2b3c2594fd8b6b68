"""Stop requests: SIGTERM / SIGUSR1 / SIGINT turn into a checkpoint at the next optimizer step.

SLURM sends SIGTERM (or SIGUSR1 with `--signal`) before it kills a job; the run finishes its
step, all processes agree to stop, write a checkpoint and return, so `--resume` continues.
With several processes the agreement rides on the next step's all-reduce (`StepVotes`), so
they stop one step after the request, together.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import torch
from accelerate import Accelerator

log = logging.getLogger("multi2cap.train")


class StopSignals:
    """SIGTERM / SIGUSR1 / SIGINT become a request to checkpoint at the end of an optimizer step
    and return (SLURM sends SIGTERM, or SIGUSR1 with `--signal`, before it kills a job). All
    processes agree on the step through a sum over devices (`agreed`, `requested`), so they
    stop and checkpoint together."""

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

    def __init__(self) -> None:
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, _frame: Any) -> None:
        if self.name is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for the step to end
        self.name = signal.Signals(number).name
        log.warning("%s received: checkpointing after this step, then stopping", self.name)

    def vote(self) -> bool:
        """This process's own request (what it adds to a step's `StepVotes`)."""
        return self.name is not None

    def agreed(self, any_process: bool | None) -> bool:
        """Whether to stop after this step. `any_process`: whether some process had a request
        when the step began (its `StepVotes`, summed with the step's all-reduce, so every
        process decides the same one step after the request), or None with one process,
        whose own request decides at once."""
        if any_process is None:
            return self.name is not None
        if any_process and self.name is None:
            self.name = "SIGTERM (another process)"
        return any_process

    def requested(self, accelerator: Accelerator) -> bool:
        """A request of any process, agreed on with one all-reduce and a host read: for the
        end of an epoch, so that a request made during its last step does not wait through
        validation (inside an epoch, `agreed` needs no collective of its own)."""
        if accelerator.num_processes == 1:
            return self.name is not None
        flag = torch.tensor([1.0 if self.name is not None else 0.0], device=accelerator.device)
        return self.agreed(bool(accelerator.reduce(flag, "sum").item() > 0))


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave stop signals to the main process, which stops at a step end (a
    worker killed by the job's SIGTERM would otherwise fail the batch being loaded)."""
    for name in StopSignals.SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_IGN)
