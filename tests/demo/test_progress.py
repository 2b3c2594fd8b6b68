"""Progress lines for trainers in other processes, read from the logs they write."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from multi2cap.demo import progress


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_read_log_takes_the_last_complete_row(tmp_path):
    log = _write(
        tmp_path / "train_log.csv",
        "step,epoch,lr,loss,loss_cap\n1,0.1,0.001,4.5,4.5\n2,0.2,0.001,3.25,3.25\n3,0.3,0.0",
    )
    state = progress.read_log(log)
    assert (state.steps, state.loss) == (2, 3.25)  # the row being written is not read
    assert progress.read_log(tmp_path / "missing.csv") == progress.StageState(0, None)


def test_describe_names_the_running_stage_and_counts_the_whole_job(tmp_path):
    stages = [
        progress.Stage("pretrain", tmp_path / "pretrain" / "train_log.csv", 4),
        progress.Stage("finetune", tmp_path / "finetune" / "train_log.csv", 3),
    ]
    assert progress.describe("multi2cap", stages) == ("multi2cap: pretrain 0/4", 0, 7)
    _write(stages[0].log, "step,loss\n1,2.0\n2,1.5\n")
    assert progress.describe("multi2cap", stages) == ("multi2cap: pretrain 2/4, loss 1.500", 2, 7)
    _write(stages[0].log, "step,loss\n" + "".join(f"{i},1.0\n" for i in range(1, 5)))
    _write(stages[1].log, "step,loss\n1,0.75\n")
    assert progress.describe("multi2cap", stages) == ("multi2cap: finetune 1/3, loss 0.750", 5, 7)
    _write(stages[1].log, "step,loss\n1,0.75\n2,0.5\n3,0.25\n")
    assert progress.describe("multi2cap", stages) == ("multi2cap: done", 7, 7)


def test_monitor_prints_one_line_per_job(tmp_path):
    log = _write(tmp_path / "a.csv", "step,total,loss\n3,10,0.5\n")
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    jobs = {"stage 0 audio": [progress.Stage("audio tagger", log, 10)]}
    with progress.monitor(jobs, console) as poll:
        poll()
    text = out.getvalue()
    assert "stage 0 audio: audio tagger 3/10, loss 0.500" in text and "3/10 steps" in text
