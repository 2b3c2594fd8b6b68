"""Accumulation composes with DDP and FSDP: 2 gloo processes x 2 accumulated micro-batches of 2
clips give the gradient of one forward pass over the 8 clips (L_cap a token mean over the global
effective batch, L_align over all 8 clips through the gradient cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from accumulation_ddp_worker import WORLD
from safetensors.torch import load_file
from test_accumulation import _assert_same, _one_batch

WORKER = Path(__file__).with_name("accumulation_ddp_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "strategy"), [("finetune", "ddp"), ("pretrain", "ddp"), ("pretrain", "fsdp")]
)
def test_two_processes_accumulating_give_the_gradient_of_one_batch(
    stage: str, strategy: str, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(port), stage, strategy, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD)
    ]
    try:
        outputs = [rank.communicate(timeout=240)[0] for rank in ranks]
    except subprocess.TimeoutExpired:
        for rank in ranks:
            rank.kill()
        tails = [rank.communicate()[0][-2000:] for rank in ranks]
        raise AssertionError(f"the two ranks did not finish within 240 s: {tails}") from None
    for rank, output in zip(ranks, outputs, strict=True):
        assert rank.returncode == 0, output[-3000:]
    want = _one_batch(stage)
    for rank in range(WORLD):
        got = load_file(tmp_path / f"rank{rank}.safetensors")
        _assert_same([got[str(i)] for i in range(len(want))], want)
