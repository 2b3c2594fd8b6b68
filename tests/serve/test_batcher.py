"""DynamicBatcher with the real tiny model: who waits for whom, options kept apart, failures
confined to their batch, the bound on clips held."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from multi2cap_testkit import tones

from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.serve.batcher import DecodeOptions, DynamicBatcher, QueueFullError

GREEDY = DecodeOptions(num_beams=1, max_new_tokens=8)
BEAMS = DecodeOptions(num_beams=2, max_new_tokens=8)


@pytest.fixture
def waves() -> list[np.ndarray]:
    return [w.numpy() for w in tones(4)]


def _batcher(model: Multi2Cap, **kwargs: float) -> Iterator[DynamicBatcher]:
    def caption(clips: list[np.ndarray], options: DecodeOptions) -> list[str]:
        return model.caption(
            clips, num_beams=options.num_beams, max_new_tokens=options.max_new_tokens
        )

    settings = {"max_batch": 4, "max_wait_s": 60.0, "max_queue": 8, **kwargs}
    batcher = DynamicBatcher(caption, **settings)
    batcher.start()
    try:
        yield batcher
    finally:
        batcher.stop()


@pytest.fixture
def batcher(model: Multi2Cap) -> Iterator[DynamicBatcher]:
    yield from _batcher(model)


def test_a_lone_clip_does_not_wait_when_nobody_else_is_coming(
    batcher: DynamicBatcher, model: Multi2Cap, waves: list[np.ndarray]
) -> None:
    (future,) = batcher.submit(waves[:1], GREEDY)
    # max_wait_s is 60 s: the caption is back long before only because nothing else arrives.
    assert future.result(timeout=30) == model.caption(waves[0], num_beams=1, max_new_tokens=8)[0]


def test_a_batch_waits_for_a_request_on_its_way(
    batcher: DynamicBatcher, model: Multi2Cap, waves: list[np.ndarray]
) -> None:
    with batcher.arriving():
        first = batcher.submit(waves[:1], GREEDY)
        with batcher.arriving():
            second = batcher.submit(waves[1:3], GREEDY)
    texts = [f.result(timeout=60) for f in first + second]
    stats = batcher.stats()
    assert stats.model_calls == 1 and stats.largest_batch == 3 and stats.held == 0
    assert texts == [model.caption(w, num_beams=1, max_new_tokens=8)[0] for w in waves[:3]]


def test_other_options_get_their_own_batch(
    batcher: DynamicBatcher, model: Multi2Cap, waves: list[np.ndarray]
) -> None:
    with batcher.arriving():
        greedy = batcher.submit(waves[:2], GREEDY)
        beams = batcher.submit(waves[2:4], BEAMS)
    assert [f.result(timeout=60) for f in beams] == [
        model.caption(w, num_beams=2, max_new_tokens=8)[0] for w in waves[2:4]
    ]
    assert [f.result(timeout=60) for f in greedy] == [
        model.caption(w, num_beams=1, max_new_tokens=8)[0] for w in waves[:2]
    ]
    assert batcher.stats().model_calls == 2


def test_a_failing_batch_fails_only_its_requests(
    batcher: DynamicBatcher, waves: list[np.ndarray]
) -> None:
    (bad,) = batcher.submit([np.zeros((2, 100), dtype=np.float32)], GREEDY)  # not 1-D
    with pytest.raises(ValueError, match="1-D"):
        bad.result(timeout=60)
    (good,) = batcher.submit(waves[:1], GREEDY)
    assert good.result(timeout=60)


def test_the_queue_is_bounded(model: Multi2Cap, waves: list[np.ndarray]) -> None:
    for batcher in _batcher(model, max_queue=3, max_batch=2):
        with batcher.arriving():  # keeps the first clips waiting (max_wait_s 60)
            held = batcher.submit(waves[:1], GREEDY)
            with pytest.raises(QueueFullError, match="1 of 3 clips held") as err:
                batcher.submit(waves[:3], GREEDY)
            assert err.value.retry_after_s >= 1
            with pytest.raises(QueueFullError):
                batcher.check_room(3)
            batcher.check_room(2)
            held += batcher.submit(waves[1:3], GREEDY)
        assert all(f.result(timeout=60) for f in held)
