"""The VggCaps build: extract -> caption (stage 1, stage 2, post-processing) -> split and export.

`build_vggcaps(BuildConfig) -> BuildSummary` runs the steps named in `config.steps`; each step
reads and appends the work files of `multi2cap.vggcaps.store`, so any step can be rerun (or the
process killed) and it picks up where it stopped. The final files are derived from the work files
and rewritten atomically, sorted by id, at the end of every run:

- `vggcaps.jsonl` (ARCHITECTURE.md section 3 records, plus `model`),
- `manifest.jsonl` (`multi2cap.data.manifest`, image = frame, one caption per clip),
- `vggcaps.parquet` (the same records, usage flattened to columns),
- `failures.jsonl` (clips that are still unfinished, with the latest reason).
"""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from multi2cap.data.manifest import ManifestRecord, write_manifest
from multi2cap.io import atomic_write_bytes, atomic_write_text, write_jsonl
from multi2cap.vggcaps.backends import (
    Backend,
    Completion,
    OfflineBackend,
    OpenAIChatBackend,
    OpenAISettings,
    RequestFailed,
    RunStats,
    StageRequest,
)
from multi2cap.vggcaps.catalog import ClipSpec, index_videos, read_categories
from multi2cap.vggcaps.cost import Estimate, Prices, estimate_build, image_tokens
from multi2cap.vggcaps.postprocess import postprocess
from multi2cap.vggcaps.progress import Bar, ProgressBoard, StageProgress
from multi2cap.vggcaps.prompts import PromptSet, load_prompts
from multi2cap.vggcaps.split import DEFAULT_SPLIT_SEED, TEST_FRACTION, assign_split, in_shard
from multi2cap.vggcaps.store import BufferedAppender, Store, stage_key

BACKENDS = ("openai", "openai-batch", "offline")
STEPS = ("extract", "caption", "split")
DATASET_NAME = "vggcaps"
CLIP_SECONDS = 10.0
OUTPUT_SAMPLE_RATE = 16000


@dataclass
class BatchSettings:
    """Batch API limits (OpenAI: <= 50,000 requests and <= 200 MB per input file) and polling."""

    max_requests: int = 50_000
    max_bytes: int = 200_000_000
    poll_interval_s: float = 60.0
    max_wait_s: float = 26 * 3600.0


@dataclass
class BuildConfig:
    """Everything one build needs.

    `videos`/`categories`: the clip folder and its CSV (see `multi2cap.vggcaps.catalog`);
    `out`: the output folder. `backend`: 'openai', 'openai-batch' or 'offline'. `content_retries`:
    how many times a rejected output is re-asked per stage. `shard`: (i, N) by stable hash of the
    id. `limit`: at most this many clips (after sharding, in id order). `workers`: extraction
    processes. `spectrogram`: `multi2cap.media.spectrogram_image.SpectrogramImageSettings`
    (None: its defaults). `offline_concurrency`: threads computing offline captions.
    """

    out: Path
    videos: Path | None = None
    categories: Path | None = None
    backend: str = "openai"
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    prices: Prices = field(default_factory=Prices)
    prompt_version: str = "v1"
    content_retries: int = 2
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None
    dry_run: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    clip_seconds: float = CLIP_SECONDS
    spectrogram: Any = None
    jpeg_quality: int = 90
    split_seed: int = DEFAULT_SPLIT_SEED
    test_fraction: float = TEST_FRACTION
    progress: bool = True
    steps: tuple[str, ...] = STEPS
    offline_concurrency: int = 4

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        unknown = set(self.steps) - set(STEPS)
        if unknown:
            raise ValueError(f"unknown steps {sorted(unknown)}; known: {STEPS}")


@dataclass
class BuildSummary:
    """What a run did. `failed` counts selected clips that are unfinished after the run
    (listed in failures.jsonl); `missing_videos` counts CSV rows without a video file."""

    selected: int = 0
    missing_videos: int = 0
    extracted: int = 0
    captioned: int = 0
    skipped_done: int = 0
    failed: int = 0
    dataset_size: int = 0
    test_size: int = 0
    requests: int = 0
    retries: int = 0
    retry_wait_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    backend: str = ""
    model: str = ""
    prompt_version: str = ""
    estimate: Estimate | None = None
    out: str = ""

    @property
    def exit_code(self) -> int:
        """0 when every selected clip finished, 1 when some failed."""
        return 1 if self.failed else 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Clip:
    """A selected clip: its CSV row and its video file."""

    spec: ClipSpec
    video: Path


