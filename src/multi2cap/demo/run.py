"""The offline demo: the paper end to end, in miniature, on real recordings and pictures.

Stages (each cached in the work folder, so a rerun resumes):
1. compose the audio-visual scene set and mux it into real mp4 files (`scenes.py`);
2. build VggCaps-style captions for the training clips with the VggCaps builder (the `offline`
   backend, or a real OpenAI-compatible endpoint when given one), and extract the audio of the
   validation and test clips with the same builder (extract step only);
3. stage 0: pretrain the audio encoder, the vision tower and the decoder on their own modality,
   training split only (`stage0.py`); then pre-train Multi2Cap with frames and fine-tune it
   audio-only, and train the audio-only baseline (grounding off) through the same two stages
   with the same budget, from the same stage-0 backbones (`training.py`);
4. caption the test clips from audio alone, evaluate both models with the offline metrics and
   by the sources their captions name (`source_accuracy.py`);
5. write `report.md`, `results.json`, figures, `captions.csv` and print one results table.

`--seeds N` repeats stages 3-4 on N training seeds over the same scenes. Every number comes from
this run; nothing is tuned per run.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from multi2cap.data.manifest import ManifestRecord, read_manifest, write_manifest
from multi2cap.demo.config import EVAL_METRICS, DemoConfig
from multi2cap.demo.scenes import (
    SAMPLE_RATE,
    Scene,
    SceneSetConfig,
    Source,
    load_sources,
    plan_scenes,
    read_scene_index,
    render_scene,
    write_scene_index,
)
from multi2cap.demo.training import NUM_BEAMS, Backbones, ModelRun, SeedOutcome
from multi2cap.io import atomic_write_text
from multi2cap.media.spectrogram_image import SpectrogramImageSettings

log = logging.getLogger(__name__)

PAPER_METRICS = ("bleu_1", "bleu_4", "rouge_l", "meteor", "cider_d")
# Half the builder's default size: the demo's clips are synthetic scenes, and the image costs
# most of the extraction time (a real vision LLM still reads it well at this size).
DEMO_SPECTROGRAM = SpectrogramImageSettings(width=400, height=200)


# ----------------------------------------------------------------------------- 1. scenes


@functools.lru_cache(maxsize=128)
def _load_source(path: Path) -> np.ndarray:
    """Each worker decodes a source recording once (scenes reuse the 61 sources)."""
    from multi2cap.media.audio import load_audio

    return load_audio(path)


def _render_job(args: tuple[dict[str, Any], dict[str, Source], str, int]) -> str:
    from multi2cap.media.video import mux_image_audio_to_mp4

    scene_dict, sources, out_path, seed = args
    scene = Scene(**{**scene_dict, "sources": [_scene_source(s) for s in scene_dict["sources"]]})
    rng = np.random.default_rng([seed, int(hashlib.sha256(scene.id.encode()).hexdigest()[:8], 16)])
    wave, frame = render_scene(scene, sources, rng, _load_source)
    tmp = Path(out_path).with_suffix(".tmp.mp4")
    mux_image_audio_to_mp4(frame, wave, SAMPLE_RATE, tmp)
    os.replace(tmp, out_path)
    return json.dumps([asdict(s) for s in scene.sources])


def _scene_source(raw: dict[str, Any]) -> Any:
    from multi2cap.demo.scenes import SceneSource

    return SceneSource(**raw)


def compose(config: DemoConfig, console: Console) -> list[Scene]:
    """Plan the scenes and render the missing mp4 files (in worker processes)."""
    scene_dir = config.workdir / "scenes"
    video_dir = scene_dir / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    set_config = SceneSetConfig(
        n_train=config.n_train, n_val=config.n_val, n_test=config.n_test, seed=config.seed
    )
    sources = load_sources()
    plan_key = hashlib.sha256(
        json.dumps([asdict(set_config), [s.key for s in sources]]).encode()
    ).hexdigest()
    key_file = scene_dir / "plan.sha256"
    if key_file.is_file() and key_file.read_text() == plan_key:
        scenes = read_scene_index(scene_dir)
    else:
        scenes = plan_scenes(sources, set_config)
    by_key = {s.key: s for s in sources}
    todo = [s for s in scenes if not (video_dir / f"{s.id}.mp4").is_file()]
    for scene in scenes:
        scene.video = str(Path("videos") / f"{scene.id}.mp4")
    if todo:
        console.print(
            f"[bold]1/5 Composing {len(todo)} audio-visual scenes[/bold] from "
            f"{len(sources)} real Tux Paint recordings and pictures "
            f"({len(scenes) - len(todo)} cached)."
        )
        jobs = [(asdict(s), by_key, str(video_dir / f"{s.id}.mp4"), config.seed) for s in todo]
        placed_by_id: dict[str, str] = {}
        with _progress(config, "scenes", len(jobs)) as advance:
            if config.workers > 1:
                with ProcessPoolExecutor(config.workers) as pool:
                    for scene, placed in zip(
                        todo, pool.map(_render_job, jobs, chunksize=8), strict=True
                    ):
                        placed_by_id[scene.id] = placed
                        advance()
            else:
                for scene, job in zip(todo, jobs, strict=True):
                    placed_by_id[scene.id] = _render_job(job)
                    advance()
        for scene in todo:
            scene.sources = [_scene_source(s) for s in json.loads(placed_by_id[scene.id])]
        write_scene_index(scenes, scene_dir)
        key_file.write_text(plan_key)
    else:
        console.print(f"[bold]1/5 Scenes[/bold]: {len(scenes)} clips cached in {video_dir}.")
    return scenes


# ----------------------------------------------------------------------------- 2. captions


def _categories_csv(scenes: list[Scene], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "category"])
    for scene in scenes:
        writer.writerow([scene.id, scene.category])
    atomic_write_text(path, buffer.getvalue())
    return path


def build_captions(config: DemoConfig, scenes: list[Scene], console: Console) -> dict[str, Path]:
    """VggCaps builder on the training clips; extract-only on validation and test clips."""
    from multi2cap.vggcaps.backends import OpenAISettings
    from multi2cap.vggcaps.pipeline import build_vggcaps
    from multi2cap.vggcaps.records import BuildConfig

    videos = config.workdir / "scenes" / "videos"
    train = [s for s in scenes if s.split == "train"]
    held_out = [s for s in scenes if s.split != "train"]
    backend = "openai" if config.base_url else "offline"
    console.print(
        f"[bold]2/5 Building VggCaps-style captions[/bold] for {len(train)} training clips with "
        f"the `{backend}` backend"
        + (
            f" ({config.model} at {config.base_url})."
            if config.base_url
            else " (deterministic captions from the category and measured audio descriptors; "
            "not an LLM — pass --base-url/--model for a real vision LLM)."
        )
    )
    openai = OpenAISettings(
        model=config.model or "offline",
        base_url=config.base_url,
        api_key_env=config.api_key_env,
    )
    train_out = config.workdir / "vggcaps"
    summary = build_vggcaps(
        BuildConfig(
            out=train_out,
            videos=videos,
            categories=_categories_csv(train, config.workdir / "scenes" / "categories_train.csv"),
            backend=backend,
            openai=openai,
            spectrogram=DEMO_SPECTROGRAM,
            workers=config.workers,
            progress=config.progress,
        )
    )
    if summary.failed:
        console.print(f"[yellow]{summary.failed} training clips failed (see failures.jsonl).")
    console.print("    extracting the audio of the validation and test clips (no captions).")
    held_out_dir = config.workdir / "held_out_media"
    build_vggcaps(
        BuildConfig(
            out=held_out_dir,
            videos=videos,
            categories=_categories_csv(
                held_out, config.workdir / "scenes" / "categories_held_out.csv"
            ),
            backend="offline",
            steps=("extract",),
            spectrogram=DEMO_SPECTROGRAM,
            workers=config.workers,
            progress=config.progress,
        )
    )
    return {"train": train_out, "held_out": held_out_dir}


def write_manifests(
    config: DemoConfig, scenes: list[Scene], built: dict[str, Path]
) -> dict[str, Path]:
    """Manifests for the four uses: pre-training (VggCaps captions + frames), fine-tuning
    (training clips with their reference captions), validation and test (references)."""
    from multi2cap.vggcaps.extract import media_paths

    out = config.workdir / "manifests"
    vggcaps = read_manifest(built["train"] / "manifest.jsonl")
    pretrain = [ManifestRecord(**{**asdict(r), "split": "train"}) for r in vggcaps]
    by_split: dict[str, list[ManifestRecord]] = {"train": [], "val": [], "test": []}
    for scene in scenes:
        base = built["train"] if scene.split == "train" else built["held_out"]
        paths = media_paths(scene.id)
        audio = base / paths["audio"]
        if not audio.is_file():
            continue
        by_split[scene.split].append(
            ManifestRecord(
                id=scene.id,
                dataset="demo",
                split=scene.split,
                audio=str(audio),
                captions=scene.references,
                image=str(base / paths["frame"]),
                category=scene.category,
                duration_s=10.0,
            )
        )
    paths = {
        "pretrain": write_manifest(pretrain, out / "pretrain_vggcaps.jsonl"),
        "finetune": write_manifest(by_split["train"], out / "finetune_train.jsonl"),
        "val": write_manifest(by_split["val"], out / "val.jsonl"),
        "test": write_manifest(by_split["test"], out / "test.jsonl"),
    }
    return paths


# ----------------------------------------------------------------------------- 4. evaluation


def evaluate_systems(
    runs: list[ModelRun],
    records: list[ManifestRecord],
    scenes: list[Scene],
    evaluator: Any,
    workers: int,
) -> None:
    """Caption the test clips from audio alone; score them with the offline metrics and by the
    sources they name (`source_accuracy`)."""
    from multi2cap.demo.source_accuracy import score_sources

    sources = load_sources()
    for run in runs:
        captions = caption_clips(run.checkpoint, [r.audio for r in records], workers)
        run.captions = {r.id: c for r, c in zip(records, captions, strict=True)}
        result = evaluator(captions, [r.captions for r in records])
        run.scores = dict(result.corpus)
        run.scores.update(score_sources(run.captions, scenes, sources).as_results())
        if run.preference_checkpoint is not None:  # after preference tuning, same clips
            tuned = caption_clips(run.preference_checkpoint, [r.audio for r in records], workers)
            run.preference_scores = dict(evaluator(tuned, [r.captions for r in records]).corpus)
            by_id = {r.id: c for r, c in zip(records, tuned, strict=True)}
            run.preference_scores.update(score_sources(by_id, scenes, sources).as_results())


def caption_clips(checkpoint: Path, audio: list[str], workers: int) -> list[str]:
    """`Multi2Cap.caption` over the clips (greedy, `NUM_BEAMS`, the checkpoint's own
    `generation.max_new_tokens`), audio only."""
    import torch

    from multi2cap.model.multi2cap import Multi2Cap

    torch.set_num_threads(max(1, workers))
    model = Multi2Cap.from_pretrained(checkpoint, load_vision=False)
    return model.caption(audio, num_beams=NUM_BEAMS, batch_size=16)


def tagger_scores(backbones: Backbones, records: list[ManifestRecord], scenes: list[Scene]) -> dict:
    """The stage-0 audio tagger alone on the test clips (threshold 0.5): what the frozen encoder
    knows, to read the captions' source accuracy against."""
    import json as json_

    from multi2cap.demo.source_accuracy import score_sources
    from multi2cap.demo.stage0 import audio_tagger_predictions

    keys = json_.loads((backbones.audio / "sources.json").read_text(encoding="utf-8"))
    probs = audio_tagger_predictions(backbones.audio, [r.audio for r in records])
    by_key = {s.key: s for s in load_sources()}
    # The tagger's decisions written as a caption naming the sources, scored like the captions.
    named = {
        r.id: " and ".join(by_key[keys[j]].name for j in (row > 0.5).nonzero().flatten().tolist())
        for r, row in zip(records, probs, strict=True)
    }
    return score_sources(named, scenes, by_key.values()).as_results()


