"""Dynamic batching: clips from concurrent requests captioned together in one model call.

Each submitted clip waits in one FIFO queue. A single worker thread (the only one that touches
the model, so torch runs one call at a time) takes the oldest clip and every queued clip with the
same decoding options, up to `max_batch`; when fewer are queued it waits for more until the
oldest has waited `max_wait_s`, but only while other requests are on their way (inside
`arriving()`: received, being decoded): with nobody else coming, a lone request runs at once
instead of paying the wait. While a batch is being captioned new clips accumulate, so under load
batches fill without waiting. Captions equal those of one clip at a time because
`Multi2Cap.caption`'s batched generation is exact (left padding, masks from lengths; see
docs/model.md and tests/model/test_multi2cap.py::test_batched_captioning_equals_one_by_one), and
CLAP re-ranking scores a clip the same in any batch (tests/model/test_rerank.py).

The queue is bounded (`max_queue` clips held at once, waiting or being captioned): a request that
would exceed it is refused at once with `QueueFullError`, whose `retry_after_s` estimates when
there will be room from the recent seconds per batch.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding settings of one clip; only clips with equal options share a model call."""

    num_beams: int
    max_new_tokens: int


CaptionFn = Callable[[list[Any], DecodeOptions], list[Any]]
"""One result per clip, in order, decoded with the options. A clip is what the app submitted
(a 16-kHz mono waveform `(n,)` float32, or that and the clip at the CLAP's rate on a
re-ranking server); a result is a caption (or a `RerankedCaption`)."""


class QueueFullError(Exception):
    """The server holds as many clips as it may; `retry_after_s` is when to try again."""

    def __init__(self, held: int, capacity: int, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the captioning queue is full ({held} of {capacity} clips held); "
            f"retry in about {retry_after_s} s"
        )


@dataclass
class _Clip:
    wave: Any
    options: DecodeOptions
    future: Future[Any]
    enqueued: float


@dataclass
class BatcherStats:
    """Counters since start: model calls made, clips captioned, clips held now (waiting or
    being captioned), the largest batch, and whether a model call is running."""

    model_calls: int
    clips: int
    held: int
    largest_batch: int
    busy: bool


class DynamicBatcher:
    """Groups clips into batches of at most `max_batch`, waiting at most `max_wait_s` (seconds)
    for companions, and runs `caption_fn` on them in a worker thread. `start()` before use,
    `stop()` after (queued clips then fail with `RuntimeError`)."""

    def __init__(
        self, caption_fn: CaptionFn, *, max_batch: int, max_wait_s: float, max_queue: int
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(
                f"need max_batch >= 1, max_queue >= 1, max_wait_s >= 0 "
                f"(found {max_batch}, {max_queue}, {max_wait_s})"
            )
        self.caption_fn = caption_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: deque[_Clip] = deque()
        self._cond = threading.Condition()
        self._running = 0  # clips in the model call now
        self._arriving = 0  # requests received but not yet submitted (see `arriving`)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._model_calls = 0
        self._clips = 0
        self._largest = 0
        self._batch_seconds = 1.0  # running mean of seconds per model call, for Retry-After

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="multi2cap-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._cond:
            while self._queue:
                self._queue.popleft().future.set_exception(RuntimeError("the server is stopping"))

    # ------------------------------------------------------------------ requests
    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (decoding its uploads) until it has submitted or failed:
        batches wait for such requests, up to `max_wait_s`, and for nothing else."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def check_room(self, n: int) -> None:
        """Raise `QueueFullError` unless `n` more clips fit now (a cheap early refusal; `submit`
        checks again, atomically)."""
        with self._cond:
            self._check_room(n)

    def _check_room(self, n: int) -> None:
        held = len(self._queue) + self._running
        if held + n > self.max_queue:
            batches_ahead = math.ceil((held + n) / self.max_batch)
            retry = max(1, math.ceil(batches_ahead * self._batch_seconds))
            raise QueueFullError(held, self.max_queue, retry)

    def submit(self, waves: Sequence[Any], options: DecodeOptions) -> list[Future[Any]]:
        """Queue the clips of one request (all or none); one future per clip, in order.

        Raises `QueueFullError` when they do not fit, `RuntimeError` when not started."""
        with self._cond:
            if self._thread is None or self._stopping:
                raise RuntimeError("the batcher is not running")
            self._check_room(len(waves))
            now = time.monotonic()
            clips = [_Clip(w, options, Future(), now) for w in waves]
            self._queue.extend(clips)
            self._cond.notify_all()
        return [c.future for c in clips]

    def stats(self) -> BatcherStats:
        with self._cond:
            return BatcherStats(
                model_calls=self._model_calls,
                clips=self._clips,
                held=len(self._queue) + self._running,
                largest_batch=self._largest,
                busy=self._running > 0,
            )

    # ------------------------------------------------------------------ worker
    def _matching(self, options: DecodeOptions) -> int:
        return sum(1 for c in self._queue if c.options == options)

    def _next_batch(self) -> list[_Clip] | None:
        """Block until a batch is due; None when stopping. Called with the lock held."""
        while not self._queue:
            if self._stopping:
                return None
            self._cond.wait()
        while not self._stopping:
            oldest = self._queue[0]
            remaining = oldest.enqueued + self.max_wait_s - time.monotonic()
            full = self._matching(oldest.options) >= self.max_batch
            if remaining <= 0 or full or self._arriving == 0:
                break
            self._cond.wait(remaining)
        if self._stopping:
            return None
        options = self._queue[0].options
        batch: list[_Clip] = []
        kept: deque[_Clip] = deque()
        for clip in self._queue:
            if clip.options == options and len(batch) < self.max_batch:
                batch.append(clip)
            else:
                kept.append(clip)
        self._queue = kept
        self._running = len(batch)
        return batch

    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            start = time.monotonic()
            texts: list[str] | None = None
            error: Exception | None = None
            try:
                texts = self.caption_fn([c.wave for c in batch], batch[0].options)
                if len(texts) != len(batch):
                    raise RuntimeError(f"{len(texts)} captions for {len(batch)} clips")
            except Exception as err:  # the requests in this batch fail; the server goes on
                error = err
            elapsed = time.monotonic() - start
            with self._cond:  # counters first, so a client that has its reply sees them
                self._running = 0
                self._model_calls += 1
                self._clips += len(batch)
                self._largest = max(self._largest, len(batch))
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            for i, clip in enumerate(batch):
                if texts is not None and error is None:
                    clip.future.set_result(texts[i])
                else:
                    clip.future.set_exception(error or RuntimeError("no caption"))
