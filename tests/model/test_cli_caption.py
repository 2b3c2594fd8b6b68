"""`multi2cap caption` end to end: a saved tiny checkpoint, real Tux Paint sounds, a broken file."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

from media_helpers import write_silent_flac
from multi2cap_testkit import tiny
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.model.inference import unique_keys
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
    write_silent_flac(clips / "fast.flac", 655_350, 1, 1.0)  # a rate only a crafted file has
    output = tmp_path / "out" / "captions.csv"

    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app,
        ["caption", str(clips), "--checkpoint", str(checkpoint), "--beams", "2",
         "--batch-size", "2", "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "2 of 5 inputs could not be captioned" in result.output

    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = Multi2Cap.from_pretrained(checkpoint)
    expected = model.caption([str(p) for p in sorted(targets)], num_beams=2)
    assert [r["path"] for r in rows] == [str(p) for p in sorted(targets)]
    assert [r["file_name"] for r in rows] == [p.name for p in sorted(targets)]
    assert [r["caption"] for r in rows] == expected
    assert all(r["caption"] for r in rows)
    failures = [json.loads(line) for line in (output.parent / "captions.failures.jsonl").open()]
    assert [f["path"] for f in failures] == [str(clips / "broken.wav"), str(clips / "fast.flac")]
    assert "broken.wav" in failures[0]["error"]
    assert failures[1]["error"] == (
        f"{clips / 'fast.flac'}: sample rate 655350 Hz is above the 384000 Hz accepted"
    )


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


def test_caption_every_input_is_captioned_or_reported(tmp_path: Path, tuxpaint_dir: Path) -> None:
    """A name that is not UTF-8, two `a.ogg`, a folder without audio, a symlinked folder with a
    link back to itself: each file gets one row under a unique `file_name`, the empty folder is
    reported, and `evaluate` accepts the CSV."""
    checkpoint = tiny(grounding=False).save_pretrained(tmp_path / "ckpt")
    s1, s2, s3, s4 = _short_sounds(tuxpaint_dir, 4)
    first, second, empty, linked, elsewhere = (
        tmp_path / n for n in ("first", "second", "empty", "linked", "elsewhere")
    )
    for folder in (first, second, empty, linked, elsewhere):
        folder.mkdir()
    shutil.copy(s1, first / "a.ogg")
    shutil.copy(s2, os.fsdecode(os.fsencode(first) + b"/caf\xe9.ogg"))  # Latin-1 name
    shutil.copy(s3, second / "a.ogg")
    (empty / "notes.txt").write_text("no audio here")
    shutil.copy(s4, elsewhere / "far.ogg")
    (linked / "to_elsewhere").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(elsewhere, target_is_directory=True)
    output = tmp_path / "out" / "captions.csv"

    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app,
        ["caption", str(first), str(second), str(empty), str(linked), "-c", str(checkpoint),
         "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "1 of 5 inputs could not be captioned" in result.output
    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["file_name"] for r in rows) == [
        "caf\\xe9.ogg", "far.ogg", "first/a.ogg", "second/a.ogg"
    ]  # fmt: skip
    assert all(r["caption"] for r in rows)
    failures = [json.loads(line) for line in (output.parent / "captions.failures.jsonl").open()]
    assert failures == [{"path": str(empty), "error": f"no audio files under {empty}"}]

    references = tmp_path / "references.csv"
    with references.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption_1"])
        writer.writerows([r["file_name"], "a bird sings"] for r in rows)
    scored = CliRunner().invoke(
        app, ["evaluate", "-p", str(output), "-r", str(references), "-m", "bleu_1", "--no-tokenize"]
    )
    assert scored.exit_code == 0, scored.output


def test_unique_keys_are_the_shortest_distinct_suffixes() -> None:
    paths = [Path("/d/x/a/b.wav"), Path("/d/y/a/b.wav"), Path("/d/x/c.wav"), Path("/e/b.ogg")]
    assert unique_keys(paths) == ["x/a/b.wav", "y/a/b.wav", "c.wav", "b.ogg"]


def test_caption_on_the_cpu_of_a_gpu_machine_loads_the_decoder_in_fp32(
    tmp_path: Path, tuxpaint_dir: Path, monkeypatch
) -> None:
    """`llm.dtype: auto` resolves for `--device`: fp32 on the CPU even where a bf16 GPU is
    present (before, the GPU's presence alone gave bf16, slow on the CPU)."""
    import torch

    from multi2cap.model import llm

    checkpoint = tiny().save_pretrained(tmp_path / "ckpt")
    monkeypatch.setattr(llm, "_cuda_has_bf16", lambda: True)  # as on a machine with a bf16 GPU
    dtypes = []
    caption = Multi2Cap.caption

    def recording(self: Multi2Cap, *args, **kwargs):  # type: ignore[no-untyped-def]
        dtypes.append(self.decoder.embed_dtype)
        return caption(self, *args, **kwargs)

    monkeypatch.setattr(Multi2Cap, "caption", recording)
    sound = _short_sounds(tuxpaint_dir, 1)[0]
    result = CliRunner().invoke(
        app, ["caption", str(sound), "--checkpoint", str(checkpoint), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert dtypes == [torch.float32]
