"""What a run reports: training and validation records to memory, CSV and TensorBoard, the
skipped-clip log and the progress bar."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from multi2cap.io import append_jsonl, atomic_write_text, read_jsonl, write_jsonl
from multi2cap.train.config import TrainConfig
from multi2cap.train.state import Position
from multi2cap.train.steps import LOSS_KEYS

log = logging.getLogger("multi2cap.train")


class RunLogger:
    """Training and validation records to memory, CSV files and TensorBoard (main process).

    On resumption the CSV files are rewritten from the checkpoint's history, so rows logged after
    that checkpoint by the interrupted run disappear instead of being duplicated. `loss_keys`
    are the stage's per-step values (`LOSS_KEYS`; the preference stage logs its own)."""

    def __init__(
        self,
        out: Path,
        config: TrainConfig,
        main: bool,
        history: list[dict[str, Any]],
        resumed_step: int,
        loss_keys: tuple[str, ...] = LOSS_KEYS,
    ) -> None:
        self.out = out
        self.config = config
        self.main = main
        self.history = history
        self.loss_keys = loss_keys
        self.columns = ("step", "epoch", "lr", *loss_keys, "samples_per_s")
        self._writer: Any = None
        if not main:
            return
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "train_config.yaml")
        self._rewrite_csv()
        skipped = out / "skipped.jsonl"
        if skipped.is_file():  # drop what the interrupted run logged after its checkpoint
            kept = [r for r in read_jsonl(skipped) if r["step"] <= resumed_step]
            write_jsonl(skipped, kept)
        if config.runtime.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=self._last())

    def _last(self) -> int | None:
        steps = [r["step"] for r in self.history]
        return max(steps) + 1 if steps else None

    def logs(self, step: int) -> bool:
        """Whether optimizer step `step` is logged (every `log_every_steps`, and the stop step)."""
        runtime = self.config.runtime
        return step % runtime.log_every_steps == 0 or step == runtime.stop_at_step

    def train_step(self, record: dict[str, Any]) -> None:
        if not self.logs(record["step"]):
            return
        step = record["step"]
        self.history.append(record)
        if not self.main:
            return
        self._append_csv("train_log.csv", self.columns, record)
        if self._writer is not None:
            for key in ("lr", *self.loss_keys, "samples_per_s"):
                self._writer.add_scalar(f"train/{key}", record[key], step)

    def skipped(self, ids: list[str], position: Position) -> None:
        """Record unreadable clips (the dataset logged each reason) in skipped.jsonl."""
        if not ids or not self.main:
            return
        append_jsonl(
            self.out / "skipped.jsonl",
            ({"id": i, "epoch": position.epoch, "step": position.global_step} for i in ids),
        )

    def validation(self, scores: dict[str, Any]) -> None:
        self.history.append(scores)
        log.info(
            "epoch %d: %s",
            scores["epoch"],
            ", ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float)),
        )
        self._rewrite_csv()
        if self._writer is not None:
            for key, value in scores.items():
                if isinstance(value, float):
                    self._writer.add_scalar(f"val/{key}", value, scores["step"])
            self._writer.flush()

    def skipped_total(self) -> int:
        path = self.out / "skipped.jsonl"
        return sum(1 for _ in read_jsonl(path)) if self.main and path.is_file() else 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _append_csv(self, name: str, columns: tuple[str, ...], record: dict[str, Any]) -> None:
        path = self.out / name
        new = not path.exists()
        with open(path, "a", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)

    def _rewrite_csv(self) -> None:
        train_rows = [r for r in self.history if r["kind"] == "train"]
        atomic_write_text(self.out / "train_log.csv", _csv_text(self.columns, train_rows))
        val_rows = [r for r in self.history if r["kind"] == "val"]
        if val_rows:
            columns = ["epoch", "step"]
            for row in val_rows:
                columns += [k for k, v in row.items() if isinstance(v, float) and k not in columns]
            atomic_write_text(self.out / "val_log.csv", _csv_text(tuple(columns), val_rows))


def _csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