def select_clips(config: BuildConfig) -> tuple[list[Clip], int]:
    """CSV rows joined to video files by id, sharded and limited; also the number of rows whose
    video is missing (within the shard)."""
    if config.categories is None or config.videos is None:
        raise ValueError("extracting needs both `videos` and `categories`")
    specs = [s for s in read_categories(config.categories) if in_shard(s.id, config.shard)]
    videos = index_videos(config.videos)
    clips = [Clip(spec, videos[spec.id]) for spec in specs if spec.id in videos]
    missing = len(specs) - len(clips)
    if config.limit is not None:
        clips = clips[: config.limit]
    return clips, missing


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- extraction


@dataclass(frozen=True)
class _ExtractJob:
    clip: Clip
    out_dir: Path
    clip_seconds: float
    spectrogram: Any
    jpeg_quality: int


def media_paths(clip_id: str) -> dict[str, str]:
    """Where a clip's media go, relative to the output folder."""
    return {
        "audio": f"media/audio/{clip_id}.flac",
        "frame": f"media/frames/{clip_id}.jpg",
        "spectrogram": f"media/spectrograms/{clip_id}.png",
    }


def read_start(spec_start_s: float | None, media_duration_s: float | None, clip_s: float) -> float:
    """Where to read in the file. VGGSound clips on disk are already cut to their segment, so the
    start in the name refers to the YouTube video: read from 0 unless the file is a full video
    long enough to hold [start, start + clip_s)."""
    if spec_start_s and media_duration_s is not None and media_duration_s >= spec_start_s + clip_s:
        return float(spec_start_s)
    return 0.0


