"""Files that chain: `multi2cap caption -o x.json` writes JSON (it wrote CSV under any name) and
`multi2cap evaluate` reads every format `caption` writes, DCASE's submission header included;
waveforms given to the Python API are read at their `sampling_rate`. Real subprocesses, real
Tux Paint sounds, a checkpoint whose decoder is a saved transformers folder (so loading it runs
transformers' weight loading, whose bars no command may print)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from multi2cap_testkit import CAPTIONS
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.media.audio import SAMPLE_RATE, load_audio, resample
from multi2cap.metrics.files import read_predictions
from multi2cap.model.caption_files import caption_format, write_captions
from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.inference import FileCaption
from multi2cap.model.llm import build_causal_lm, build_tokenizer
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.rerank import Candidate, RerankedCaption


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint whose LLM is loaded with `from_pretrained` from a saved folder."""
    folder = tmp_path_factory.mktemp("captionfiles")
    torch.manual_seed(0)
    config = Multi2CapConfig.tiny(CAPTIONS)
    build_causal_lm(config.llm).save_pretrained(folder / "lm")
    build_tokenizer(config.llm).save_pretrained(folder / "lm")
    llm = config.llm.model_copy(
        update={"source": str(folder / "lm"), "config": None, "tokenizer": None}
    )
    return Multi2Cap(config.model_copy(update={"llm": llm})).save_pretrained(folder / "ckpt")


@pytest.fixture(scope="module")
def clips(tuxpaint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    sounds = sorted(
        (p for p in tuxpaint_dir.rglob("*.ogg") if "_desc" not in p.name),
        key=lambda p: (p.stat().st_size, str(p)),
    )[:3]
    for sound in sounds:
        shutil.copy(sound, folder / sound.name)
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multi2cap", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=600,
    )


def references(clips: Path, path: Path) -> Path:
    rows = [
        f"{p.name},a dog barks loudly,rain falls on a tin roof" for p in sorted(clips.iterdir())
    ]
    path.write_text("file_name,caption_1,caption_2\n" + "\n".join(rows) + "\n")
    return path


def bleu_1(predictions: Path, refs: Path) -> float:
    """`multi2cap evaluate` in this process (the file reading is the same code either way)."""
    result = CliRunner().invoke(app, ["evaluate", "-p", str(predictions), "-r", str(refs),
                                      "-m", "bleu_1", "-o", str(predictions.with_suffix(".scores.json"))])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(predictions.with_suffix(".scores.json").read_text())
    return document["corpus"]["bleu_1"]


def test_json_and_dcase_files_chain_into_evaluate(
    checkpoint: Path, clips: Path, tmp_path: Path
) -> None:
    """`-o captions.json` writes JSON; `--format dcase` without `-o` prints the DCASE submission
    CSV alone on stdout (what `> submission.csv` keeps); `evaluate` scores both the same."""
    refs = references(clips, tmp_path / "refs.csv")
    as_json = tmp_path / "captions.json"
    result = run_cli("caption", str(clips), "-c", str(checkpoint), "-o", str(as_json))
    assert result.returncode == 0, result.stderr
    assert "Loading weights" not in result.stderr + result.stdout
    rows = json.loads(as_json.read_text())  # JSON, not CSV under a .json name
    assert [r["file_name"] for r in rows] == sorted(p.name for p in clips.iterdir())
    assert all(set(r) == {"file_name", "caption", "path"} and r["caption"] for r in rows)

    result = run_cli("caption", str(clips), "-c", str(checkpoint), "--format", "dcase")
    assert result.returncode == 0, result.stderr
    assert "Loading weights" not in result.stderr
    dcase = tmp_path / "submission.csv"
    dcase.write_text(result.stdout)
    with dcase.open(newline="") as handle:
        submission = list(csv.DictReader(handle))
    assert list(submission[0]) == ["file_name", "caption_predicted"]
    assert {r["file_name"]: r["caption_predicted"] for r in submission} == {
        r["file_name"]: r["caption"] for r in rows
    }
    assert bleu_1(as_json, refs) == bleu_1(dcase, refs)


