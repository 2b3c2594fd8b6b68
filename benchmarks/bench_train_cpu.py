"""Training speed of the tiny CPU recipe (the packaged recipe tiny_pretrain) on this machine.

Two figures, on real Tux Paint sounds and pictures:

1. the optimizer step alone: forward + backward + AdamW for a batch of 8 already-collated clips
   (pre-training: L_cap + alpha L_align + beta L_vfr, frames through the tiny CLIP), at the
   recipe's clip length and at 10 s, with the recipe's 1 thread and with torch's default;
   target: <= 0.35 s per batch-8 step;
2. the whole loop through `multi2cap.train.train` (data loading, augmentations, logging,
   checkpoints): steps/s and samples/s, with the paper's four augmentations on and off, and
   and the step loop alone on 4 accumulated micro-batches of 2 clips, L_align over each
   micro-batch (`optim.align_batch=micro`) vs over the effective batch (`effective`, the
   gradient cache), alternating step by step;
3. L_align alone at the paper's sizes (batch 320, K 4, d_g 1024, CED-base 768, CLIP-L 1024,
   shared space 512), forward + backward: the former implementation (2K InfoNCE calls, each
   normalising and gathering its keys again; reproduced here as the baseline) against
   `AlignmentLoss` (one embedding, one gather, two batched products), in the same run.

Medians over the timed steps. The machine may be shared; the load average is printed.

    python benchmarks/bench_train_cpu.py [--steps 20] [--clips 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from multi2cap.assets import tuxpaint_stamps_dir
from multi2cap.data.manifest import ManifestRecord, write_manifest
from multi2cap.recipes import RECIPES_DIR

RECIPE = RECIPES_DIR / "tiny_pretrain.yaml"


def stamp_manifest(count: int, folder: Path) -> Path:
    """A manifest of the first `count` stamps that have a sound, a picture and a description."""
    records = []
    for sound in sorted(tuxpaint_stamps_dir().rglob("*.ogg")):
        if "_desc" in sound.stem:
            continue
        picture, text = sound.with_suffix(".png"), sound.with_suffix(".txt")
        if not (picture.is_file() and text.is_file()):
            continue
        thing = text.read_text(encoding="utf-8").splitlines()[0].strip().rstrip(".").lower()
        records.append(
            ManifestRecord(
                id=sound.stem,
                dataset="tuxpaint",
                split="train",
                audio=str(sound),
                captions=[f"{thing} makes a sound", f"the sound of {thing}"],
                image=str(picture),
            )
        )
        if len(records) == count:
            break
    return write_manifest(records, folder / "train.jsonl")


def step_time(manifest: Path, clip_seconds: float, threads: int, steps: int) -> float:
    """Median seconds of one batch-8 pre-training optimizer step on preloaded data."""
    from multi2cap.data.dataset import CaptionDataset, collate_captions
    from multi2cap.data.manifest import read_manifest
    from multi2cap.model.config import Multi2CapConfig
    from multi2cap.model.multi2cap import Multi2Cap

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        records = read_manifest(manifest)[:8]
        torch.manual_seed(0)
        model = Multi2Cap(Multi2CapConfig.tiny([c for r in records for c in r.captions]))
        model.set_stage("pretrain")
        model.train()
        dataset = CaptionDataset(
            records,
            train=True,
            clip_seconds=clip_seconds,
            with_images=True,
            image_size=model.vision.image_size,
        )
        batch = collate_captions([dataset[i] for i in range(len(records))])
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3, weight_decay=1e-6)
        times = []
        for index in range(steps + 3):
            start = time.perf_counter()
            model(batch, "pretrain").loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index >= 3:
                times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        torch.set_num_threads(before)


def loop_speed(manifest: Path, out: Path, augment: bool, epochs: int) -> tuple[float, float]:
    """(steps/s, samples/s) medians of the full training loop on the tiny recipe."""
    from multi2cap.train import load_train_config, train

    config = load_train_config(
        RECIPE,
        [
            f"data.train_manifest={manifest}",
            f"optim.epochs={epochs}",
            f"augment.enabled={str(augment).lower()}",
            "eval.every_epochs=0",
            "runtime.progress=false",
            "runtime.tensorboard=false",
        ],
        output_dir=out,
    )
    result = train(config)
    rates = [r["samples_per_s"] for r in result.history if r["kind"] == "train"][1:]
    samples = statistics.median(rates)
    return samples / config.optim.batch_size, samples


def accumulated_step_times(manifest: Path, modes: tuple[str, ...], steps: int) -> dict[str, float]:
    """Median seconds of one optimizer step of the step loop (`multi2cap.train.steps`) on
    preloaded data: 4 accumulated pre-training micro-batches of 2 clips (2-s clips), 1 thread,
    for each `optim.align_batch` mode; the modes alternate step by step so that the machine's
    load falls on both alike."""
    from accelerate import Accelerator

    from multi2cap.data.dataset import CaptionDataset, collate_captions
    from multi2cap.data.manifest import read_manifest
    from multi2cap.model.config import Multi2CapConfig
    from multi2cap.model.multi2cap import Multi2Cap
    from multi2cap.train.config import TrainConfig
    from multi2cap.train.steps import optimizer_steps

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = read_manifest(manifest)[:8]
        dataset = CaptionDataset(
            records, train=True, clip_seconds=2.0, with_images=True, image_size=32
        )  # the tiny CLIP's input side
        items = [dataset[i] for i in range(8)]
        micro = [{**collate_captions(items[i : i + 2]), "skipped": []} for i in range(0, 8, 2)]
        accelerator = Accelerator(cpu=True, gradient_accumulation_steps=4)
        loops = {}
        for mode in modes:
            config = TrainConfig.model_validate(
                {"optim": {"batch_size": 8, "micro_batch_size": 2, "align_batch": mode}}
            )
            torch.manual_seed(0)
            model = Multi2Cap(Multi2CapConfig.tiny([c for r in records for c in r.captions]))
            model.set_stage("pretrain")
            optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
            model, optimizer = accelerator.prepare(model, optimizer)
            loader = micro * (steps + 3)
            loops[mode] = optimizer_steps(
                loader, model, optimizer, scheduler, accelerator, config, {}
            )
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for index in range(steps + 3):
            for mode in modes:
                start = time.perf_counter()
                next(loops[mode])
                if index >= 3:
                    times[mode].append(time.perf_counter() - start)
        return {mode: statistics.median(t) for mode, t in times.items()}
    finally:
        torch.set_num_threads(before)


def _former_alignment_loss(align, g, a_mean, v_cls) -> torch.Tensor:
    """L_align as computed before (one process): 2K InfoNCE calls over the same keys."""
    import math

    import torch.nn.functional as F

    def nce(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        q, k = F.normalize(queries.float(), dim=-1), F.normalize(keys.float(), dim=-1)
        scale = align.nce.log_scale.clamp(max=math.log(100.0)).exp()
        targets = torch.arange(q.shape[0])
        return (
            F.cross_entropy(scale * q @ k.T, targets) + F.cross_entropy(scale * k @ q.T, targets)
        ) / 2

    g_s, a_s, v_s = align.project(g, a_mean, v_cls)
    k = g.shape[1]
    return sum(nce(g_s[:, i], a_s) + nce(g_s[:, i], v_s) for i in range(k)) / (2 * k)


def alignment_times(reps: int) -> tuple[float, float, float]:
    """Median seconds of L_align forward + backward, former and current, and |difference|."""
    from multi2cap.model.grounding import AlignmentLoss

    torch.manual_seed(0)
    align = AlignmentLoss(d_g=1024, d_audio=768, d_visual=1024, align_dim=512, temperature=0.07)
    g, a, v = torch.randn(320, 4, 1024), torch.randn(320, 768), torch.randn(320, 1024)
    times: dict[str, list[float]] = {"former": [], "current": []}
    values = {}
    for _ in range(reps + 2):
        for name, fn in (("former", _former_alignment_loss), ("current", None)):
            align.zero_grad(set_to_none=True)
            start = time.perf_counter()
            loss = fn(align, g, a, v) if fn is not None else align(g, a, v)
            loss.backward()
            times[name].append(time.perf_counter() - start)
            values[name] = float(loss.detach())
    former, current = (statistics.median(times[n][2:]) for n in ("former", "current"))
    return former, current, abs(values["former"] - values["current"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--clips", type=int, default=16, help="clips in the loop's manifest")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the full loop")
    parser.add_argument("--align-reps", type=int, default=10, help="timed L_align passes")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (machine shared)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = stamp_manifest(args.clips, folder)
        print("optimizer step, batch 8 (median):")
        default_threads = torch.get_num_threads()
        for seconds in (2.0, 10.0):
            for threads in sorted({1, default_threads}):
                median = step_time(manifest, seconds, threads, args.steps)
                verdict = "meets" if median <= 0.35 else "misses"
                print(
                    f"  clips {seconds:4.1f} s, {threads} thread(s): {median:.3f} s/step, "
                    f"{8 / median:.1f} samples/s ({verdict} the 0.35 s target)"
                )
        print("full loop, tiny_pretrain.yaml, batch 8 (median per step):")
        for augment in (False, True):
            steps, samples = loop_speed(manifest, folder / f"run{augment}", augment, args.epochs)
            label = "four augmentations" if augment else "no augmentation"
            print(f"  {label:20s}: {steps:.2f} steps/s, {samples:.1f} samples/s")
        print("optimizer step, batch 8 = 4 accumulated micro-batches of 2, 1 thread (median):")
        step = accumulated_step_times(manifest, ("micro", "effective"), args.steps)
        for mode, seconds in step.items():
            print(f"  align_batch={mode:9s}: {seconds:.3f} s/step, {8 / seconds:.1f} samples/s")
        print(f"  gradient cache: x{step['effective'] / step['micro']:.2f} step time")
    print("L_align forward + backward, batch 320, K 4 (median):")
    former, current, diff = alignment_times(args.align_reps)
    print(
        f"  former {former * 1e3:.1f} ms, current {current * 1e3:.1f} ms "
        f"(x{former / current:.2f} faster), |value difference| {diff:.1e}"
    )


if __name__ == "__main__":
    main()