def _extract_one(job: _ExtractJob) -> dict[str, Any]:
    """Decode one clip and write its frame, audio and spectrogram (each atomically). Runs in a
    worker process; returns {'record': ...} or {'error': reason}, never raises for bad media."""
    import soundfile

    from multi2cap.media.errors import MediaError
    from multi2cap.media.spectrogram_image import SpectrogramImageSettings, spectrogram_image
    from multi2cap.media.video import extract_clip, probe_media

    spec = job.clip.spec
    try:
        info = probe_media(job.clip.video)
        start = read_start(spec.start_s, info.duration_s, job.clip_seconds)
        clip = extract_clip(job.clip.video, start_s=start, duration_s=job.clip_seconds, n_frames=1)
        settings = job.spectrogram or SpectrogramImageSettings()
        image = spectrogram_image(clip.audio, clip.sample_rate, settings)
        paths = media_paths(spec.id)
        frame_bytes = io.BytesIO()
        clip.frames[0].convert("RGB").save(frame_bytes, format="JPEG", quality=job.jpeg_quality)
        audio_bytes = io.BytesIO()
        soundfile.write(audio_bytes, clip.audio, clip.sample_rate, format="FLAC")
        image_bytes = io.BytesIO()
        image.save(image_bytes, format="PNG", compress_level=1)
        atomic_write_bytes(job.out_dir / paths["frame"], frame_bytes.getvalue())
        atomic_write_bytes(job.out_dir / paths["audio"], audio_bytes.getvalue())
        atomic_write_bytes(job.out_dir / paths["spectrogram"], image_bytes.getvalue())
    except (MediaError, OSError, ValueError, RuntimeError, IndexError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    return {
        "record": {
            "id": spec.id,
            "category": spec.category,
            "youtube_id": spec.youtube_id,
            "start_s": spec.start_s,
            "vggsound_split": spec.vggsound_split,
            "video": str(job.clip.video),
            "read_start_s": start,
            "duration_s": info.duration_s,
            "padded": bool(clip.padded),
            **paths,
        }
    }


def extract_media(config: BuildConfig, clips: list[Clip], summary: BuildSummary) -> None:
    """Extract every selected clip not yet in the extract store, over `config.workers` processes.

    Records are appended as results arrive; a decode failure goes to the failure log and the run
    goes on.
    """
    todo = _extraction_todo(config, clips, summary)
    with StageProgress("extract", len(todo), None, config.progress) as bar:
        run_extraction(config, todo, summary, lambda _record: bar.advance())


def _extraction_todo(config: BuildConfig, clips: list[Clip], summary: BuildSummary) -> list[Clip]:
    done = Store(config.out).by_key("extract", field="id")
    todo = [c for c in clips if c.spec.id not in done]
    summary.skipped_done += len(clips) - len(todo)
    return todo


def run_extraction(
    config: BuildConfig,
    todo: list[Clip],
    summary: BuildSummary,
    on_result: Callable[[dict[str, Any] | None], None],
) -> None:
    """Extract `todo` in order, storing each result; `on_result` gets the extract record, or
    None for a clip that failed."""
    store = Store(config.out)
    jobs = (
        _ExtractJob(c, config.out, config.clip_seconds, config.spectrogram, config.jpeg_quality)
        for c in todo
    )
    for job_clip, result in zip(todo, _map_jobs(jobs, config.workers), strict=True):
        if "record" in result:
            store.append("extract", [result["record"]])
            summary.extracted += 1
            on_result(result["record"])
        else:
            store.append("failures", [failure_record(job_clip.spec.id, "extract", result["error"])])
            on_result(None)


def _map_jobs(jobs: Iterator[_ExtractJob], workers: int) -> Iterator[dict[str, Any]]:
    """Results in job order, at most 4 jobs per worker queued at a time (memory stays flat at
    200k clips). Workers are forked where the platform can (explicitly: Python 3.14 defaults to
    a fork server, which re-imports the caller's main module and breaks scripts that call
    `build_vggcaps` without an `if __name__ == "__main__"` guard).

    Extraction runs BLAS and OpenMP single-threaded: parallelism comes from the processes, and
    OpenBLAS's spinning helper threads doubled the CPU time per clip for no gain in wall time
    (12.8 vs 6.1 CPU-s for 120 clips in 6.9 vs 6.2 s, one process), which also kept a second
    process from adding anything on two cores."""
    if workers <= 1:
        with threadpool_limits(limits=1):
            yield from map(_extract_one, jobs)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_single_threaded_worker
    ) as pool:
        queued: deque[Future[dict[str, Any]]] = deque()
        for job in jobs:
            queued.append(pool.submit(_extract_one, job))
            if len(queued) >= 4 * workers:
                yield queued.popleft().result()
        while queued:
            yield queued.popleft().result()


def _single_threaded_worker() -> None:
    threadpool_limits(limits=1)


def failure_record(clip_id: str, stage: str, reason: str, **extra: Any) -> dict[str, Any]:
    """A failure-log record (UTC time stamp included)."""
    return {"id": clip_id, "stage": stage, "reason": reason, "time": _now(), **extra}


# --------------------------------------------------------------------------- captioning


@dataclass
class Identity:
    """Who answers the caption requests (backend, model) with which prompts; part of every
    resume key, so changing any of them redoes the captions instead of mixing them."""

    backend: str
    model: str
    prompts: PromptSet

    def key(self, clip_id: str, stage: int) -> str:
        return stage_key(clip_id, stage, self.prompts.version, self.backend, self.model)


def make_backend(config: BuildConfig, stats: RunStats) -> Backend:
    """The per-request backend of a config ('openai' or 'offline')."""
    if config.backend == "offline":
        return OfflineBackend()
    return OpenAIChatBackend(config.openai, stats)


def stage_request(
    record: dict[str, Any], stage: int, prompts: PromptSet, out_dir: Path, raw: str | None = None
) -> StageRequest:
    """The request of one clip and stage, from its extract record."""
    if stage == 1:
        prompt, image = prompts.render_stage1(record["category"]), record["spectrogram"]
    else:
        prompt, image = prompts.render_stage2(raw or ""), record["frame"]
    return StageRequest(
        clip_id=record["id"],
        stage=stage,
        prompt=prompt,
        image=out_dir / image,
        category=record["category"],
        audio=out_dir / record["audio"],
        raw_caption=raw,
    )