def probe_grounding(run: ModelRun, test_manifest: Path, out: Path) -> tuple[str, dict[str, Any]]:
    """The paper's Table 4 and Figure 6 on the pre-trained grounded checkpoint, test clips:
    R@1/R@5 of g, g_hat, a_mean and random vectors against V_cls, attention entropies and a
    t-SNE. Returns the fidelity table as markdown for the report, and its figures."""
    from multi2cap.analysis.probes import (
        collect_probe_set,
        fidelity,
        fidelity_markdown,
        load_probe_model,
        write_fidelity,
    )
    from multi2cap.analysis.tsne import write_tsne

    checkpoint = run.pretrain_dir / "final"
    model = load_probe_model(checkpoint)
    probe = collect_probe_set(model, read_manifest(test_manifest), batch_size=16)
    result = fidelity(probe, None)
    write_fidelity(result, out, title=f"demo: {checkpoint}")
    write_tsne(probe, out, by_category=True)
    summary = {
        "n": result.n,
        "chance_r1": result.chance_r1,
        "chance_r5": result.chance_r5,
        "rows": {
            r.kind: {
                "r1": r.r1,
                "r5": r.r5,
                "cos_to_vcls": r.cos_to_vcls,
                "attn_entropy": r.attn_entropy,
            }
            for r in result.rows
        },
    }
    # The table's own title becomes a sub-heading of the report's section.
    return fidelity_markdown(result).replace("# ", "### ", 1), summary


