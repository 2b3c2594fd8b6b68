"""`multi2cap caption` end to end: a saved tiny checkpoint, real Tux Paint sounds, a broken file."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from multi2cap_testkit import tiny
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.model.multi2cap import Multi2Cap


def _short_sounds(tuxpaint_dir: Path, n: int) -> list[Path]:
    sounds = sorted(
        (p for p in tuxpaint_dir.rglob("*.ogg") if "_desc" not in p.name),
        key=lambda p: (p.stat().st_size, str(p)),
    )
    return sounds[:n]


def test_caption_folder_to_csv_with_a_broken_file(tmp_path: Path, tuxpaint_dir: Path) -> None:
    checkpoint = tiny().save_pretrained(tmp_path / "ckpt")
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    sounds = _short_sounds(tuxpaint_dir, 3)
    targets = [clips / sounds[0].name, clips / sounds[1].name, clips / "sub" / sounds[2].name]
    for source, target in zip(sounds, targets, strict=True):
        shutil.copy(source, target)
    (clips / "broken.wav").write_bytes(b"RIFF not really a wave file")
    output = tmp_path / "out" / "captions.csv"

    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app,
        ["caption", str(clips), "--checkpoint", str(checkpoint), "--beams", "2",
         "--batch-size", "2", "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "1 of 4 files could not be captioned" in result.output

    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = Multi2Cap.from_pretrained(checkpoint)
    expected = model.caption([str(p) for p in sorted(targets)], num_beams=2)
    assert [r["path"] for r in rows] == [str(p) for p in sorted(targets)]
    assert [r["file_name"] for r in rows] == [p.name for p in sorted(targets)]
    assert [r["caption"] for r in rows] == expected
    assert all(r["caption"] for r in rows)
    failures = [json.loads(line) for line in (output.parent / "captions.failures.jsonl").open()]
    assert [f["path"] for f in failures] == [str(clips / "broken.wav")]
    assert "broken.wav" in failures[0]["error"]


def test_caption_prints_a_table_and_rejects_a_bad_checkpoint(
    tmp_path: Path, tuxpaint_dir: Path
) -> None:
    sound = _short_sounds(tuxpaint_dir, 1)[0]
    checkpoint = tiny(grounding=False).save_pretrained(tmp_path / "ckpt")
    runner = CliRunner(env={"COLUMNS": "400"})
    result = runner.invoke(app, ["caption", str(sound), "-c", str(checkpoint)])
    assert result.exit_code == 0, result.output
    caption = Multi2Cap.from_pretrained(checkpoint).caption(sound)[0]
    assert caption and caption in result.output

    result = runner.invoke(app, ["caption", str(sound), "-c", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a Multi2Cap checkpoint" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["caption", str(tmp_path), "-c", str(checkpoint)])
    assert result.exit_code == 2 and "no audio files" in result.output
