"""Accumulation composes with DDP and FSDP: 2 gloo processes x 2 accumulated micro-batches of 2
clips give the gradient of one forward pass over the 8 clips (L_cap a token mean over the global
effective batch, L_align over all 8 clips through the gradient cache)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from test_accumulation import CAPTIONS, _assert_same, _batch, _micro, _model, _one_batch, _Recorder

WORLD, MICRO = 2, 2


def _worker(rank: int, port: int, stage: str, strategy: str, out_dir: str) -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from multi2cap.train.config import TrainConfig
    from multi2cap.train.steps import optimizer_steps

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    AcceleratorState._reset_state(True)  # the forked parent's (single-process) state
    GradientState._reset_state()
    accumulation = len(CAPTIONS) // (MICRO * WORLD)
    config = TrainConfig.model_validate(
        {"stage": stage, "optim": {"batch_size": len(CAPTIONS), "micro_batch_size": MICRO}}
    )
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    model = _model(stage)
    if strategy == "fsdp":  # as the engine does: shard, then the optimizer over the shards
        from multi2cap.train.sharding import shard_model

        model = shard_model(model, accelerator.device, WORLD)
        optimizer = _Recorder(model.trainable_parameters())
        prepared = accelerator.prepare(optimizer)
    else:
        optimizer = _Recorder(model.trainable_parameters())
        model, prepared = accelerator.prepare(model, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    # Micro-batch m of process r holds slot m * W + r of the step's clips, as in
    # `StepBatchSampler` (here over the clips in their order).
    batch = _batch()
    loader = [
        _micro(batch, slice((m * WORLD + rank) * MICRO, (m * WORLD + rank + 1) * MICRO))
        for m in range(accumulation)
    ]
    stats = list(optimizer_steps(loader, model, prepared, scheduler, accelerator, config, {}))
    assert len(stats) == 1 and len(optimizer.grads) == 1
    from torch.distributed.tensor import DTensor

    grads = [g.full_tensor() if isinstance(g, DTensor) else g for g in optimizer.grads[0]]
    save_file(
        {str(i): g.contiguous() for i, g in enumerate(grads)},
        f"{out_dir}/rank{rank}.safetensors",
    )
    accelerator.end_training()


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
    args = (port, stage, strategy, str(tmp_path))
    context = mp.start_processes(_worker, args=args, nprocs=WORLD, join=False, start_method="fork")
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError("the two ranks did not finish within 240 s")
    want = _one_batch(stage)
    for rank in range(WORLD):
        got = load_file(tmp_path / f"rank{rank}.safetensors")
        _assert_same([got[str(i)] for i in range(len(want))], want)