# ----------------------------------------------------------------------------- driver


def train_and_evaluate(
    config: DemoConfig,
    seed: int,
    root: Path,
    scenes: list[Scene],
    manifests: dict[str, Path],
    evaluator: Any,
    console: Console,
    timings: dict[str, float],
) -> SeedOutcome:
    """Stage 0, both systems' two stages and the test evaluation for one training seed, under
    `root` (the work folder for the first seed)."""
    from multi2cap.demo.training import build_backbones, train_systems

    started = mark = time.perf_counter()
    backbones = build_backbones(config, seed, root / "backbones", scenes, manifests, console)
    timings["stage 0 (backbones)"] = (now := time.perf_counter()) - mark
    mark = now
    console.print(
        "    stages 1-2: Multi2Cap (frames in pre-training only) and the audio-only baseline on "
        "the same budget, from the same stage-0 backbones."
    )
    runs = train_systems(config, seed, root / "runs", manifests, backbones, console)
    timings["training (both systems)"] = (now := time.perf_counter()) - mark
    mark = now
    console.print(
        "[bold]4/5 Captioning the test clips from audio alone[/bold] and scoring them "
        "(metrics and the sources they name)."
    )
    records = read_manifest(manifests["test"])
    evaluate_systems(runs, records, scenes, evaluator, config.workers)
    tagger = tagger_scores(backbones, records, scenes)
    timings["captioning + evaluation"] = time.perf_counter() - mark
    return SeedOutcome(seed, runs, tagger, time.perf_counter() - started)


