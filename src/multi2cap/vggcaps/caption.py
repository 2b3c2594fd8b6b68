"""Captioning (Figure 1, middle): stage 1 (spectrogram + category -> audio caption), stage 2
(frame + stage-1 caption -> audio-visual caption), each output post-processed and re-asked when
rejected, per clip, over a live backend (`openai`, `offline`).

`StageAttempts`, `stage_request` and `account` are shared with the Batch API backend
(`multi2cap.vggcaps.batch`), which sends the same requests in batches.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from multi2cap.llm_client.chat import Completion, RequestFailed, RunStats
from multi2cap.vggcaps.backends import Backend, OfflineBackend, OpenAIChatBackend, StageRequest
from multi2cap.vggcaps.cost import Prices
from multi2cap.vggcaps.extract import run_extraction
from multi2cap.vggcaps.postprocess import postprocess
from multi2cap.vggcaps.progress import Bar, ProgressBoard
from multi2cap.vggcaps.prompts import PromptSet
from multi2cap.vggcaps.records import (
    BuildConfig,
    BuildSummary,
    Clip,
    Identity,
    Rejection,
    failure_record,
)
from multi2cap.vggcaps.store import BufferedAppender, Store


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


KEPT_OUTPUT_CHARS = 4096


def rejection(output: str | None, reason: str) -> Rejection:
    """A rejected output as the records keep it: its first `KEPT_OUTPUT_CHARS` characters
    and its full length (`output_chars`), so ten 5-MB junk replies cost 40 kB of work files,
    not 50 MB."""
    if output is None:
        return {"output": None, "reason": reason}
    return {"output": output[:KEPT_OUTPUT_CHARS], "reason": reason, "output_chars": len(output)}


def account(stats: RunStats, prices: Prices, completion: Completion, batch: bool) -> None:
    """Add one completion's tokens and dollars to the live counters."""
    stats.prompt_tokens += completion.prompt_tokens
    stats.completion_tokens += completion.completion_tokens
    stats.cost_usd += prices.cost(completion.prompt_tokens, completion.completion_tokens, batch)


class StageAttempts:
    """The asks of one clip and stage: summed usage, rejected outputs with their reasons (cut
    to `KEPT_OUTPUT_CHARS`), and the accepted caption once post-processing lets one through."""

    def __init__(self, request: StageRequest) -> None:
        self.request = request
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.rejected: list[Rejection] = []
        self.accepted: tuple[str | None, str] | None = None

    def judge(self, completion: Completion) -> bool:
        """Post-process one completion; True when it was accepted. Linear in the reply's
        length, but a reply may be up to `max_reply_bytes`: the live backend calls this in a
        worker thread, off the event loop."""
        self.usage["prompt_tokens"] += completion.prompt_tokens
        self.usage["completion_tokens"] += completion.completion_tokens
        if completion.refusal:
            self.rejected.append(rejection(completion.refusal, "refusal"))
            return False
        outcome = postprocess(
            completion.text,
            self.request.category,
            self.request.stage,
            cut_at_token_cap=completion.finish_reason == "length",
        )
        if outcome.caption is None:
            self.rejected.append(rejection(completion.text, outcome.reason or "rejected"))
            return False
        self.accepted = (completion.text, outcome.caption)
        return True

    def record(self, identity: Identity) -> dict[str, Any]:
        """The stage-store record of the accepted caption."""
        assert self.accepted is not None
        output, caption = self.accepted
        record = {
            "key": identity.key(self.request.clip_id, self.request.stage),
            "id": self.request.clip_id,
            "stage": self.request.stage,
            "output": output,
            "caption": caption,
            "usage": self.usage,
            "attempts": len(self.rejected) + 1,
            "rejected": self.rejected,
        }
        if output is not None and len(output) > KEPT_OUTPUT_CHARS:  # a caption and a long tail
            record |= {"output": output[:KEPT_OUTPUT_CHARS], "output_chars": len(output)}
        return record

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
            if await asyncio.to_thread(attempt.judge, completion):
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


async def caption_async(
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

        async def everything() -> None:
            # a task group, not gather: the first error (a rejected key, an endpoint that is
            # down, a failed write) cancels the other workers' requests instead of letting
            # them run on
            try:
                async with asyncio.TaskGroup() as group:
                    if feed is not None:
                        group.create_task(asyncio.to_thread(feed.run))
                    for _ in range(concurrency):
                        group.create_task(worker())
            except BaseExceptionGroup as errors:
                raise errors.exceptions[0] from None

        try:
            await _until_store_fails(everything(), appender)
        finally:
            if feed is not None:
                feed.stop()
            try:
                await appender.aclose()
            finally:
                await backend.aclose()
    return finished


async def _until_store_fails(work: Coroutine[Any, Any, None], appender: BufferedAppender) -> None:
    """Run `work`, cancelling it (requests in flight included) the moment a store write fails,
    so the build stops paying for answers it cannot keep; raises that write error. Any other
    error of `work` is raised as itself."""
    task = asyncio.ensure_future(work)
    failed = asyncio.ensure_future(appender.failed.wait())
    try:
        await asyncio.wait({task, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if not task.cancelled() and task.exception() is not None:
        if appender.error is not None:
            raise appender.error
        raise task.exception()  # type: ignore[misc]
    appender.check()


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
