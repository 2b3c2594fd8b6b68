"""One rank of `test_engine_ddp.py` (`python THIS rank port manifest out_dir`): the trainer on
two gloo processes (8 clips, 4 steps of 2), recording per logged step the collectives called so
far and the torch seed, and DDP's `find_unused_parameters`; rank 1 asks to stop (SIGUSR1) while
logging step 2."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from multi2cap.recipes import RECIPES_DIR

WORLD = 2
STOP_ASKED_AT = 2  # rank 1 receives SIGUSR1 while logging this step
HANG_DUMP_S = 150
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_object",
    "all_gather_into_tensor",
    "reduce_scatter_tensor",
    "broadcast",
    "broadcast_object_list",
    "gather_object",
    "barrier",
)
CONFIGS = RECIPES_DIR


def run(rank: int, port: int, manifest: str, out_dir: str) -> None:
    from multi2cap.train import load_train_config, train
    from multi2cap.train.run_log import RunLogger

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",
    )
    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD
    )
    called = [0]

    def counted(function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            called[0] += 1
            return function(*args, **kwargs)

        return wrapper

    for name in COLLECTIVES:
        setattr(dist, name, counted(getattr(dist, name)))
    find_unused: list[bool] = []
    ddp_init = torch.nn.parallel.DistributedDataParallel.__init__

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        find_unused.append(bool(kwargs.get("find_unused_parameters", False)))
        ddp_init(self, *args, **kwargs)

    torch.nn.parallel.DistributedDataParallel.__init__ = recording_init  # type: ignore[method-assign]
    steps: list[dict[str, int]] = []
    train_step = RunLogger.train_step

    def logging_step(self: RunLogger, record: dict[str, Any]) -> None:
        steps.append(
            {"step": record["step"], "collectives": called[0], "seed": torch.initial_seed()}
        )
        if rank == 1 and record["step"] == STOP_ASKED_AT:
            signal.raise_signal(signal.SIGUSR1)
        train_step(self, record)

    RunLogger.train_step = logging_step  # type: ignore[method-assign]
    config = load_train_config(
        CONFIGS / "tiny_finetune.yaml",
        [
            f"data.train_manifest={manifest}",
            "optim.batch_size=2",
            "optim.micro_batch_size=1",
            "optim.epochs=1",
            "augment.enabled=false",
            "eval.every_epochs=0",
            "runtime.progress=false",
            "runtime.tensorboard=false",
        ],
        output_dir=Path(out_dir) / "run",
    )
    result = train(config)
    summary = {
        "steps": steps,
        "find_unused": find_unused,
        "stop_reason": result.stop_reason,
        "global_step": result.global_step,
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(summary))
    dist.destroy_process_group()


if __name__ == "__main__":
    import faulthandler

    faulthandler.dump_traceback_later(HANG_DUMP_S, exit=True)
    rank, port, manifest, out_dir = sys.argv[1:]
    run(int(rank), int(port), manifest, out_dir)