def account(stats: RunStats, prices: Prices, completion: Completion, batch: bool) -> None:
    """Add one completion's tokens and dollars to the live counters."""
    stats.prompt_tokens += completion.prompt_tokens
    stats.completion_tokens += completion.completion_tokens
    stats.cost_usd += prices.cost(completion.prompt_tokens, completion.completion_tokens, batch)


class StageAttempts:
    """The asks of one clip and stage: summed usage, rejected outputs with their reasons, and
    the accepted caption once post-processing lets one through."""

    def __init__(self, request: StageRequest) -> None:
        self.request = request
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.rejected: list[dict[str, Any]] = []
        self.accepted: tuple[str | None, str] | None = None

    def judge(self, completion: Completion) -> bool:
        """Post-process one completion; True when it was accepted."""
        self.usage["prompt_tokens"] += completion.prompt_tokens
        self.usage["completion_tokens"] += completion.completion_tokens
        if completion.refusal:
            self.rejected.append({"output": completion.refusal, "reason": "refusal"})
            return False
        outcome = postprocess(completion.text, self.request.category, self.request.stage)
        if outcome.caption is None:
            self.rejected.append({"output": completion.text, "reason": outcome.reason})
            return False
        self.accepted = (completion.text, outcome.caption)
        return True

    def record(self, identity: Identity) -> dict[str, Any]:
        """The stage-store record of the accepted caption."""
        assert self.accepted is not None
        output, caption = self.accepted
        return {
            "key": identity.key(self.request.clip_id, self.request.stage),
            "id": self.request.clip_id,
            "stage": self.request.stage,
            "output": output,
            "caption": caption,
            "usage": self.usage,
            "attempts": len(self.rejected) + 1,
            "rejected": self.rejected,
        }

    def failure(self, reason: str | None = None) -> dict[str, Any]:
        """Failure details: a transport `reason`, or the last rejection."""
        if reason is None:
            last = self.rejected[-1]["reason"] if self.rejected else "no answer"
            reason = f"rejected {len(self.rejected)} outputs; last: {last}"
        return {"reason": reason, "rejected": self.rejected, "usage": self.usage}


