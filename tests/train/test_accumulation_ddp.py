"""Accumulation composes with DDP and FSDP: 2 gloo processes x 2 accumulated micro-batches of 2
clips give the gradient of one forward pass over the 8 clips (L_cap a token mean over the global
effective batch, L_align over all 8 clips through the gradient cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from accumulation_ddp_worker import HANG_DUMP_S, WORLD
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
    # Known flake, root cause not found: now and then (1 of 3 fresh-clone runs of the suite on
    # 2 cores) both ranks of one case hang before any output (both dump their stacks at
    # HANG_DUMP_S).
    for attempt in range(2):
        out = tmp_path / f"attempt{attempt}"
        out.mkdir()
        ranks = [
            subprocess.Popen(
                [sys.executable, str(WORKER), str(rank), str(port), stage, strategy, str(out)],
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
        # A rank that hung or died (under `pytest -n` also the probed port taken by another
        # test before the ranks bound it) is retried once; the gradients are compared here, in
        # the parent, so a wrong gradient is never retried.
        failed = any(rank.returncode != 0 for rank in ranks)
        if not failed:
            break
        print(
            f"attempt {attempt}: a rank hung or failed; its output:", *(o[-4000:] for o in outputs)
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    for rank, output in zip(ranks, outputs, strict=True):
        assert rank.returncode == 0, output[-3000:]
    want = _one_batch(stage)
    for rank in range(WORLD):
        got = load_file(out / f"rank{rank}.safetensors")
        _assert_same([got[str(i)] for i in range(len(want))], want)
