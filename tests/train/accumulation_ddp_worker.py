"""One rank of `test_accumulation_ddp.py`, run as its own process (`python THIS rank port stage
strategy out_dir`): a fresh interpreter, because a rank forked from the pytest process can hang
when earlier tests left thread pools (OpenMP, gloo) behind in it."""

from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file
from test_accumulation import CAPTIONS, _batch, _micro, _model, _Recorder

WORLD, MICRO = 2, 2
HANG_DUMP_S = 150  # seconds after which a rank dumps its stacks and exits


def run(rank: int, port: int, stage: str, strategy: str, out_dir: str) -> None:
    from accelerate import Accelerator

    from multi2cap.train.config import TrainConfig
    from multi2cap.train.steps import optimizer_steps

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",  # gloo's pair connections on loopback, whatever the hostname says
    )
    # Rendezvous through a file (as test_infonce_ddp does): no TCP store to race for a port;
    # Accelerator then adopts the initialised process group.
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD
    )
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


if __name__ == "__main__":
    import faulthandler

    # A rank that hangs prints every thread's stack before the test gives up on it (the test's
    # timeout is longer), so a hang says where it is.
    faulthandler.dump_traceback_later(HANG_DUMP_S, exit=True)
    rank, port, stage, strategy, out_dir = sys.argv[1:]
    run(int(rank), int(port), stage, strategy, out_dir)