def _quiet_transformers() -> None:
    """No "Loading weights" / "Writing model shards" bars between the demo's own lines: the
    demo loads and saves tiny models dozens of times. The variable reaches the spawned jobs."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def run_demo(config: DemoConfig) -> Path:
    """Run every stage; returns the path of `report.md`."""
    from multi2cap.demo.report import print_results, write_report, write_results_json
    from multi2cap.metrics import Evaluator

    console = Console()
    started = time.perf_counter()
    _quiet_transformers()
    config.workdir.mkdir(parents=True, exist_ok=True)
    console.print(
        "[bold]multi2cap demo[/bold]: VggCaps -> Multi2Cap -> audio-only captioning, on real "
        f"recordings, offline. Work folder: {config.workdir}"
    )
    timings: dict[str, float] = {}

    def timed(stage: str, start: float) -> float:
        now = time.perf_counter()
        timings[stage] = now - start
        return now

    mark = time.perf_counter()
    scenes = compose(config, console)
    mark = timed("compose scenes", mark)
    built = build_captions(config, scenes, console)
    manifests = write_manifests(config, scenes, built)
    mark = timed("VggCaps build + extraction", mark)
    console.print(
        "[bold]3/5 Training[/bold]: stage 0 pretrains each backbone on its own modality "
        "(training split only), then the paper's stages."
    )
    if config.overrides:
        console.print(f"    multi2cap recipe overrides: {' '.join(config.overrides)}")
    outcomes: list[SeedOutcome] = []
    with Evaluator(EVAL_METRICS) as evaluator:
        for index in range(config.seeds):
            seed = config.seed + index
            root = config.workdir if index == 0 else config.workdir / f"seed_{seed}"
            if config.seeds > 1:
                console.print(f"  [bold]training seed {seed}[/bold] ({index + 1}/{config.seeds})")
            seed_timings = timings if index == 0 else {}
            outcomes.append(
                train_and_evaluate(
                    config, seed, root, scenes, manifests, evaluator, console, seed_timings
                )
            )
            if index == 0:
                mark = time.perf_counter()
        if config.seeds > 1:
            timings[f"seeds {config.seed + 1}..{config.seed + config.seeds - 1}"] = (
                time.perf_counter() - mark
            )
    mark = time.perf_counter()
    console.print(
        "    probing the grounding tokens of the pre-trained model (paper Table 4, Figure 6)."
    )
    probes, probe_summary = probe_grounding(
        outcomes[0].runs[0], manifests["test"], config.workdir / "probes"
    )
    mark = timed("probes", mark)
    console.print("[bold]5/5 Report[/bold]")
    elapsed = time.perf_counter() - started
    report = write_report(config, scenes, manifests, outcomes, elapsed, timings, probes)
    write_results_json(
        config.workdir / "results.json",
        outcomes,
        probe_summary,
        timings,
        elapsed,
        backbones=config.backbones,
    )
    print_results(console, config, scenes, outcomes, report)
    return report


def _progress(config: DemoConfig, label: str, total: int) -> Any:
    from contextlib import contextmanager

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    @contextmanager
    def bar():  # type: ignore[no-untyped-def]
        if not config.progress:
            yield lambda: None
            return
        with Progress(
            TextColumn("    {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
        ) as progress:
            task = progress.add_task(label, total=total)
            yield lambda: progress.advance(task)

    return bar()
