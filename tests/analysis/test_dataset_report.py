"""The dataset report end to end on tiny manifests: Table 1 numbers, stats.csv, figures, CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from multi2cap.analysis import pos
from multi2cap.analysis.dataset_report import DatasetReport, write_dataset_report
from multi2cap.analysis.text_stats import TEXT_METRICS
from multi2cap.data.manifest import ManifestRecord, write_manifest

S1 = "A man speaks while a dog barks in the distance."
TABLE1 = ["rows", "n_audio", "audio_len_mean", "audio_len_std", "n_captions"]
TABLE1 += ["caption_len_mean", "caption_len_std"]


def make_manifests(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    a = [
        ManifestRecord("1", "tiny_a", "dev", str(root / "a1.wav"), [S1, "Dog."], None, None, 10.0),
        ManifestRecord(
            "2",
            "tiny_a",
            "dev",
            str(root / "a2.wav"),
            ["Rain falls.", ""],
            str(root / "f.jpg"),
            None,
            12.0,
        ),
    ]
    b = [ManifestRecord("3", "tiny_b", "dev", str(root / "b.wav"), ["A dog barks."] * 2)]
    paths = [root / "a.jsonl", root / "b1.jsonl", root / "b2.jsonl"]
    write_manifest(a, paths[0])
    write_manifest(b, paths[1])
    write_manifest(b, paths[2])
    return paths


def read_stats(path: Path) -> tuple[list[str], dict[tuple[str, str, str], str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], {(d, level, metric): value for d, level, metric, value in rows[1:]}


def assert_nontrivial_png(path: Path) -> None:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert min(pixels.shape) > 200
    assert pixels.std() > 10  # not a blank canvas


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> DatasetReport:
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(pos.LEXICON_ENV, str(root / "no-lexicon-here"))
        return write_dataset_report(make_manifests(root / "in"), root / "out")


def test_stats_csv_long_format_and_table1_values(report: DatasetReport) -> None:
    header, stats = read_stats(report.out_dir / "stats.csv")
    assert header == ["dataset", "level", "metric", "value"]
    names = ["tiny_a", "tiny_b (b1)", "tiny_b (b2)"]  # the shared name gets the file stem
    expected_keys = {
        (name, level, metric)
        for name in names
        for level, metrics in (
            ("corpus", TABLE1 + list(TEXT_METRICS)),
            ("caption_mean", list(TEXT_METRICS)),
        )
        for metric in metrics
    }
    assert set(stats) == expected_keys
    value = {k[2]: v for k, v in stats.items() if k[0] == "tiny_a" and k[1] == "corpus"}
    # 4 caption rows over 2 clips of 10 s and 12 s: mean 11, sample std sqrt(2).
    assert (value["rows"], value["n_audio"], value["n_captions"]) == ("4", "2", "3")
    assert float(value["audio_len_mean"]) == pytest.approx(11.0)
    assert float(value["audio_len_std"]) == pytest.approx(math.sqrt(2))
    # Caption lengths 10, 1, 2, 0 words: mean 3.25, sample variance 62.75 / 3.
    assert float(value["caption_len_mean"]) == pytest.approx(3.25)
    assert float(value["caption_len_std"]) == pytest.approx(math.sqrt(62.75 / 3))
    # Caption-mean TTR over the non-empty captions: (0.9 + 1 + 1) / 3.
    assert float(stats[("tiny_a", "caption_mean", "ttr")]) == pytest.approx(2.9 / 3)
    # tiny_b has no durations: unknown values are empty, not 0.
    assert stats[("tiny_b (b1)", "corpus", "audio_len_mean")] == ""
    assert stats[("tiny_b (b1)", "corpus", "n_captions")] == "1"  # duplicates count once


def test_report_markdown_and_figures(report: DatasetReport) -> None:
    text = (report.out_dir / "report.md").read_text(encoding="utf-8")
    assert "| tiny_a | 4 | 2 | 11.0 (1.4) | 3 | 3.2 (4.6) | Image (50 % of clips) |" in text
    assert "| tiny_b (b1) | 2 | 1 | unknown |" in text
    assert "1 empty caption(s)" in text
    assert "top **content words**" in text  # no tagger data: the fallback is announced
    assert "Figure 4" not in text  # no ratings given
    expected = ["figure2", "figure3_tiny_a", "figure3_tiny_b_b1", "figure3_tiny_b_b2"]
    for stem in expected:
        assert_nontrivial_png(report.out_dir / f"{stem}.png")
        svg = (report.out_dir / f"{stem}.svg").read_text(encoding="utf-8")
        assert "<svg" in svg and len(svg) > 5000
    assert {p.name for p in report.files} >= {"stats.csv", "report.md", "figure2.svg"}


def test_cli_end_to_end_with_ratings_and_tagger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multi2cap.cli.main import app

    lexicon = tmp_path / "lexicon"
    lexicon.mkdir()
    (lexicon / "words.yml").write_text(
        "the: { det: 9 }\ndog: { nn: 9 }\nbarks: { vbz: 5, nns: 1 }\n", encoding="utf-8"
    )
    (lexicon / "tags.yml").write_text(
        "pp: { det: 1.0 }\ndet: { nn: 1.0 }\nnn: { vbz: 1.0 }\nvbz: { pp: 1.0 }\n", encoding="utf-8"
    )
    monkeypatch.setenv(pos.LEXICON_ENV, str(lexicon))
    manifest = tmp_path / "m.jsonl"
    write_manifest(
        [
            ManifestRecord(str(i), "pets", "test", f"{i}.wav", ["The dog barks."], None, None, 10.0)
            for i in range(3)
        ],
        manifest,
    )
    ratings = tmp_path / "ratings.csv"
    ratings.write_text(
        "rater,item,score\n"
        + "".join(f"r{r},{i},{4 + (i % 2)}\n" for r in range(3) for i in range(3)),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["analyze", "dataset", str(manifest), "--out", str(out), "--ratings", str(ratings)]
    )
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text(encoding="utf-8")
    verbs = text.split("**Top verbs**")[1].split("**Top nouns**")[0]
    nouns = text.split("**Top nouns**")[1].split("**Top content words**")[0]
    assert "| 1 | barks (3) |" in verbs and "dog" not in verbs
    assert "| 1 | dog (3) |" in nouns and "barks" not in nouns
    # Items scored 4, 5, 4 by all three raters: MOS 13/3, perfect agreement.
    assert "MOS 4.33" in text and "(ordinal) = 1.000" in text
    assert_nontrivial_png(out / "figure4.png")
    assert (out / "figure4.svg").is_file()


def test_cli_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    from multi2cap.cli.main import app

    missing = tmp_path / "missing.jsonl"
    result = CliRunner().invoke(app, ["analyze", "dataset", str(missing), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "missing.jsonl" in result.output and "Traceback" not in result.output

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x", "dataset": "d", "split": "s"}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["analyze", "dataset", str(broken), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "broken.jsonl:1" in result.output and "audio" in result.output
