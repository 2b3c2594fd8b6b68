"""The study database: answers stored once, in order, after listening; the captions stage lock;
validation; group commit on the worker thread."""

from __future__ import annotations

import asyncio

import pytest

from multi2cap.human.store import StudyError, StudyStore, validate_caption, validate_score
from multi2cap.human.worker import StoreWorker


def _walk(direct, rater: int, now: float) -> dict:
    return direct("state", rater, now)


def test_mos_answers_in_order_once_and_locked(make_study, open_direct) -> None:
    study = make_study("mos", n=3, listen_check=False)
    db = open_direct(study.path)
    alice = db.rater("alice")
    state = _walk(db, alice, 100.0)
    assert state["position"] == 1 and state["total"] == 3
    key = state["item"]["key"]
    first = db("answer", alice, key, 0, 4, 101.0)
    assert first["stored"] is True and first["state"]["position"] == 2
    # A double click / retry: acknowledged, stored once.
    again = db("answer", alice, key, 0, 4, 102.0)
    assert again["stored"] is False and again["state"]["position"] == 2
    assert db.count_answers() == 1
    # A changed answer after submission is refused.
    with pytest.raises(StudyError, match="locked") as err:
        db("answer", alice, key, 0, 2, 103.0)
    assert err.value.status == 409
    # Out of turn: the third item cannot be answered before the second.
    keys = [
        r[0]
        for r in db.conn.execute(
            "SELECT key FROM assignments WHERE rater_id = ? ORDER BY position", (alice,)
        )
    ]
    with pytest.raises(StudyError, match="not the current item"):
        db("answer", alice, keys[2], 0, 3, 104.0)
    # Another rater's item is not found for this rater (no leak that it exists).
    bob_key = db.conn.execute(
        "SELECT key FROM assignments WHERE rater_id = ? LIMIT 1", (db.rater("bob"),)
    ).fetchone()[0]
    with pytest.raises(StudyError, match="no such item") as err:
        db("answer", alice, bob_key, 0, 3, 105.0)
    assert err.value.status == 404
    db("answer", alice, keys[1], 0, 5, 106.0)
    done = db("answer", alice, keys[2], 0, 1, 107.0)["state"]
    assert done["done"] is True and done["position"] == 3


def test_answer_needs_the_clip_heard_to_the_end(make_study, open_direct) -> None:
    study = make_study("mos", n=2)  # listen check on
    db = open_direct(study.path)
    alice = db.rater("alice")
    item = _walk(db, alice, 1000.0)["item"]
    duration = item["duration_s"]
    with pytest.raises(StudyError, match="listen to the whole clip") as err:
        db("answer", alice, item["key"], 0, 3, 1000.0 + 0.5 * duration)
    assert err.value.status == 409
    # Showing the item again (a reload) does not restart the clock.
    _walk(db, alice, 1000.0 + 0.6 * duration)
    assert db("answer", alice, item["key"], 0, 3, 1000.0 + duration)["stored"]


def test_captions_stage_two_opens_after_stage_one_which_is_then_locked(
    make_study, open_direct
) -> None:
    study = make_study("captions", n=2)
    db = open_direct(study.path)
    alice = db.rater("alice")
    state = _walk(db, alice, 0.0)
    item = state["item"]
    assert item["stage"] == 1 and "frame" not in item and "stage1_caption" not in item
    with pytest.raises(StudyError, match="frame opens after") as err:
        db("media_path", alice, item["key"], "frame")
    assert err.value.status == 403
    with pytest.raises(StudyError, match="not the current item"):
        db("answer", alice, item["key"], 2, "with the frame", 100.0)
    after = db("answer", alice, item["key"], 1, "  a frog  croaks\n", 100.0)["state"]
    assert after["item"]["stage"] == 2 and after["item"]["key"] == item["key"]
    assert after["item"]["stage1_caption"] == "a frog croaks"  # whitespace collapsed
    assert db("media_path", alice, item["key"], "frame").startswith("media/frames/")
    with pytest.raises(StudyError, match="locked"):
        db("answer", alice, item["key"], 1, "a different caption", 101.0)
    # Stage 2 needs no second listening: it is answerable at once.
    nxt = db("answer", alice, item["key"], 2, "a green frog croaks by a pond", 100.5)["state"]
    assert nxt["position"] == 2 and nxt["item"]["stage"] == 1


@pytest.mark.parametrize("value", [6, 0, -1, 3.5, "3", True, None, [4]])
def test_bad_scores_are_refused(value) -> None:
    with pytest.raises(StudyError, match="integer from 1 to 5") as err:
        validate_score(value)
    assert err.value.status == 422


def test_scores_and_captions_accepted() -> None:
    assert [validate_score(v) for v in (1, 5, 4.0)] == [1, 5, 4]
    assert validate_caption(" a\tdog  barks ") == "a dog barks"
    assert validate_caption("x" * 500) == "x" * 500
    for bad, message in (
        ("", "empty"),
        ("  \n ", "empty"),
        ("x" * 501, "501 characters"),
        (3, "text"),
    ):
        with pytest.raises(StudyError, match=message):
            validate_caption(bad)


def test_worker_batches_commit_together_and_isolate_failures(make_study) -> None:
    study = make_study("mos", n=3, raters=[f"r{i}" for i in range(20)], listen_check=False)

    def first_answer(store: StudyStore, rater: int) -> dict:
        key = store.state(rater, 0.0)["item"]["key"]
        if rater == 7:
            store.answer(rater, key, 0, 3, 1.0)
            raise RuntimeError("refused after writing")  # its write must be rolled back
        return store.answer(rater, key, 0, 3, 1.0)

    async def run() -> list:
        worker = StoreWorker(study.path / "study.sqlite")
        try:
            return await asyncio.gather(
                *(worker.call(first_answer, r) for r in range(1, 21)), return_exceptions=True
            )
        finally:
            worker.close()

    results = asyncio.run(run())
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    import sqlite3

    conn = sqlite3.connect(study.path / "study.sqlite")
    stored = {
        row[0]
        for row in conn.execute(
            "SELECT a.rater_id FROM answers an JOIN assignments a ON a.id = an.assignment_id"
        )
    }
    conn.close()
    assert stored == set(range(1, 21)) - {7}
