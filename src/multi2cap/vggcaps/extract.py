r"""Extraction (Figure 1, left): each selected clip's frame (JPEG), 16-kHz audio (FLAC) and
mel-spectrogram image (PNG), written atomically, then its record appended to `extract.jsonl`.

Clips are decoded in worker processes; a clip whose media cannot be decoded goes to the failure
log and the run goes on; a full disk (or a read-only one) stops the build at once with the path
it could not write (`StoreWriteError`), instead of failing every later clip on its own. A video
path whose folders are not UTF-8 (`videos/caf\xe9/`) is opened
as it is and written to the records with `\xNN` escapes (`multi2cap.fsnames.printable`, the
same as `multi2cap caption`): a strict UTF-8 writer refused it and stopped every build.
"""

from __future__ import annotations

import io
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from multi2cap.fsnames import printable
from multi2cap.io import atomic_write_bytes
from multi2cap.vggcaps.catalog import index_videos, read_categories
from multi2cap.vggcaps.progress import StageProgress
from multi2cap.vggcaps.records import BuildConfig, BuildSummary, Clip, failure_record
from multi2cap.vggcaps.split import in_shard
from multi2cap.vggcaps.store import OUT_OF_SPACE, Store, StoreWriteError


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
    worker process; returns {'record': ...}, {'error': reason}, or {'out_of_space': (media
    key, errno, message)} when a write hit a full or read-only disk; never raises for bad media
    or a failed write (an exception must cross the process boundary as plain data)."""
    import soundfile

    from multi2cap.media.errors import MediaError
    from multi2cap.media.spectrogram_image import SpectrogramImageSettings, spectrogram_image
    from multi2cap.media.video import extract_clip, probe_media

    spec = job.clip.spec
    paths = media_paths(spec.id)
    try:
        info = probe_media(job.clip.video)
        start = read_start(spec.start_s, info.duration_s, job.clip_seconds)
        clip = extract_clip(job.clip.video, start_s=start, duration_s=job.clip_seconds, n_frames=1)
        settings = job.spectrogram or SpectrogramImageSettings()
        image = spectrogram_image(clip.audio, clip.sample_rate, settings)
        encoded = {key: io.BytesIO() for key in paths}
        clip.frames[0].convert("RGB").save(
            encoded["frame"], format="JPEG", quality=job.jpeg_quality
        )
        soundfile.write(encoded["audio"], clip.audio, clip.sample_rate, format="FLAC")
        image.save(encoded["spectrogram"], format="PNG", compress_level=1)
    except (MediaError, OSError, ValueError, RuntimeError, IndexError) as err:
        return {"error": printable(f"{type(err).__name__}: {err}")}
    for key in ("frame", "audio", "spectrogram"):
        target = job.out_dir / paths[key]
        try:
            atomic_write_bytes(target, encoded[key].getvalue())
        except OSError as err:
            if err.errno in OUT_OF_SPACE:
                return {"out_of_space": (key, err.errno, err.strerror or str(err))}
            return {"error": printable(f"could not write {target}: {type(err).__name__}: {err}")}
    return {
        "record": {
            "id": spec.id,
            "category": spec.category,
            "youtube_id": spec.youtube_id,
            "start_s": spec.start_s,
            "vggsound_split": spec.vggsound_split,
            "video": printable(job.clip.video),
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
    todo = extraction_todo(config, clips, summary)
    with StageProgress("extract", len(todo), None, config.progress) as bar:
        run_extraction(config, todo, summary, lambda _record: bar.advance())


def extraction_todo(config: BuildConfig, clips: list[Clip], summary: BuildSummary) -> list[Clip]:
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
    None for a clip that failed. A clip whose media hit a full disk raises `StoreWriteError`
    naming the file: every later clip would fail the same way."""
    store = Store(config.out)
    jobs = (
        _ExtractJob(c, config.out, config.clip_seconds, config.spectrogram, config.jpeg_quality)
        for c in todo
    )
    # closing: a raise below shuts the worker pool down now, not when the traceback is freed
    with closing(_map_jobs(jobs, config.workers)) as results:
        for job_clip, result in zip(todo, results, strict=True):
            if "out_of_space" in result:
                key, number, message = result["out_of_space"]
                path = config.out / media_paths(job_clip.spec.id)[key]
                raise StoreWriteError(path, OSError(number, message))
            if "record" in result:
                store.append("extract", [result["record"]])
                summary.extracted += 1
                on_result(result["record"])
            else:
                failure = failure_record(job_clip.spec.id, "extract", result["error"])
                store.append("failures", [failure])
                on_result(None)


def _map_jobs(jobs: Iterator[_ExtractJob], workers: int) -> Iterator[dict[str, Any]]:
    """Results in job order, at most 4 jobs per worker queued at a time (memory stays flat at
    200k clips). Workers are forked where the platform can (explicitly: Python 3.14 defaults to
    a fork server, which re-imports the caller's main module and breaks scripts that call
    `build_vggcaps` without an `if __name__ == "__main__"` guard).

    Extraction runs BLAS and OpenMP single-threaded: parallelism comes from the processes, and
    OpenBLAS's spinning helper threads doubled the CPU time per clip for no gain in wall time
    (12.8 vs 6.1 CPU-s for 120 clips in 6.9 vs 6.2 s, one process), which also kept a second
    process from adding anything on two cores.

    A worker that dies (a decoder crash, the OOM killer) breaks the whole pool and every job
    in flight with it, without saying whose file did it: those jobs are retried one at a time,
    each in a fresh one-worker pool, and a job that kills its worker again is reported as
    `decoder crashed`, so a poisonous file costs one failure record, not the run (nor every
    rerun). Then a fresh pool takes the remaining jobs."""
    if workers <= 1:
        with threadpool_limits(limits=1):
            yield from map(_extract_one, jobs)
        return
    pool = _new_pool(workers)
    queued: deque[tuple[_ExtractJob, Future[dict[str, Any]]]] = deque()
    try:
        for job in jobs:
            queued.append((job, pool.submit(_extract_one, job)))
            while len(queued) >= 4 * workers:
                result, pool = _next_result(queued, pool, workers)
                yield result
        while queued:
            result, pool = _next_result(queued, pool, workers)
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_single_threaded_worker
    )


def _next_result(
    queued: deque[tuple[_ExtractJob, Future[dict[str, Any]]]],
    pool: ProcessPoolExecutor,
    workers: int,
) -> tuple[dict[str, Any], ProcessPoolExecutor]:
    """The oldest queued job's result, and the pool to go on with (a new one after a crash,
    with the jobs that were in flight re-queued as already-finished results)."""
    try:
        result = queued[0][1].result()
    except BrokenProcessPool:
        pool.shutdown(wait=True, cancel_futures=True)
        in_flight = list(queued)
        queued.clear()
        for job, future in in_flight:
            finished = future.done() and not future.cancelled() and future.exception() is None
            queued.append((job, future if finished else _done(_extract_in_isolation(job))))
        pool = _new_pool(workers)
        result = queued[0][1].result()
    queued.popleft()
    return result, pool


def _extract_in_isolation(job: _ExtractJob) -> dict[str, Any]:
    with _new_pool(1) as alone:
        try:
            return alone.submit(_extract_one, job).result()
        except BrokenProcessPool:
            return {"error": "decoder crashed: the extraction worker died on this file twice"}


def _done(result: dict[str, Any]) -> Future[dict[str, Any]]:
    future: Future[dict[str, Any]] = Future()
    future.set_result(result)
    return future


def _single_threaded_worker() -> None:
    threadpool_limits(limits=1)
