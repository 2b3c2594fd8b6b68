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
