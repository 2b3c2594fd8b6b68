"""The offline demo: the paper end to end, in miniature, on real recordings and pictures.

Stages (each cached in the work folder, so a rerun resumes):
1. compose the audio-visual scene set and mux it into real mp4 files (`scenes.py`);
2. build VggCaps-style captions for the training clips with the VggCaps builder (the `offline`
   backend, or a real OpenAI-compatible endpoint when given one), and extract the audio of the
   validation and test clips with the same builder (extract step only);
3. pre-train Multi2Cap with frames, then fine-tune it audio-only; train the audio-only baseline
   (grounding off) through the same two stages with the same budget;
4. caption the test clips from audio alone, evaluate both models with the offline metrics;
5. write `report.md`, figures, `captions.csv` and print one results table (x100).

Every number comes from this run; nothing is tuned per run.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from multi2cap.data.manifest import ManifestRecord, read_manifest, write_manifest
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
from multi2cap.io import atomic_write_text
from multi2cap.media.spectrogram_image import SpectrogramImageSettings

log = logging.getLogger(__name__)

PAPER_METRICS = ("bleu_1", "bleu_4", "rouge_l", "meteor", "cider_d")
# Half the builder's default size: the demo's clips are synthetic scenes, and the image costs
# most of the extraction time (a real vision LLM still reads it well at this size).
DEMO_SPECTROGRAM = SpectrogramImageSettings(width=400, height=200)
EVAL_METRICS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor", "cider_d", "vocab"]


@dataclass
class DemoConfig:
    """What the demo runs. `quick` shrinks the scene set and the training budget (~2 minutes)."""

    workdir: Path = Path("demo_work")
    quick: bool = False
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    seed: int = 0
    workers: int = 2
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    pretrain_epochs: int | None = None
    finetune_epochs: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        small = self.quick
        self.n_train = self.n_train or (160 if small else 2000)
        self.n_val = self.n_val or (24 if small else 200)
        self.n_test = self.n_test or (40 if small else 200)
        self.pretrain_epochs = self.pretrain_epochs or 2
        self.finetune_epochs = self.finetune_epochs or 2
        if self.model and not self.base_url:
            raise ValueError("--model needs --base-url (an OpenAI-compatible endpoint)")


@dataclass
class ModelRun:
    """One trained system (grounded Multi2Cap or the audio-only baseline)."""

    name: str
    pretrain_dir: Path
    finetune_dir: Path
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)


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


# ----------------------------------------------------------------------------- 3. training


def demo_recipe(
    config: DemoConfig,
    stage: str,
    manifests: dict[str, Path],
    init_from: Path,
    output_dir: Path,
) -> dict[str, Any]:
    """The demo's training recipe (written next to each run as `recipe.yaml`)."""
    epochs = config.pretrain_epochs if stage == "pretrain" else config.finetune_epochs
    return {
        "stage": stage,
        "seed": config.seed,
        "init_from": str(init_from),
        "data": {
            "train_manifest": str(manifests["pretrain" if stage == "pretrain" else "finetune"]),
            "val_manifest": str(manifests["val"]),
            "clip_seconds": 10.0,
            "num_workers": 0,
        },
        "augment": {"enabled": True},
        "optim": {
            "lr": 3e-3 if stage == "pretrain" else 2e-3,
            "batch_size": 16,
            "micro_batch_size": 16,
            "epochs": epochs,
            "warmup_epochs": 0.5,
        },
        "eval": {
            "every_epochs": epochs,
            "max_items": 48 if config.quick else 96,
            "batch_size": 16,
            "metrics": ["bleu_4", "rouge_l", "cider_d"],
            "best_metric": "cider_d",
            "num_beams": 1,
            "max_new_tokens": 30,
        },
        "runtime": {
            "output_dir": str(output_dir),
            "cpu": True,
            "cpu_threads": 1,
            "keep_last_checkpoints": 1,
            "log_every_steps": 1,
            "progress": config.progress,
            "tensorboard": False,
        },
    }


