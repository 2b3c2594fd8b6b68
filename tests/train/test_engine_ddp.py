"""The trainer's own per-step agreement under several processes (2 gloo CPU processes, each a
fresh interpreter running `engine_ddp_worker.py`): per-process random generators, DDP without
the unused-parameter search, and no collective beyond the step's own two."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from engine_ddp_worker import HANG_DUMP_S, STOP_ASKED_AT, WORLD

from multi2cap.train.state import list_checkpoints

WORKER = Path(__file__).with_name("engine_ddp_worker.py")


@pytest.mark.slow
def test_two_processes_reseed_skip_the_unused_search_and_agree_within_the_step_all_reduce(
    stamp_manifests: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    manifest = str(stamp_manifests / "train.jsonl")
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(port), manifest, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD)
    ]
    try:
        outputs = [rank.communicate(timeout=HANG_DUMP_S + 60)[0] for rank in ranks]
    except subprocess.TimeoutExpired:
        for rank in ranks:
            rank.kill()
        outputs = [rank.communicate()[0] for rank in ranks]
    for rank, output in zip(ranks, outputs, strict=True):
        assert rank.returncode == 0, output[-3000:]
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]

    # Each process reseeds with seed + rank once the model is built: distinct LoRA-dropout
    # masks (before, every process drew the same ones from the common seed 0).
    for rank, run in enumerate(runs):
        assert {s["seed"] for s in run["steps"]} == {rank}

    # Every parameter that trains is used, so DDP runs without searching for unused ones
    # (before, fine-tuning turned the search on).
    assert [run["find_unused"] for run in runs] == [[False], [False]]

    # The stop request (rank 1, during step 2) and the count of unreadable clips ride on the
    # next step's all-reduce: both processes stop after step 3, with a checkpoint. A step calls
    # two collectives, that all-reduce and the losses' (before, four: a stop-flag all-reduce
    # and an all_gather_object of the skipped ids besides).
    assert [run["global_step"] for run in runs] == [STOP_ASKED_AT + 1] * WORLD
    assert runs[1]["stop_reason"] == "signal SIGUSR1"
    assert runs[0]["stop_reason"] == "signal SIGTERM (another process)"
    assert list_checkpoints(tmp_path / "run" / "checkpoints")[-1][0] == STOP_ASKED_AT + 1
    for run in runs:
        counts = {s["step"]: s["collectives"] for s in run["steps"]}
        assert [counts[s] - counts[s - 1] for s in (2, 3)] == [2, 2], counts
