"""The VggCaps build: extract -> caption (stage 1, stage 2, post-processing) -> split and export.

`build_vggcaps(BuildConfig) -> BuildSummary` runs the steps named in `config.steps`, one module
per stage of Figure 1: `extract`, `caption` (or `batch` for the Batch API) and `finalize`. Each
step reads and appends the work files of `multi2cap.vggcaps.store`, so any step can be rerun (or
the process killed) and it picks up where it stopped; the final files are rewritten from the work
files at the end of every run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from multi2cap.io import atomic_write_text
from multi2cap.llm_client.chat import RunStats
from multi2cap.vggcaps.batch import caption_with_batches
from multi2cap.vggcaps.caption import caption_async, make_backend, pending_captions
from multi2cap.vggcaps.cost import Estimate, estimate_build, image_tokens
from multi2cap.vggcaps.extract import extract_media, extraction_todo, select_clips
from multi2cap.vggcaps.finalize import finalize_dataset, write_failures
from multi2cap.vggcaps.prompts import load_prompts
from multi2cap.vggcaps.records import BuildConfig, BuildSummary, Clip, Identity
from multi2cap.vggcaps.store import FolderLock, Store, writing

log = logging.getLogger(__name__)


def caption_clips(
    config: BuildConfig, summary: BuildSummary, ids: set[str] | None = None
) -> RunStats:
    """Caption every extracted clip (or those in `ids`) that has no caption under the current
    backend, model and prompt version."""
    prompts = load_prompts(config.prompt_version)
    stats = RunStats()
    if config.backend == "openai-batch":
        identity = Identity(config.backend, config.openai.model, prompts)
        records, done = pending_captions(config, identity, ids)
        summary.skipped_done += done
        summary.captioned += caption_with_batches(config, records, identity, stats)
    else:
        backend = make_backend(config, stats)
        identity = Identity(config.backend, backend.model, prompts)
        records, done = pending_captions(config, identity, ids)
        summary.skipped_done += done
        summary.captioned += asyncio.run(caption_async(config, records, identity, stats, backend))
    _add_run(summary, identity, stats)
    return stats


def extract_and_caption(config: BuildConfig, clips: list[Clip], summary: BuildSummary) -> RunStats:
    """Extract and caption at the same time (`openai` and `offline` backends): requests start
    with the first extracted clip instead of after the last one."""
    prompts = load_prompts(config.prompt_version)
    stats = RunStats()
    backend = make_backend(config, stats)
    identity = Identity(config.backend, backend.model, prompts)
    todo = extraction_todo(config, clips, summary)
    waiting = {c.spec.id for c in todo}
    records, done = pending_captions(config, identity, {c.spec.id for c in clips} - waiting)
    summary.skipped_done += done
    summary.captioned += asyncio.run(
        caption_async(config, records, identity, stats, backend, extraction=(todo, summary))
    )
    _add_run(summary, identity, stats)
    return stats


def _add_run(summary: BuildSummary, identity: Identity, stats: RunStats) -> None:
    summary.backend = identity.backend
    summary.model = identity.model
    summary.prompt_version = identity.prompts.version
    summary.requests += stats.requests
    summary.retries += stats.retries
    summary.retry_wait_s += stats.retry_wait_s
    summary.prompt_tokens += stats.prompt_tokens
    summary.completion_tokens += stats.completion_tokens
    summary.cost_usd += stats.cost_usd


def dry_run_estimate(config: BuildConfig, clips: int) -> Estimate:
    """Cost and time of captioning `clips` clips, without calling anything.

    Prompt sizes come from the real templates (stage 2 with a 150-character stage-1 caption);
    at `image_detail='high'` the spectrogram counts at its configured size and the frame as
    640x360 (typical VGGSound video).
    """
    prompts = load_prompts(config.prompt_version)
    width, height = _spectrogram_size(config.spectrogram)
    detail = config.openai.image_detail
    return estimate_build(
        clips=clips,
        stage1_prompt_chars=len(prompts.render_stage1("x" * 16)),
        stage2_prompt_chars=len(prompts.render_stage2("x" * 150)),
        stage1_image_tokens=image_tokens(width, height, detail),
        stage2_image_tokens=image_tokens(640, 360, detail),
        prices=config.prices,
        batch=config.backend == "openai-batch",
        concurrency=config.openai.concurrency,
        rpm=config.openai.rpm,
    )


def _spectrogram_size(settings: Any) -> tuple[int, int]:
    width = getattr(settings, "width", None)
    height = getattr(settings, "height", None)
    return int(width or 512), int(height or 512)


def build_vggcaps(config: BuildConfig) -> BuildSummary:
    """Run the build steps of `config` and return what happened (see `BuildSummary`).

    The output folder is locked for the run (`FolderLock`: a second build on it raises
    `FolderLockedError`), and torn last lines left by a killed run are cut off first."""
    start = time.monotonic()
    summary = BuildSummary(out=str(config.out))
    clips: list[Clip] = []
    ids: set[str] | None = None
    store = Store(config.out)
    if "extract" in config.steps or config.dry_run:
        clips, summary.missing_videos = select_clips(config)
        summary.selected = len(clips)
        ids = {c.spec.id for c in clips}
        if config.dry_run:
            summary.estimate = dry_run_estimate(config, len(clips))
            summary.elapsed_s = time.monotonic() - start
            return summary
    else:
        store.require_work_dir()
    if "caption" in config.steps and config.backend != "offline":
        config.openai.api_key()  # a missing or unusable key stops the build before any work
    with writing(store.work_dir):
        store.work_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(config.out):
        for fragment in store.cut_torn_tails():
            log.warning(
                "cut a torn last line (a killed write) off its work file: kept in %s", fragment
            )
        _run_steps(config, clips, ids, summary)
        summary.elapsed_s = time.monotonic() - start
        with writing(store.work_dir / "last_run.json"):
            atomic_write_text(
                store.work_dir / "last_run.json", json.dumps(summary.to_json(), indent=2) + "\n"
            )
    return summary


def _run_steps(
    config: BuildConfig, clips: list[Clip], ids: set[str] | None, summary: BuildSummary
) -> None:
    streaming = {"extract", "caption"} <= set(config.steps) and config.backend != "openai-batch"
    if streaming:
        extract_and_caption(config, clips, summary)
    else:
        if "extract" in config.steps:
            extract_media(config, clips, summary)
        if "caption" in config.steps:
            caption_clips(config, summary, ids)
    finished = _finished(config)
    if "split" in config.steps:
        result = finalize_dataset(config.out, config.split_seed, config.test_fraction)
        summary.dataset_size, summary.test_size = result.records, result.test
    else:  # the summary points at failures.jsonl: keep it current without the split step
        write_failures(Store(config.out), finished, config.out / "failures.jsonl")
    failed = {r["id"] for r in Store(config.out).records("failures")} - finished
    summary.failed = len(failed if ids is None else failed & ids)


def _finished(config: BuildConfig) -> set[str]:
    """Clips finished by the last step this build ran (captioned, or extracted when the build
    only extracts)."""
    store = Store(config.out)
    if "caption" in config.steps or "split" in config.steps:
        return {r["id"] for r in store.records("stage2")}
    return {r["id"] for r in store.records("extract")}