def _initial_model(
    config: DemoConfig, manifests: dict[str, Path], grounding: bool, out: Path
) -> Path:
    """A tiny Multi2Cap with random backbones whose vocabulary covers every training caption
    (VggCaps-style and reference-style), so pre-training and fine-tuning share one tokenizer."""
    from multi2cap.model.config import Multi2CapConfig
    from multi2cap.model.multi2cap import Multi2Cap

    if (out / "config.yaml").is_file():
        return out
    texts = [
        caption
        for name in ("pretrain", "finetune")
        for record in read_manifest(manifests[name])
        for caption in record.captions
    ]
    import torch

    torch.manual_seed(config.seed)
    model_config = Multi2CapConfig.tiny(
        texts, grounding=grounding, prompt="Describe the sound. Audio: <audio> Caption:"
    )
    Multi2Cap(model_config, load_vision=grounding).save_pretrained(out)
    return out


def train_system(
    config: DemoConfig, manifests: dict[str, Path], name: str, grounding: bool, console: Console
) -> ModelRun:
    """Pre-train then fine-tune one system; returns its fine-tuned checkpoint and history."""
    import yaml

    from multi2cap.train.config import TrainConfig
    from multi2cap.train.engine import train

    root = config.workdir / "runs" / name
    init = _initial_model(config, manifests, grounding, root / "init")
    history: list[dict[str, Any]] = []
    previous = init
    dirs = {}
    for stage in ("pretrain", "finetune"):
        out = root / stage
        recipe = demo_recipe(config, stage, manifests, previous, out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))
        what = (
            "with frames: L_cap + alpha L_align + beta L_vfr"
            if grounding and stage == "pretrain"
            else "audio only: L_cap" + (" through g_hat" if grounding else ", no grounding")
        )
        console.print(f"    {name}: {stage} ({what}), {recipe['optim']['epochs']} epochs")
        done_file = out / "demo_stage_done.json"
        if done_file.is_file():
            done = json.loads(done_file.read_text(encoding="utf-8"))
            console.print("      (cached)")
        else:
            resume = any(out.glob("checkpoints/*"))
            result = train(TrainConfig.model_validate(recipe), resume=resume)
            done = {"final": str(result.final_checkpoint), "history": result.history}
            atomic_write_text(done_file, json.dumps(done))
        history += [{**r, "stage": stage} for r in done["history"]]
        previous = Path(done["final"])
        dirs[stage] = out
    return ModelRun(
        name=name,
        pretrain_dir=dirs["pretrain"],
        finetune_dir=dirs["finetune"],
        checkpoint=previous,
        history=history,
    )


SYSTEMS = (("multi2cap", True), ("audio_only_baseline", False))


def _train_system_job(args: tuple[DemoConfig, dict[str, Path], str, bool]) -> ModelRun:
    config, manifests, name, grounding = args
    quiet = dataclasses.replace(config, progress=False)
    return train_system(quiet, manifests, name, grounding, Console(quiet=True))


