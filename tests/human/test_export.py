"""Exports against spreadsheet formula injection (issue 26 item 10): the CSV files people open
are neutralised (OWASP's list: = + - @ tab CR), the JSONL files programs read keep the raters'
words and the ids exactly, and `evaluate` and `analyze` read those."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.data.manifest import read_manifest, write_manifest

runner = CliRunner()
EVIL = '=HYPERLINK("http://evil.example","click")'
#: Ids as hostile as a manifest can hold (YouTube ids often start with '-').
IDS = {"frog": "=cmd|' /C calc'!A0", "crow": "-0SdAVK79lg_30", "cuckoo": "+41 stamps",
       "duck": "@SUM(1+1)", "owl": "\towl"}  # fmt: skip


def _unescape(cell: str) -> str:
    """The documented inverse: drop the first `'` of a cell matching `'+[=+-@\\t\\r]`."""
    return cell[1:] if re.match(r"^'+[=+\-@\t\r]", cell) else cell


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (EVIL, "'" + EVIL),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("'=1", "''=1"),  # so that dropping one ' always gives the text back
        ("'tis a bird", "'tis a bird"),
        ("a = b", "a = b"),
        ("", ""),
    ],
)
def test_spreadsheet_safe_is_reversible(text: str, shown: str) -> None:
    from multi2cap.human.export import spreadsheet_safe

    assert spreadsheet_safe(text) == shown
    assert _unescape(shown) == text
    assert spreadsheet_safe(-1.5) == -1.5 and spreadsheet_safe(3) == 3  # numbers stay numbers


@pytest.fixture
def hostile_manifest(stamp_manifest: Path, tmp_path: Path) -> Path:
    records = [r for r in read_manifest(stamp_manifest) if r.id in IDS]
    for record in records:
        record.id = IDS[record.id]
    path = write_manifest(records, tmp_path / "hostile.jsonl")
    assert {r.id for r in read_manifest(path)} == set(IDS.values())  # data files stay exact
    return path


def _invoke(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_captions_export_neutralises_formulas_and_evaluate_reads_the_raters_words(
    hostile_manifest: Path, tmp_path: Path, open_direct
) -> None:
    study = tmp_path / "cap"
    _invoke("human", "create", "--kind", "captions", "--manifest", hostile_manifest, "--out", study,
            "--n", "5", "--raters", "1", "--no-listen-check")  # fmt: skip
    db = open_direct(study)
    rater = db.rater("r01")
    state = db("state", rater, 0.0)
    typed: dict[str, str] = {}
    while not state["done"]:
        item = db.conn.execute(
            "SELECT i.item FROM assignments a JOIN items i ON i.id = a.item_id WHERE a.key = ?",
            (state["item"]["key"],),
        ).fetchone()[0]
        caption = EVIL if state["item"]["stage"] == 1 else f"-a bird calls near {item[:3]}"
        typed.setdefault(item, caption)
        state = db("answer", rater, state["item"]["key"], state["item"]["stage"], caption, 1.0)[
            "state"
        ]
    out = tmp_path / "export"
    _invoke("human", "export", study, "--out", out)

    # For people: no cell of any CSV starts a formula.
    for path in out.rglob("*.csv"):
        for row in csv.reader(path.read_text(encoding="utf-8").splitlines()):
            assert not any(re.match(r"^[=+\-@\t\r]", cell) for cell in row), (path, row)
    audio = _csv_rows(out / "captions_audio.csv")
    assert {r["caption"] for r in audio} == {"'" + EVIL}
    assert {_unescape(r["id"]) for r in audio} == set(IDS.values())
    assert {r["id"] for r in _csv_rows(out / "references.csv")} == {"'" + i for i in IDS.values()}

    # For programs: the raters' words and the ids, exactly.
    stage1 = [
        json.loads(x)
        for x in (out / "raters/r01/captions_audio.jsonl").read_text().split("\n")
        if x
    ]
    assert {r["id"] for r in stage1} == set(IDS.values()) and {r["caption"] for r in stage1} == {
        EVIL
    }
    scores = tmp_path / "scores.json"
    per_item = tmp_path / "per_item.csv"
    _invoke("evaluate", "-p", out / "raters/r01/captions_audio_visual.jsonl", "-r",
            out / "references.jsonl", "-m", "bleu_1", "--output", scores, "--per-item", per_item)  # fmt: skip
    from multi2cap.metrics import Evaluator

    refs = {json.loads(x)["id"]: json.loads(x)["captions"]
            for x in (out / "references.jsonl").read_text().splitlines()}  # fmt: skip
    stage2 = {r["item"]: r["caption"] for r in db.store.answer_rows() if r["stage"] == 2}
    with Evaluator(metrics="bleu_1") as scorer:
        direct = scorer(list(stage2.values()), [refs[i] for i in stage2]).corpus["bleu_1"]
    assert json.loads(scores.read_text())["corpus"]["bleu_1"] == pytest.approx(direct)
    assert {r["id"] for r in _csv_rows(per_item)} == set(IDS.values())  # a data file: exact


def test_ratings_export_neutralises_ids_and_analyze_reads_them_exactly(
    hostile_manifest: Path, tmp_path: Path, open_direct
) -> None:
    study = tmp_path / "mos"
    _invoke("human", "create", "--kind", "mos", "--manifest", hostile_manifest, "--out", study,
            "--n", "5", "--raters", "2", "--no-listen-check")  # fmt: skip
    db = open_direct(study)
    for name, score in (("r01", 4), ("r02", 5)):
        rater = db.rater(name)
        state = db("state", rater, 0.0)
        while not state["done"]:
            state = db("answer", rater, state["item"]["key"], 0, score, 1.0)["state"]
    out = tmp_path / "export"
    _invoke("human", "export", study, "--out", out)
    rows = _csv_rows(out / "ratings.csv")
    assert {r["item"] for r in rows} == {"'" + i for i in IDS.values()}
    assert {r["score"] for r in rows} == {"4", "5"}  # numbers untouched
    exact = [json.loads(x) for x in (out / "ratings.jsonl").read_text().splitlines()]
    assert {r["item"] for r in exact} == set(IDS.values())
    report = _invoke("analyze", "dataset", hostile_manifest, "--out", tmp_path / "report",
                     "--ratings", out / "ratings.jsonl")  # fmt: skip
    assert "MOS 4.50" in report
