"""DDP vs FSDP (`runtime.strategy`): memory per process at real size, speed at tiny size on CPU.

1. Memory (no weights allocated: the real-size architecture of bench_gpu.py is built on the meta
   device). Per process, for 1-8 processes: model weights held, the largest working set FSDP
   gathers at once (the root unit, kept whole through a step, plus two blocks: the one running
   and the one prefetched), gradients and AdamW states of the trainable parameters (FP32). DDP
   holds everything on every process; FSDP divides weights, gradients and optimizer states by
   the number of processes. Activations are the same under both and left out.
2. Speed (measured): the tiny pre-training recipe on real Tux Paint clips, two CPU processes
   (gloo) through `torchrun` and the real CLI, once per strategy; median samples/s over the
   steps after the first, and the FSDP / DDP ratio. On CPU with tiny blocks this measures the
   cost of FSDP's per-block collectives, i.e. what sharding costs when it is not needed.

    python benchmarks/bench_sharding.py [--decoders llama-3.2-3b llama-3.1-8b] [--no-speed]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from multi2cap.recipes import RECIPES_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gpu  # the real-size architecture: one definition
from bench_train_cpu import stamp_manifest

RECIPE = RECIPES_DIR / "tiny_pretrain.yaml"
GIB = 1024**3


@dataclass
class Footprint:
    """Bytes per process of what training holds besides activations."""

    strategy: str
    processes: int
    weights: int
    gathered: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.weights + self.gathered + self.gradients + self.optimizer


def _bytes(params: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def footprints(model: torch.nn.Module, processes: list[int]) -> list[Footprint]:
    """DDP and FSDP footprints of `model` (after `set_stage`) for each process count."""
    everything = list(model.parameters())
    trainable = [p for p in everything if p.requires_grad]
    units = model.shard_units()
    in_units = {id(p) for unit in units for p in unit.parameters()}
    root = _bytes([p for p in everything if id(p) not in in_units])
    largest_two = sum(sorted((_bytes(list(u.parameters())) for u in units), reverse=True)[:2])
    weights, grads = _bytes(everything), _bytes(trainable)
    adam = 2 * sum(p.numel() * 4 for p in trainable)  # exp_avg, exp_avg_sq in FP32
    rows = []
    for n in processes:
        rows.append(Footprint("ddp", n, weights, 0, grads, adam))
        if n > 1:  # one process trains unsharded whatever the strategy
            rows.append(
                Footprint("fsdp", n, weights // n, root + largest_two, grads // n, adam // n)
            )
    return rows


def memory_table(decoder: str, processes: list[int]) -> list[Footprint]:
    from multi2cap.model.multi2cap import Multi2Cap

    settings = bench_gpu.Settings(
        device="meta",
        decoder=decoder,
        k=4,
        clip_seconds=10.0,
        batches=[8],
        steps=1,
        warmup=0,
        caption_tokens=20,
        caption_batch=1,
        gradient_checkpointing=True,
    )
    with torch.device("meta"):
        model = Multi2Cap(bench_gpu.model_config(settings, dry_run=False))
    model.set_stage("pretrain")
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    print(
        f"\n{decoder}: {params / 1e9:.2f} B parameters ({trainable / 1e6:.1f} M trainable), "
        f"{len(model.shard_units())} FSDP blocks; GiB per process:"
    )
    rows = footprints(model, processes)
    print(
        f"  {'strategy':8s} {'procs':>5s} {'weights':>8s} {'gathered':>8s} {'grads':>6s} "
        f"{'AdamW':>6s} {'total':>6s}"
    )
    for r in rows:
        print(
            f"  {r.strategy:8s} {r.processes:5d} {r.weights / GIB:8.2f} {r.gathered / GIB:8.2f} "
            f"{r.gradients / GIB:6.2f} {r.optimizer / GIB:6.2f} {r.total / GIB:6.2f}"
        )
    return rows


def measure_speed(strategy: str, manifest: Path, out: Path, epochs: int) -> float:
    """Median samples/s (all processes) of the tiny recipe under `strategy`, two processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "multi2cap.cli.main", "train", "--config", str(RECIPE),
        f"data.train_manifest={manifest}", "optim.batch_size=8", "optim.micro_batch_size=4",
        f"optim.epochs={epochs}", "augment.enabled=false", "eval.every_epochs=0",
        "runtime.progress=false", "runtime.tensorboard=false", f"runtime.strategy={strategy}",
        "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=1200)
    with open(out / "train_log.csv", encoding="utf-8") as handle:
        rates = [float(row["samples_per_s"]) for row in csv.DictReader(handle)]
    return statistics.median(rates[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decoders", nargs="+", default=["llama-3.2-3b", "llama-3.1-8b"])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--no-speed", action="store_true", help="memory table only")
    parser.add_argument("--clips", type=int, default=32, help="clips in the speed run")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    for decoder in args.decoders:
        memory_table(decoder, args.processes)
    if args.no_speed:
        return 0
    print(f"\nspeed, tiny recipe, 2 CPU processes (load average {os.getloadavg()[0]:.1f}):")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = stamp_manifest(args.clips, Path(tmp))
        rates = {s: measure_speed(s, manifest, Path(tmp) / s, args.epochs) for s in ("ddp", "fsdp")}
    for strategy, rate in rates.items():
        print(f"  {strategy:5s} {rate:8.1f} samples/s")
    print(f"  fsdp / ddp = {rates['fsdp'] / rates['ddp']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
