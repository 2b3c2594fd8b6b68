"""Training speed of the tiny CPU recipe (configs/tiny_pretrain.yaml) on this machine.

Two figures, on real Tux Paint sounds and pictures:

1. the optimizer step alone: forward + backward + AdamW for a batch of 8 already-collated clips
   (pre-training: L_cap + alpha L_align + beta L_vfr, frames through the tiny CLIP), at the
   recipe's clip length and at 10 s, with the recipe's 1 thread and with torch's default;
   target: <= 0.35 s per batch-8 step;
2. the whole loop through `multi2cap.train.train` (data loading, augmentations, logging,
   checkpoints): steps/s and samples/s, with the paper's four augmentations on and off.

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

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "tiny_pretrain.yaml"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--clips", type=int, default=16, help="clips in the loop's manifest")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the full loop")
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


if __name__ == "__main__":
    main()