class _Captioner:
    """Runs stage 1 then stage 2 per clip with content re-asks, writing through the appender."""

    def __init__(
        self,
        config: BuildConfig,
        backend: Backend,
        identity: Identity,
        stats: RunStats,
        appender: BufferedAppender,
        stage1_done: dict[str, dict[str, Any]],
    ) -> None:
        self.config, self.backend, self.identity = config, backend, identity
        self.stats, self.appender, self.stage1_done = stats, appender, stage1_done

    async def ask(self, request: StageRequest) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(accepted stage record or None, failure details) after at most 1 + content_retries
        asks."""
        attempt = StageAttempts(request)
        for _ in range(1 + self.config.content_retries):
            try:
                completion = await self.backend.complete(request)
            except RequestFailed as err:
                return None, attempt.failure(err.reason)
            except (OSError, RuntimeError) as err:  # this clip's image or audio is unreadable
                return None, attempt.failure(f"unreadable media: {type(err).__name__}: {err}")
            account(self.stats, self.config.prices, completion, batch=False)
            if attempt.judge(completion):
                return attempt.record(self.identity), {}
        return None, attempt.failure()

    async def caption(self, record: dict[str, Any]) -> bool:
        """Finish one clip; False when a stage failed (recorded in the failure log)."""
        clip_id, prompts, out = record["id"], self.identity.prompts, self.config.out
        first = self.stage1_done.get(self.identity.key(clip_id, 1))
        if first is None:
            first, details = await self.ask(stage_request(record, 1, prompts, out))
            if first is None:
                self._fail(clip_id, "stage1", details)
                return False
            self.appender.put("stage1", first)
        raw = first["caption"]
        second, details = await self.ask(stage_request(record, 2, prompts, out, raw))
        if second is None:
            self._fail(clip_id, "stage2", details)
            return False
        second["raw_caption"] = raw
        second["usage"] = {"stage1": first["usage"], "stage2": second["usage"]}
        second.update(self._provenance())
        self.appender.put("stage2", second)
        return True

    def _provenance(self) -> dict[str, str]:
        return {
            "backend": self.identity.backend,
            "model": self.identity.model,
            "prompt_version": self.identity.prompts.version,
        }

    def _fail(self, clip_id: str, stage: str, details: dict[str, Any]) -> None:
        self.appender.put(
            "failures",
            failure_record(
                clip_id,
                stage,
                details["reason"],
                rejected=details["rejected"],
                **self._provenance(),
            ),
        )


def pending_captions(
    config: BuildConfig, identity: Identity, ids: set[str] | None
) -> tuple[list[dict[str, Any]], int]:
    """Extract records still lacking a stage-2 caption under this identity, and how many are
    already done. `ids` restricts to a selection (None: every extracted clip)."""
    store = Store(config.out)
    done = {r["id"] for r in store.records("stage2") if r.get("key") == identity.key(r["id"], 2)}
    extracted = [r for r in store.records("extract") if ids is None or r["id"] in ids]
    extracted.sort(key=lambda r: r["id"])
    if config.limit is not None and ids is None:
        extracted = extracted[: config.limit]
    todo = [r for r in extracted if r["id"] not in done]
    return todo, len(extracted) - len(todo)


async def _caption_async(
    config: BuildConfig,
    records: list[dict[str, Any]],
    identity: Identity,
    stats: RunStats,
    backend: Backend,
    extraction: tuple[list[Clip], BuildSummary] | None = None,
) -> int:
    """Caption `records`; with `extraction` (clips to extract, summary), also extract those clips
    in a thread (over the process pool) and caption each as soon as its media are written."""
    store = Store(config.out)
    appender = BufferedAppender(store)
    appender.start()
    captioner = _Captioner(config, backend, identity, stats, appender, store.by_key("stage1"))
    concurrency = max(
        1, config.offline_concurrency if config.backend == "offline" else config.openai.concurrency
    )
    waiting = iter(records)
    finished = 0
    todo = extraction[0] if extraction is not None else []
    with ProgressBoard(config.progress) as board:
        extract_bar = board.bar("extract", len(todo)) if extraction is not None else None
        caption_bar = board.bar("caption", len(records) + len(todo), stats)
        feed = (
            _ExtractionFeed(config, extraction, extract_bar, caption_bar, concurrency)
            if extraction is not None and extract_bar is not None
            else None
        )

        async def caption(record: dict[str, Any]) -> None:
            nonlocal finished
            ok = await captioner.caption(record)
            finished += ok
            caption_bar.advance()

        async def worker() -> None:
            for record in waiting:  # already extracted (an iterator shared by the workers)
                await caption(record)
            while feed is not None and (record := await feed.get()) is not None:
                await caption(record)

        try:
            await asyncio.gather(
                *([asyncio.to_thread(feed.run)] if feed else []),
                *(worker() for _ in range(concurrency)),
            )
        finally:
            if feed is not None:
                feed.stop()
            await appender.aclose()
            await backend.aclose()
    return finished


MAX_PENDING_RECORDS = 4096


class _FeedStopped(Exception):
    """The caption side ended early (an error, Ctrl-C); extraction stops after the current clip."""


class _ExtractionFeed:
    """Extraction in a worker thread feeding the caption workers on the event loop.

    At most `MAX_PENDING_RECORDS` extracted clips wait for captioning, so memory stays flat when
    the endpoint is slower than extraction; `stop` ends the thread early.
    """

    def __init__(
        self,
        config: BuildConfig,
        extraction: tuple[list[Clip], BuildSummary],
        extract_bar: Bar,
        caption_bar: Bar,
        consumers: int,
    ) -> None:
        self._config, (self._todo, self._summary) = config, extraction
        self._extract_bar, self._caption_bar, self._consumers = extract_bar, caption_bar, consumers
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._slots = threading.Semaphore(MAX_PENDING_RECORDS)
        self._stopped = threading.Event()

    async def get(self) -> dict[str, Any] | None:
        """The next extracted record, or None when extraction is over."""
        record = await self._queue.get()
        if record is not None:
            self._slots.release()
        return record

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        """The thread body: extract, hand over each record, then one None per consumer."""
        try:
            run_extraction(self._config, self._todo, self._summary, self._hand_over)
        except _FeedStopped:
            pass
        finally:
            for _ in range(self._consumers):
                self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    def _hand_over(self, record: dict[str, Any] | None) -> None:
        self._loop.call_soon_threadsafe(self._extract_bar.advance)
        if record is None:  # a clip that failed to extract will never be captioned
            self._loop.call_soon_threadsafe(self._caption_bar.advance)
            return
        while not self._slots.acquire(timeout=0.2):
            if self._stopped.is_set():
                raise _FeedStopped
        self._loop.call_soon_threadsafe(self._queue.put_nowait, record)
        if self._stopped.is_set():
            raise _FeedStopped


def caption_clips(
    config: BuildConfig, summary: BuildSummary, ids: set[str] | None = None
) -> RunStats:
    """Caption every extracted clip (or those in `ids`) that has no caption under the current
    backend, model and prompt version."""
    prompts = load_prompts(config.prompt_version)
    stats = RunStats()
    if config.backend == "openai-batch":
        from multi2cap.vggcaps.batch import caption_with_batches

        identity = Identity(config.backend, config.openai.model, prompts)
        records, done = pending_captions(config, identity, ids)
        summary.skipped_done += done
        summary.captioned += caption_with_batches(config, records, identity, stats)
    else:
        backend = make_backend(config, stats)
        identity = Identity(config.backend, backend.model, prompts)
        records, done = pending_captions(config, identity, ids)
        summary.skipped_done += done
        summary.captioned += asyncio.run(_caption_async(config, records, identity, stats, backend))
    _add_run(summary, identity, stats)
    return stats


def extract_and_caption(config: BuildConfig, clips: list[Clip], summary: BuildSummary) -> RunStats:
    """Extract and caption at the same time (`openai` and `offline` backends): requests start
    with the first extracted clip instead of after the last one."""
    prompts = load_prompts(config.prompt_version)
    stats = RunStats()
    backend = make_backend(config, stats)
    identity = Identity(config.backend, backend.model, prompts)
    todo = _extraction_todo(config, clips, summary)
    waiting = {c.spec.id for c in todo}
    records, done = pending_captions(config, identity, {c.spec.id for c in clips} - waiting)
    summary.skipped_done += done
    summary.captioned += asyncio.run(
        _caption_async(config, records, identity, stats, backend, extraction=(todo, summary))
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


# --------------------------------------------------------------------------- split and export


@dataclass(frozen=True)
class FinalizeResult:
    records: int
    test: int
    failures: int


def vggcaps_record(
    extract: dict[str, Any], caption: dict[str, Any], split_seed: int, test_fraction: float
) -> dict[str, Any]:
    """The released record (ARCHITECTURE.md section 3) of one finished clip."""
    return {
        "id": extract["id"],
        "youtube_id": extract.get("youtube_id"),
        "start_s": extract.get("start_s"),
        "category": extract["category"],
        "vggsound_split": extract.get("vggsound_split"),
        "split": assign_split(extract["id"], split_seed, test_fraction),
        "audio": extract["audio"],
        "frame": extract["frame"],
        "spectrogram": extract["spectrogram"],
        "duration_s": extract.get("duration_s"),
        "raw_caption": caption["raw_caption"],
        "caption": caption["caption"],
        "backend": caption["backend"],
        "model": caption["model"],
        "prompt_version": caption["prompt_version"],
        "usage": caption["usage"],
    }


def finalize_dataset(
    out_dir: Path, split_seed: int = DEFAULT_SPLIT_SEED, test_fraction: float = TEST_FRACTION
) -> FinalizeResult:
    """Rewrite vggcaps.jsonl, manifest.jsonl, vggcaps.parquet and failures.jsonl from the store.

    The latest stage-2 record of a clip wins (a rerun with another model or prompt replaces the
    caption); records are sorted by id so the files do not depend on completion order.
    """
    out_dir = Path(out_dir)
    store = Store(out_dir)
    if not store.work_dir.is_dir():
        raise FileNotFoundError(
            f"{store.work_dir} not found: run `multi2cap vggcaps extract` or `build` into "
            f"{out_dir} first"
        )
    extracts = store.by_key("extract", field="id")
    captions: dict[str, dict[str, Any]] = {}
    for record in store.records("stage2"):
        if record["id"] in extracts:
            captions[record["id"]] = record
    records = [
        vggcaps_record(extracts[i], captions[i], split_seed, test_fraction)
        for i in sorted(captions)
    ]
    write_jsonl(out_dir / "vggcaps.jsonl", records)
    write_manifest(
        [
            ManifestRecord(
                id=r["id"],
                dataset=DATASET_NAME,
                split=r["split"],
                audio=str(out_dir / r["audio"]),
                captions=[r["caption"]],
                image=str(out_dir / r["frame"]),
                category=r["category"],
                duration_s=r["duration_s"],
            )
            for r in records
        ],
        out_dir / "manifest.jsonl",
    )
    export_parquet(records, out_dir / "vggcaps.parquet")
    latest: dict[str, dict[str, Any]] = {}
    for failure in store.records("failures"):
        if failure["id"] not in captions:
            latest[failure["id"]] = failure
    write_jsonl(out_dir / "failures.jsonl", [latest[i] for i in sorted(latest)])
    return FinalizeResult(
        records=len(records),
        test=sum(r["split"] == "test" for r in records),
        failures=len(latest),
    )


def export_parquet(records: list[dict[str, Any]], path: Path) -> None:
    """The VggCaps records as a Parquet table (usage flattened to four integer columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [k for k in (records[0] if records else vggcaps_record_columns()) if k != "usage"]
    table: dict[str, list[Any]] = {c: [r[c] for r in records] for c in columns}
    for stage in ("stage1", "stage2"):
        for kind in ("prompt_tokens", "completion_tokens"):
            table[f"{stage}_{kind}"] = [int(r["usage"][stage][kind]) for r in records]
    schema = pa.schema(
        [(c, pa.float64() if c in ("start_s", "duration_s") else pa.string()) for c in columns]
        + [(c, pa.int64()) for c in table if c not in columns]
    )
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(table, schema=schema), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def vggcaps_record_columns() -> list[str]:
    """Column order of a VggCaps record."""
    return [
        "id",
        "youtube_id",
        "start_s",
        "category",
        "vggsound_split",
        "split",
        "audio",
        "frame",
        "spectrogram",
        "duration_s",
        "raw_caption",
        "caption",
        "backend",
        "model",
        "prompt_version",
        "usage",
    ]


# --------------------------------------------------------------------------- the build


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
    """Run the build steps of `config` and return what happened (see `BuildSummary`)."""
    start = time.monotonic()
    summary = BuildSummary(out=str(config.out))
    clips: list[Clip] = []
    ids: set[str] | None = None
    if "extract" in config.steps or config.dry_run:
        clips, summary.missing_videos = select_clips(config)
        summary.selected = len(clips)
        ids = {c.spec.id for c in clips}
        if config.dry_run:
            summary.estimate = dry_run_estimate(config, len(clips))
            summary.elapsed_s = time.monotonic() - start
            return summary
        Store(config.out).work_dir.mkdir(parents=True, exist_ok=True)
    streaming = {"extract", "caption"} <= set(config.steps) and config.backend != "openai-batch"
    if streaming:
        extract_and_caption(config, clips, summary)
    else:
        if "extract" in config.steps:
            extract_media(config, clips, summary)
        if "caption" in config.steps:
            caption_clips(config, summary, ids)
    if "split" in config.steps:
        result = finalize_dataset(config.out, config.split_seed, config.test_fraction)
        summary.dataset_size, summary.test_size = result.records, result.test
    summary.failed = _unfinished(config, ids)
    summary.elapsed_s = time.monotonic() - start
    atomic_write_text(
        config.out / "work" / "last_run.json", json.dumps(summary.to_json(), indent=2) + "\n"
    )
    return summary


def _unfinished(config: BuildConfig, ids: set[str] | None) -> int:
    """Selected clips (every clip seen, when no selection) that failed and are not finished by
    the last step this build ran."""
    store = Store(config.out)
    if "caption" in config.steps or "split" in config.steps:
        finished = {r["id"] for r in store.records("stage2")}
    else:
        finished = {r["id"] for r in store.records("extract")}
    failed = {r["id"] for r in store.records("failures")} - finished
    return len(failed if ids is None else failed & ids)