def _expected_steps(config: DemoConfig, manifests: dict[str, Path]) -> int:
    batch = 16
    n_pre = len(read_manifest(manifests["pretrain"]))
    n_fine = len(read_manifest(manifests["finetune"]))
    return config.pretrain_epochs * (n_pre // batch) + config.finetune_epochs * (n_fine // batch)


def _steps_done(root: Path) -> int:
    done = 0
    for stage in ("pretrain", "finetune"):
        log_file = root / stage / "train_log.csv"
        if log_file.is_file():
            done += max(0, len(log_file.read_text(encoding="utf-8").splitlines()) - 1)
    return done


def train_systems(
    config: DemoConfig, manifests: dict[str, Path], console: Console
) -> list[ModelRun]:
    """Train Multi2Cap and the audio-only baseline, side by side when two workers are allowed
    (each process on one torch thread: tiny models gain nothing from intra-op threads, and the
    two runs then share the machine's cores evenly)."""
    for name, grounding in SYSTEMS:
        _initial_model(config, manifests, grounding, config.workdir / "runs" / name / "init")
    if config.workers < 2:
        return [train_system(config, manifests, n, g, console) for n, g in SYSTEMS]
    import multiprocessing

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    total = _expected_steps(config, manifests)
    jobs = [(config, manifests, name, grounding) for name, grounding in SYSTEMS]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        futures = [pool.submit(_train_system_job, job) for job in jobs]
        with Progress(
            TextColumn("    {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeRemainingColumn(),
            disable=not config.progress,
            console=console,
        ) as progress:
            tasks = {
                name: progress.add_task(f"{name} (pre-train + fine-tune)", total=total)
                for name, _ in SYSTEMS
            }
            while not all(f.done() for f in futures):
                for name, _ in SYSTEMS:
                    root = config.workdir / "runs" / name
                    progress.update(tasks[name], completed=_steps_done(root))
                time.sleep(0.5)
        runs = [f.result() for f in futures]
    for run in runs:
        steps = sum(r.get("kind") == "train" for r in run.history)
        console.print(f"    {run.name}: {steps} optimizer steps, checkpoint {run.checkpoint}")
    return runs


# ----------------------------------------------------------------------------- 4. evaluation


def evaluate_systems(runs: list[ModelRun], test_manifest: Path, workers: int) -> None:
    """Caption the test clips from audio alone and score them with the offline metrics (one warm
    evaluator for both systems: the METEOR JVM starts once)."""
    from multi2cap.metrics import Evaluator

    records = read_manifest(test_manifest)
    with Evaluator(EVAL_METRICS) as evaluator:
        for run in runs:
            captions = caption_clips(run.checkpoint, [r.audio for r in records], workers)
            run.captions = {r.id: c for r, c in zip(records, captions, strict=True)}
            result = evaluator(captions, [r.captions for r in records])
            run.scores = dict(result.corpus)


def caption_clips(checkpoint: Path, audio: list[str], workers: int) -> list[str]:
    """`Multi2Cap.caption` over the clips (beam 3), audio only."""
    import torch

    from multi2cap.model.multi2cap import Multi2Cap

    torch.set_num_threads(max(1, workers))
    model = Multi2Cap.from_pretrained(checkpoint, load_vision=False)
    return model.caption(audio, num_beams=3, max_new_tokens=30, batch_size=16)


def probe_grounding(run: ModelRun, test_manifest: Path, out: Path) -> str:
    """The paper's Table 4 and Figure 6 on the pre-trained grounded checkpoint, test clips:
    R@1/R@5 of g, g_hat, a_mean and random vectors against V_cls, attention entropies and a
    t-SNE. Returns the fidelity table as markdown for the report."""
    from multi2cap.analysis.probes import (
        collect_probe_set,
        fidelity,
        fidelity_markdown,
        load_probe_model,
        write_fidelity,
        write_tsne,
    )

    checkpoint = run.pretrain_dir / "final"
    model = load_probe_model(checkpoint)
    probe = collect_probe_set(model, read_manifest(test_manifest), batch_size=16)
    result = fidelity(probe, None)
    write_fidelity(result, out, title=f"demo: {checkpoint}")
    write_tsne(probe, out, by_category=True)
    # The table's own title becomes a sub-heading of the report's section.
    return fidelity_markdown(result).replace("# ", "### ", 1)


# ----------------------------------------------------------------------------- driver


def run_demo(config: DemoConfig) -> Path:
    """Run every stage; returns the path of `report.md`."""
    from multi2cap.demo.report import print_results, write_report

    console = Console()
    started = time.perf_counter()
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
        "[bold]3/5 Training[/bold] Multi2Cap (frames in pre-training only) and the audio-only "
        "baseline on the same budget."
    )
    runs = train_systems(config, manifests, console)
    mark = timed("training (both systems)", mark)
    console.print("[bold]4/5 Captioning the test clips from audio alone[/bold] and scoring them.")
    evaluate_systems(runs, manifests["test"], config.workers)
    mark = timed("captioning + evaluation", mark)
    console.print(
        "    probing the grounding tokens of the pre-trained model (paper Table 4, Figure 6)."
    )
    probes = probe_grounding(runs[0], manifests["test"], config.workdir / "probes")
    mark = timed("probes", mark)
    console.print("[bold]5/5 Report[/bold]")
    report = write_report(
        config, scenes, manifests, runs, time.perf_counter() - started, timings, probes
    )
    print_results(console, config, scenes, runs, report)
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
