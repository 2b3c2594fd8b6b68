"""`multi2cap human ...` end to end without a browser: create, status, export -> `analyze dataset
--ratings` (Figure 4), and `score` (the Human rows) on captions written through the store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.metrics.files import read_predictions, read_references

runner = CliRunner()


def _invoke(*args: str, env: dict[str, str] | None = None) -> str:
    """The command's output with rich's line wrapping undone."""
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250", **(env or {})})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_create_status_export_figure4(stamp_manifest: Path, tmp_path: Path, open_direct) -> None:
    study = tmp_path / "mos"
    out = _invoke(
        "human",
        "create",
        "--kind",
        "mos",
        "--manifest",
        stamp_manifest,
        "--out",
        study,
        "--n",
        "4",
        "--raters",
        "3",
        "--gold",
        "1",
        "--seed",
        "5",
        "--no-listen-check",
    )
    assert "4 items + 1 gold, 3 raters" in out and "/a/" in out
    db = open_direct(study)
    for name, base in (("r01", 4), ("r02", 5), ("r03", 4)):
        rater = db.rater(name)
        state = db("state", rater, 0.0)
        while not state["done"]:
            is_gold = db.conn.execute(
                "SELECT i.gold FROM assignments a JOIN items i ON i.id = a.item_id WHERE a.key = ?",
                (state["item"]["key"],),
            ).fetchone()[0]
            score = 1 if is_gold and name != "r03" else base  # r3 fails the attention check
            state = db("answer", rater, state["item"]["key"], 0, score, 1.0)["state"]
    status = _invoke("human", "status", study)
    assert "r01" in status and "5 / 5" in status and "1 / 1" in status  # r03: 1 gold failed of 1
    assert "15 / 15 answers" in status
    exported = tmp_path / "export"
    _invoke("human", "export", study, "--out", exported)
    with open(exported / "ratings.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 15 and {r["gold"] for r in rows} == {"0", "1"}
    assert [r["gold_failed"] for r in rows if r["gold"] == "1"] == ["0", "0", "1"]
    assert all(float(r["response_s"]) >= 0 and r["shown_at"].endswith("+00:00") for r in rows)
    raters = list(csv.DictReader((exported / "raters.csv").read_text().splitlines()))
    assert [r["gold_failed"] for r in raters] == ["0", "0", "1"]
    report = tmp_path / "report"
    result = _invoke(
        "analyze", "dataset", stamp_manifest, "--out", report, "--ratings", exported / "ratings.csv"
    )
    # 12 ratings of 4 items (the 3 gold ratings left out): MOS (4 + 5 + 4) / 3.
    assert "MOS 4.33" in result
    text = (report / "report.md").read_text()
    assert "Ratings: 12 from 3 raters on 4 items" in text
    figure4 = report / "figure4.png"
    assert figure4.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure4.stat().st_size > 1000


def test_captions_export_and_score(stamp_manifest: Path, tmp_path: Path, open_direct) -> None:
    study = tmp_path / "cap"
    _invoke(
        "human",
        "create",
        "--kind",
        "captions",
        "--manifest",
        stamp_manifest,
        "--out",
        study,
        "--n",
        "3",
        "--raters",
        "2",
        "--no-listen-check",
    )
    db = open_direct(study)
    refs = {r["item"]: json.loads(r["refs"]) for r in db.store.items()}
    for name in ("r01", "r02"):
        rater = db.rater(name)
        state = db("state", rater, 0.0)
        while not state["done"]:
            item = db.conn.execute(
                "SELECT i.item FROM assignments a JOIN items i ON i.id = a.item_id WHERE a.key = ?",
                (state["item"]["key"],),
            ).fetchone()[0]
            stage = state["item"]["stage"]
            # Stage 2 (with the frame) repeats a reference word for word: it must score higher.
            caption = refs[item][0] if stage == 2 else f"some noise {name}"
            state = db("answer", rater, state["item"]["key"], stage, caption, 1.0)["state"]
    exported = tmp_path / "export"
    _invoke("human", "export", study, "--out", exported)
    references = read_references(exported / "references.jsonl")
    assert references == refs
    assert read_references(exported / "references.csv") == refs  # no id needs escaping here
    combined = list(csv.DictReader((exported / "captions_audio.csv").read_text().splitlines()))
    assert len(combined) == 6 and {r["rater"] for r in combined} == {"r01", "r02"}
    for stage_file in ("captions_audio.jsonl", "captions_audio_visual.jsonl"):
        predictions = read_predictions(exported / "raters" / "r01" / stage_file)
        assert set(predictions) == set(references)
    # Each rater's file feeds `multi2cap evaluate` as is.
    _invoke(
        "evaluate",
        "-p",
        exported / "raters" / "r02" / "captions_audio_visual.jsonl",
        "-r",
        exported / "references.jsonl",
        "-m",
        "bleu_1,rouge_l",
    )
    scores_file = tmp_path / "human.json"
    out = _invoke("human", "score", study, "-m", "bleu_1,rouge_l,cider_d", "-o", scores_file)
    assert "Human, audio only (w/o visual), ours (2 raters)" in out
    assert "46.1" in out and "49.2" in out  # the paper's rows printed beside ours
    scores = json.loads(scores_file.read_text())["human_rows"]
    audio, visual = scores["audio only (w/o visual)"], scores["audio + frame (w/ visual)"]
    assert visual["bleu_1"] > 0.9 and visual["bleu_1"] > audio["bleu_1"]
    assert set(audio) == {"bleu_1", "rouge_l", "cider_d"}

    # SPICE's jars missing: one explanation naming both metrics it stops, not one per metric
    out = _invoke("human", "score", study, "-m", "bleu_1,spice,spider", "--skip-unavailable",
                  env={"MULTI2CAP_SPICE_LIB": str(tmp_path / "no-jars")})  # fmt: skip
    flat = " ".join(out.split())
    assert flat.count("multi2cap assets download spice") == 1
    assert "spice, spider unavailable:" in out


def test_serve_warns_when_binding_beyond_loopback(tmp_path: Path) -> None:
    from multi2cap.human.server import exposure_warning

    assert exposure_warning("127.0.0.1") is None and exposure_warning("::1") is None
    assert exposure_warning("localhost") is None and exposure_warning("127.0.0.2") is None
    assert "TLS reverse proxy" in (exposure_warning("0.0.0.0") or "")
    # The CLI prints it before anything else (here the folder is no study, so it stops there).
    result = runner.invoke(
        app, ["human", "serve", str(tmp_path), "--host", "0.0.0.0"], env={"COLUMNS": "250"}
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "warning: binding to 0.0.0.0" in text
    assert "is not a study folder" in text


def test_a_study_of_another_schema_is_refused_clearly(make_study) -> None:
    import sqlite3

    study = make_study("mos", n=2)
    conn = sqlite3.connect(study.path / "study.sqlite")
    conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    for command in (["status", str(study.path)], ["export", str(study.path), "--out", "x"]):
        result = runner.invoke(app, ["human", *command], env={"COLUMNS": "250"})
        assert result.exit_code == 2, result.output
        assert "has schema 0, this multi2cap reads 2" in " ".join(result.output.split())


def test_a_study_of_schema_1_is_upgraded_in_place(make_study, tmp_path: Path) -> None:
    """A study made by multi2cap 0.2 (schema 1: no items.system, items.caption_b,
    assignments.swapped, answers.choice) keeps its answers and serves, exports, summarises."""
    import sqlite3

    from multi2cap.human.store import StudyStore, open_study_db

    study = make_study("mos", n=2, raters=["ann"], listen_check=False)
    conn = open_study_db(study.path)
    store = StudyStore(conn)
    state = store.state(1, 0.0)
    store.answer(1, state["item"]["key"], 0, 4, 1.0)
    conn.close()
    raw = sqlite3.connect(study.path / "study.sqlite")
    raw.executescript(
        """
        CREATE TABLE items_v1 (id INTEGER PRIMARY KEY, item TEXT NOT NULL UNIQUE,
            audio TEXT NOT NULL, frame TEXT, caption TEXT, refs TEXT NOT NULL DEFAULT '[]',
            duration_s REAL NOT NULL, gold INTEGER NOT NULL DEFAULT 0, gold_source TEXT);
        INSERT INTO items_v1 SELECT id, item, audio, frame, caption, refs, duration_s, gold,
            gold_source FROM items;
        DROP TABLE items;
        ALTER TABLE items_v1 RENAME TO items;
        ALTER TABLE assignments DROP COLUMN swapped;
        ALTER TABLE answers DROP COLUMN choice;
        UPDATE meta SET value = '1' WHERE key = 'schema_version';
        """
    )
    raw.commit()
    raw.close()
    status = _invoke("human", "status", study.path)
    assert "1 / 2" in status
    out = tmp_path / "export"
    _invoke("human", "export", study.path, "--out", out)
    rows = list(csv.DictReader((out / "ratings.csv").read_text().splitlines()))
    assert [(r["rater"], r["score"]) for r in rows] == [("ann", "4")]
    assert "MOS 4.00" in _invoke("human", "summary", study.path)
    raw = sqlite3.connect(study.path / "study.sqlite")
    version = raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    columns = {row[1] for row in raw.execute("PRAGMA table_info(answers)")}
    raw.close()
    assert version == "2" and "choice" in columns