def test_a_name_that_says_no_format_or_another_is_refused(tmp_path: Path) -> None:
    """Refused before anything is loaded or written, naming the file and the formats."""
    for args, message in (
        (["-o", "captions.txt"], "cannot tell the caption format from the extension .txt"),
        (["--format", "json", "-o", "captions.csv"], "--format json writes a .json file"),
    ):
        result = run_cli("caption", str(tmp_path), "-c", str(tmp_path / "nothing"), *args)
        assert result.returncode == 2
        assert message in " ".join(result.stderr.split())
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"a name without extension: end it in \.csv, \.json"):
        caption_format(Path("captions"), None)
    with pytest.raises(ValueError, match=r"--format dcase writes a \.csv file, but s\.json"):
        caption_format(Path("s.json"), "dcase")


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "dcase"])
def test_every_format_reads_back_as_the_same_predictions(tmp_path: Path, fmt: str) -> None:
    results = [
        FileCaption(Path("/data/a.wav"), caption='a dog, "barking"', key="a.wav"),
        FileCaption(Path("/data/b.wav"), error="b.wav: unreadable"),
        FileCaption(Path("/data/sub/c.wav"), caption="rain on a roof", key="sub/c.wav"),
    ]
    out = tmp_path / f"captions{'.csv' if fmt == 'dcase' else '.' + fmt}"
    failures = write_captions(results, out, fmt)  # type: ignore[arg-type]
    assert read_predictions(out) == {"a.wav": 'a dog, "barking"', "sub/c.wav": "rain on a roof"}
    assert failures == tmp_path / "captions.failures.jsonl"
    assert caption_format(out, None if fmt == "dcase" else fmt) == (
        "csv" if fmt == "dcase" else fmt
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "dcase"])
def test_rerank_scores_reach_every_format(tmp_path: Path, fmt: str) -> None:
    """`caption --rerank clap --rerank-scores` keeps the CLAP score, the ties and every candidate
    in whatever format it writes: fields in JSON and JSONL, columns (lists as JSON text) after the
    format's own in CSV and DCASE's layout; the file still reads as the same predictions."""
    chosen = RerankedCaption(
        caption="a dog barks",
        score=0.5,
        tied=["a dog is barking"],
        candidates=[
            Candidate("a dog barks", "beam", 0, 0.5),
            Candidate("a dog is barking", "sample", 0, 0.5),
        ],
    )
    results = [
        FileCaption(Path("/d/a.wav"), caption="a dog barks", key="a.wav", rerank=chosen),
        FileCaption(Path("/d/b.wav"), caption="rain falls", key="b.wav"),  # not re-ranked
    ]
    out = tmp_path / f"c{'.csv' if fmt == 'dcase' else '.' + fmt}"
    write_captions(results, out, fmt, rerank_scores=True)  # type: ignore[arg-type]
    assert read_predictions(out) == {"a.wav": "a dog barks", "b.wav": "rain falls"}
    if fmt in ("json", "jsonl"):
        text = out.read_text(encoding="utf-8")
        rows = json.loads(text) if fmt == "json" else [json.loads(x) for x in text.splitlines()]
        assert rows[0]["clap_score"] == 0.5 and rows[0]["tied"] == ["a dog is barking"]
        assert rows[0]["candidates"] == chosen.to_record()["candidates"]
        assert (rows[1]["clap_score"], rows[1]["tied"], rows[1]["candidates"]) == (None,) * 3
    else:
        with out.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        first = ["file_name", "caption_predicted"] if fmt == "dcase" else ["file_name", "caption"]
        assert list(rows[0])[:2] == first
        assert list(rows[0])[-3:] == ["clap_score", "tied", "candidates"]
        assert float(rows[0]["clap_score"]) == 0.5 and json.loads(rows[0]["tied"]) == chosen.tied
        assert json.loads(rows[0]["candidates"]) == chosen.to_record()["candidates"]
        assert (rows[1]["clap_score"], rows[1]["tied"], rows[1]["candidates"]) == ("", "", "")
    plain = tmp_path / f"plain{out.suffix}"
    write_captions(results, plain, fmt)  # type: ignore[arg-type]
    assert "clap_score" not in plain.read_text(encoding="utf-8")


def test_evaluate_reads_dcase_and_file_name_keyed_json(tmp_path: Path) -> None:
    dcase = tmp_path / "dcase.csv"
    dcase.write_text("file_name,caption_predicted\n1.wav,a bird sings\n2.wav,a car passes\n")
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps([{"file_name": "1.wav", "caption": "a bird sings"}]))
    assert read_predictions(dcase) == {"1.wav": "a bird sings", "2.wav": "a car passes"}
    assert read_predictions(as_json) == {"1.wav": "a bird sings"}


def test_waveforms_are_read_at_their_sampling_rate(tuxpaint_dir: Path) -> None:
    torch.manual_seed(0)
    model = Multi2Cap(Multi2CapConfig.tiny(CAPTIONS))
    sound = next(p for p in sorted(tuxpaint_dir.rglob("*.ogg")) if "_desc" not in p.name)
    at_16k = load_audio(sound)
    at_44k = resample(at_16k, SAMPLE_RATE, 44_100)
    expected = model.caption(resample(at_44k, 44_100, SAMPLE_RATE), sampling_rate=SAMPLE_RATE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a rate given: no warning
        assert model.caption(at_44k, sampling_rate=44_100) == expected
        assert model.caption(torch.from_numpy(at_44k), sampling_rate=44_100) == expected
        assert model.caption(str(sound), sampling_rate=44_100) == model.caption(str(sound))
    batch = np.stack([at_44k, at_44k])
    assert model.caption(batch, [len(at_44k)] * 2, sampling_rate=44_100) == expected * 2
    with pytest.warns(UserWarning, match="without sampling_rate: read as 16000 Hz") as record:
        model.caption(at_16k)
    assert record[0].filename == __file__  # it points at the caller's line
    with pytest.raises(ValueError, match="sampling_rate must be a positive number of Hz"):
        model.caption(at_16k, sampling_rate=0)


def test_a_missing_checkpoint_folder_is_said_not_to_exist(tmp_path: Path, clips: Path) -> None:
    """Not "no config.yaml": the folder is not there (or is a file), and the message says so."""
    missing = tmp_path / "runs" / "best"
    result = run_cli("caption", str(clips), "-c", str(missing))
    assert result.returncode == 2
    assert f"checkpoint folder {missing} does not exist" in result.stderr
    assert "config.yaml" not in result.stderr
    a_file = next(clips.iterdir())
    with pytest.raises(FileNotFoundError, match="is a file, not a checkpoint folder"):
        Multi2Cap.from_pretrained(a_file)
