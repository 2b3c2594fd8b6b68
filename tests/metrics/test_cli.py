"""`multi2cap evaluate` end to end on the oracle, and its file formats and errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.metrics.files import CaptionFileError, align, read_predictions, read_references

runner = CliRunner()


def test_cli_reproduces_the_oracle(cli_oracle_run: Any, oracle: dict[str, Any]) -> None:
    output = cli_oracle_run.wait()
    assert cli_oracle_run.returncode == 0, output
    assert "score x100" in output
    assert f"{100 * oracle['corpus']['cider_d']:.2f}" in output
    document = json.loads(cli_oracle_run.scores.read_text())
    assert document["n_items"] == 3
    assert document["unavailable"] == {}
    assert document["settings"]["tokenize"] is True
    for key, value in oracle["corpus"].items():
        assert document["corpus"][key] == pytest.approx(value, abs=1e-12, rel=0), key
    rows = list(csv.DictReader(cli_oracle_run.items.open()))
    assert [r["id"] for r in rows] == ["clip_0.wav", "clip_1.wav", "clip_2.wav"]
    for key, values in oracle["per_item"].items():
        got = [float(r[key]) for r in rows]
        assert got == pytest.approx(values, abs=1e-12, rel=0), key


def test_cli_mismatched_ids_exit_with_a_listing(tmp_path: Path) -> None:
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"id": "a", "caption": "x"}\n{"id": "b", "caption": "y"}\n')
    references = tmp_path / "r.csv"
    references.write_text("id,caption\na,x\nc,z\n")
    result = runner.invoke(app, ["evaluate", "-p", str(predictions), "-r", str(references)])
    assert result.exit_code == 2
    assert "'b'" in result.output and "'c'" in result.output
    assert "Traceback" not in result.output


def test_cli_skip_unavailable_writes_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MULTI2CAP_SPICE_LIB", raising=False)
    predictions = tmp_path / "p.csv"
    predictions.write_text("id,caption\na,a dog barks\nb,rain falls\n")
    references = tmp_path / "r.csv"
    references.write_text("id,caption_1,caption_2\na,a dog barks,a dog\nb,rain,\n")
    scores = tmp_path / "s.json"
    args = ["evaluate", "-p", str(predictions), "-r", str(references), "-m", "bleu_1,spice"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "MULTI2CAP_SPICE_LIB" in refused.output
    result = runner.invoke(app, [*args, "--skip-unavailable", "--no-tokenize", "-o", str(scores)])
    assert result.exit_code == 0, result.output
    document = json.loads(scores.read_text())
    assert document["corpus"]["spice"] is None
    assert document["corpus"]["bleu_1"] == pytest.approx(4 / 5, abs=1e-9)  # pooled counts
    assert "MULTI2CAP_SPICE_LIB" in document["unavailable"]["spice"]


def test_reference_formats_agree(tmp_path: Path) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text(
        'id,caption_1,caption_2,caption_3\nx,"A dog, barking.",a dog,\ny,rain,wind,water\n'
    )
    long = tmp_path / "long.csv"
    long.write_text('id,caption\nx,"A dog, barking."\nx,a dog\ny,rain\ny,wind\ny,water\n')
    jsonl = tmp_path / "refs.jsonl"
    jsonl.write_text(
        '{"id": "x", "captions": ["A dog, barking.", "a dog"]}\n'
        '{"id": "y", "captions": ["rain", "wind", "water"]}\n'
    )
    want = {"x": ["A dog, barking.", "a dog"], "y": ["rain", "wind", "water"]}
    assert read_references(wide) == read_references(long) == read_references(jsonl) == want


def test_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad_json = tmp_path / "p.jsonl"
    bad_json.write_text('{"id": "a", "caption": "x"}\n{oops\n')
    with pytest.raises(CaptionFileError, match=r"p.jsonl:2: invalid JSON"):
        read_predictions(bad_json)
    duplicate = tmp_path / "d.csv"
    duplicate.write_text("id,caption\na,x\na,y\n")
    with pytest.raises(CaptionFileError, match="duplicate id 'a'"):
        read_predictions(duplicate)
    no_id = tmp_path / "n.csv"
    no_id.write_text("name,caption\na,x\n")
    with pytest.raises(CaptionFileError, match="no `id`"):
        read_predictions(no_id)
    with pytest.raises(CaptionFileError, match="unknown format"):
        read_predictions(tmp_path / "p.txt")
    with pytest.raises(CaptionFileError, match="without references: 'b'"):
        align({"a": "x", "b": "y"}, {"a": ["x"]})


@pytest.mark.usefixtures("default_csv_limit")
def test_a_caption_longer_than_the_csv_module_limit_is_read(tmp_path: Path) -> None:
    long_caption = "a dog barks " * 20_000  # 240,000 characters > csv's 131,072 default
    predictions = tmp_path / "p.csv"
    predictions.write_text(f'id,caption\na,"{long_caption}"\nb,rain falls\n')
    references = tmp_path / "r.csv"
    references.write_text(f'id,caption_1\na,"{long_caption}"\nb,rain falls\n')
    assert read_predictions(predictions)["a"] == long_caption
    assert read_references(references)["a"] == [long_caption]
    result = runner.invoke(
        app, ["evaluate", "-p", str(predictions), "-r", str(references), "-m", "bleu_1", "--no-tokenize"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('id,caption\na,a dog\nb,"rain falls\nc,wind\nd,sea\n', r"p\.csv:3: unbalanced quote"),
        ('id,caption\n\na,"a dog\nb,rain"\nc,wind\n', r"p\.csv:3: unbalanced quote\? .* to line 4"),
        ("id,caption\na,a dog, barking\n", r"p\.csv:2: 3 fields for 2 columns"),
    ],
)
def test_unbalanced_quotes_and_stray_commas_name_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    predictions = tmp_path / "p.csv"
    predictions.write_text(text)
    with pytest.raises(CaptionFileError, match=message):
        read_predictions(predictions)
    references = tmp_path / "r.csv"
    references.write_text("id,caption\na,x\nb,y\nc,z\nd,w\n")
    result = runner.invoke(app, ["evaluate", "-p", str(predictions), "-r", str(references)])
    assert result.exit_code == 2 and "p.csv:" in result.output, result.output
    assert "without references" not in result.output and "Traceback" not in result.output


def test_empty_predictions_are_warned_about_and_counted(tmp_path: Path) -> None:
    predictions = tmp_path / "p.csv"
    predictions.write_text('id,caption\na,a dog barks\nb,""\nc,   \n')
    references = tmp_path / "r.csv"
    references.write_text("id,caption_1\na,a dog barks\nb,rain falls\nc,wind\n")
    scores = tmp_path / "s.json"
    result = CliRunner(env={"COLUMNS": "300"}).invoke(
        app,
        ["evaluate", "-p", str(predictions), "-r", str(references), "-m", "bleu_1",
         "--no-tokenize", "-o", str(scores)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 of 3 predictions are empty" in result.output and "'b', 'c'" in result.output
    document = json.loads(scores.read_text())
    assert document["n_empty_predictions"] == 2
    assert document["empty_prediction_ids"] == ["b", "c"]


def test_json_arrays_are_accepted_beside_jsonl_and_csv(tmp_path: Path) -> None:
    array = tmp_path / "p.json"
    array.write_text(json.dumps([{"id": "x", "caption": "a dog"}, {"id": "y", "caption": "rain"}]))
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"id": "x", "caption": "a dog"}\n{"id": "y", "caption": "rain"}\n')
    lines_named_json = tmp_path / "lines.json"
    lines_named_json.write_text(lines.read_text())
    table = tmp_path / "p.csv"
    table.write_text("id,caption\nx,a dog\ny,rain\n")
    want = {"x": "a dog", "y": "rain"}
    assert read_predictions(array) == read_predictions(lines) == want
    assert read_predictions(lines_named_json) == read_predictions(table) == want
    refs = tmp_path / "r.json"
    refs.write_text(
        json.dumps([{"id": "x", "captions": ["a dog"]}, {"id": "y", "captions": ["rain"]}])
    )
    assert read_references(refs) == {"x": ["a dog"], "y": ["rain"]}
    result = runner.invoke(
        app, ["evaluate", "-p", str(array), "-r", str(refs), "-m", "bleu_1", "--no-tokenize"]
    )
    assert result.exit_code == 0, result.output
    array.write_text(json.dumps([{"id": "x", "caption": "a dog"}, "y"]))
    with pytest.raises(CaptionFileError, match=r"p\.json:\[1\]: expected an object"):
        read_predictions(array)


def test_cli_explains_each_missing_asset_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPICE's missing jars stop spice and spider: one line names both and says how to get the
    jars once (it was printed once per metric). Vocabulary figures are not scaled x100."""
    monkeypatch.delenv("MULTI2CAP_SPICE_LIB", raising=False)
    predictions = tmp_path / "p.csv"
    predictions.write_text("id,caption\na,a dog barks\nb,rain falls\n")
    references = tmp_path / "r.csv"
    references.write_text("id,caption_1,caption_2\na,a dog barks,a dog\nb,rain,\n")
    args = ["evaluate", "-p", str(predictions), "-r", str(references), "--no-tokenize"]
    args += ["-m", "spice,spider,bleu_1,vocab", "--skip-unavailable"]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert result.output.count("assets download spice") == 1
    assert "spice, spider unavailable:" in result.output
    assert "vocab.ratio_full (ratio, not x100)" in result.output
    assert "vocab.mrefs_full (words, not x100)" in result.output


def test_cli_scores_a_single_item(tmp_path: Path) -> None:
    """One item: BLEU scores, CIDEr-D is null with its reason (exit 0; it was exit 2)."""
    predictions = tmp_path / "p.csv"
    predictions.write_text("id,caption\na,a dog barks\n")
    references = tmp_path / "r.csv"
    references.write_text("id,caption\na,a dog barks loudly\n")
    scores = tmp_path / "s.json"
    args = ["evaluate", "-p", str(predictions), "-r", str(references), "--no-tokenize"]
    result = runner.invoke(app, [*args, "-m", "bleu_1,cider_d", "-o", str(scores)])
    assert result.exit_code == 0, result.output
    assert "cider_d unavailable: needs at least 2 items" in " ".join(result.output.split())
    document = json.loads(scores.read_text())
    assert document["corpus"]["cider_d"] is None
    assert document["corpus"]["bleu_1"] == pytest.approx(0.7165313106, abs=1e-9)
