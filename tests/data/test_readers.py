"""Readers on tiny folders in each dataset's real layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.data.manifest import read_manifest
from multi2cap.data.readers import DatasetFormatError, prepare, read_dataset


def by_id(result):
    return {r.id: r for r in result.records}


def test_clotho_records_quoting_and_missing(clotho_dir: Path):
    result = read_dataset("clotho", clotho_dir)
    records = by_id(result)
    assert list(records) == ["crow, at dawn.wav", "duck.wav", "hen.wav"]
    crow = records["crow, at dawn.wav"]
    assert crow.captions == ["A crow caws, twice.", "c2", "c3", "c4", "c5"]
    assert (crow.split, crow.dataset) == ("dev", "clotho")
    assert Path(crow.audio).is_file() and Path(crow.audio).parent.name == "development"
    assert records["duck.wav"].captions[0] == 'He said "quack" loudly'
    assert records["hen.wav"].split == "eval"
    [missing] = result.missing
    assert (missing.id, missing.split) == ("gone.wav", "dev")
    assert missing.path.endswith("development/gone.wav")
    assert missing.source.endswith("clotho_captions_development.csv:4")


def test_clotho_split_selection_accepts_release_names(clotho_dir: Path):
    result = read_dataset("clotho", clotho_dir / "CLOTHO_v2.1", ["evaluation"])
    assert [r.id for r in result.records] == ["hen.wav"] and not result.missing
    with pytest.raises(ValueError, match="unknown clotho split 'train'"):
        read_dataset("clotho", clotho_dir, ["train"])
    with pytest.raises(
        DatasetFormatError, match=r"clotho_captions_validation\.csv: file not found"
    ):
        read_dataset("clotho", clotho_dir, ["val"])


def test_clotho_malformed_rows_name_file_and_line(clotho_dir: Path):
    csv_path = clotho_dir / "CLOTHO_v2.1" / "clotho_csv_files" / "clotho_captions_evaluation.csv"
    good = csv_path.read_text()
    csv_path.write_text(good + "short.wav,only,three\n")
    with pytest.raises(DatasetFormatError, match=r"clotho_captions_evaluation\.csv:3: expected 6"):
        read_dataset("clotho", clotho_dir)
    csv_path.write_text(good.replace("caption_5", "caption_five"))
    with pytest.raises(DatasetFormatError, match=r"evaluation\.csv:1: header lacks .*caption_5"):
        read_dataset("clotho", clotho_dir)
    csv_path.write_bytes(good.encode() + b"bad.wav,\xff\xfe,a,b,c,d\n")
    with pytest.raises(DatasetFormatError, match=r"evaluation\.csv:3: not valid UTF-8"):
        read_dataset("clotho", clotho_dir)


def test_audiocaps_groups_rows_per_clip(audiocaps_dir: Path):
    result = read_dataset("audiocaps", audiocaps_dir)
    records = by_id(result)
    assert list(records) == ["-abc_DEF123_30", "xyzXYZ12345_0", "--lead_dash_10"]
    assert records["-abc_DEF123_30"].captions == ["A duck quacks, loudly"]
    hen = records["--lead_dash_10"]
    assert hen.split == "val"
    assert hen.captions == [f"hen clucks {i}" for i in range(5)]
    assert Path(hen.audio).name == "--lead_dash_10.flac" and Path(hen.audio).is_file()
    [missing] = result.missing
    assert missing.id == "absentclip1_250"
    assert missing.path.endswith("audio_32000Hz/val/absentclip1_250.flac")
    assert missing.source.endswith("val.csv:3")  # the clip's first row


def test_audiocaps_non_integer_start_is_an_error(audiocaps_dir: Path):
    csv_path = audiocaps_dir / "AUDIOCAPS" / "csv_files_v1" / "train.csv"
    csv_path.write_text(csv_path.read_text() + "3,abcdefghijk,12.5,x\n")
    with pytest.raises(DatasetFormatError, match=r"train\.csv:4: .*integer start_time.*'12\.5'"):
        read_dataset("audiocaps", audiocaps_dir)


def test_wavcaps_sources_file_names_and_missing(wavcaps_dir: Path):
    result = read_dataset("wavcaps", wavcaps_dir)
    records = by_id(result)
    assert list(records) == ["audioset/Y-abc_DEF1234", "freesound/180913", "soundbible/180913"]
    audioset = records["audioset/Y-abc_DEF1234"]
    assert Path(audioset.audio).name == "Y-abc_DEF1234.flac"
    assert (audioset.captions, audioset.duration_s, audioset.split) == (
        ["A crow calls"],
        1.96,
        "audioset",
    )
    assert records["soundbible/180913"].captions == ["A hen clucks"]
    [missing] = result.missing
    assert missing.id == "freesound/999" and missing.source.endswith("fsd_final.json:data[1]")
    only = read_dataset("wavcaps", wavcaps_dir / "WavCaps", ["sb"])
    assert [r.id for r in only.records] == ["soundbible/180913"]


def test_wavcaps_malformed_json_names_file_and_line(wavcaps_dir: Path):
    path = wavcaps_dir / "WavCaps" / "json_files" / "SoundBible" / "sb_final.json"
    path.write_text('[\n{"id": "1",\n "caption": }\n]')
    with pytest.raises(DatasetFormatError, match=r"sb_final\.json:3: malformed JSON"):
        read_dataset("wavcaps", wavcaps_dir)
    path.write_text('{"data": [{"id": "1"}]}')
    with pytest.raises(DatasetFormatError, match=r"sb_final\.json:data\[0\]: .*'caption'"):
        read_dataset("wavcaps", wavcaps_dir)


def test_vggsound_quoted_labels_leading_dashes_duplicates(vggsound_dir: Path):
    result = read_dataset("vggsound", vggsound_dir)
    records = by_id(result)
    assert list(records) == ["---g-f_I2yQ_000001", "--0PQM4-hqg_000030"]
    marching = records["---g-f_I2yQ_000001"]
    assert (marching.split, marching.category, marching.captions) == ("test", "people marching", [])
    assert Path(marching.audio).parent.name == "part_00"  # found in a nested folder
    assert records["--0PQM4-hqg_000030"].category == "male speech, man speaking"
    [missing] = result.missing
    assert missing.id == "abcdefghijk_000000" and missing.source.endswith("vggsound.csv:3")
    [duplicate] = result.duplicates
    assert duplicate.source.endswith(":4") and duplicate.first_source.endswith(":2")
    test_only = read_dataset("vggsound", vggsound_dir / "vggsound.csv", ["test"])
    assert [r.id for r in test_only.records] == ["---g-f_I2yQ_000001"]


def test_vggsound_bad_rows(vggsound_dir: Path):
    csv_path = vggsound_dir / "vggsound.csv"
    good = csv_path.read_text()
    csv_path.write_text(good + "abcdefghijk,5,dog barking\n")
    with pytest.raises(DatasetFormatError, match=r"vggsound\.csv:5: expected 4 columns, found 3"):
        read_dataset("vggsound", vggsound_dir)
    csv_path.write_text(good + 'abcdefghijk,5,"dog, barking,train\nzzzzzzzzzzz,1,cat,test\n')
    with pytest.raises(DatasetFormatError, match=r"csv:5: .* found 3 \(the row spans lines 5-6"):
        read_dataset("vggsound", vggsound_dir)
    csv_path.write_text(good + "abcdefghijk,five,dog,train\n")
    with pytest.raises(DatasetFormatError, match=r"vggsound\.csv:5: .*integer start"):
        read_dataset("vggsound", vggsound_dir)


def test_vggcaps_keeps_category_and_frame(vggcaps_dir: Path):
    result = read_dataset("vggcaps", vggcaps_dir)
    records = by_id(result)
    assert list(records) == ["-duck_abcdef_000010", "-hen_abcdef_000010"]
    duck = records["-duck_abcdef_000010"]
    assert duck.captions == ["A duck calls twice."]
    assert (duck.category, duck.split, duck.duration_s) == ("duck calling", "train", 10.0)
    assert duck.image is not None and Path(duck.image).is_file()
    assert Path(duck.audio).is_file()
    [missing] = result.missing
    assert missing.id == "-frog_abcdef_000010" and missing.path.endswith(".jpg")


def test_vggcaps_without_media_paths_uses_media_folder(vggcaps_dir: Path):
    lines = (vggcaps_dir / "vggcaps.jsonl").read_text().splitlines()
    released = []
    for line in lines:
        record = json.loads(line)
        released.append({k: record[k] for k in ("id", "category", "split", "caption")})
    path = vggcaps_dir / "released.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in released))
    without = read_dataset("vggcaps", path)
    assert not without.records and len(without.missing) == 3
    assert "no 'audio' path" in without.missing[0].path
    matched = read_dataset("vggcaps", path, media=vggcaps_dir / "media")
    assert len(matched.records) == 3
    assert all(r.image is None and r.audio.endswith(".flac") for r in matched.records)


def test_prepare_writes_manifest_and_missing_list(clotho_dir: Path, tmp_path: Path):
    out = tmp_path / "out" / "manifest.jsonl"
    missing_out = tmp_path / "out" / "missing.jsonl"
    report = prepare("clotho", clotho_dir, out, missing_out=missing_out)
    assert (report.records, report.captions, report.per_split) == (3, 15, {"dev": 2, "eval": 1})
    assert '"audio": "../CLOTHO_v2.1/' in out.read_text()  # relative to the manifest
    back = read_manifest(out)
    assert [r.id for r in back] == ["crow, at dawn.wav", "duck.wav", "hen.wav"]
    assert all(Path(r.audio).is_file() for r in back)
    [missing] = [json.loads(line) for line in missing_out.read_text().splitlines()]
    assert missing["id"] == "gone.wav" and missing["split"] == "dev"


def test_cli_prepare_end_to_end(audiocaps_dir: Path, tmp_path: Path):
    runner = CliRunner()
    out, missing_out = tmp_path / "m.jsonl", tmp_path / "missing.jsonl"
    args = ["data", "prepare", "--format", "audiocaps", "--root", str(audiocaps_dir)]
    args += ["--out", str(out), "--missing-out", str(missing_out), "--split", "val"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 records, 5 captions" in result.output
    assert "1 record(s) left out: media missing" in result.output
    assert "absentclip1_250 [val]: " in result.output
    assert [r.id for r in read_manifest(out)] == ["--lead_dash_10"]
    assert "absentclip1_250" in missing_out.read_text()
    strict = runner.invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1


def test_cli_prepare_reports_bad_input_without_traceback(tmp_path: Path):
    result = CliRunner().invoke(
        app,
        ["data", "prepare", "--format", "clotho", "--root", str(tmp_path), "--out", "x.jsonl"],
    )
    assert result.exit_code == 2
    assert "no Clotho layout found" in result.output
    assert "Traceback" not in result.output


def _clotho_rows(clotho_dir: Path, *file_names: str) -> None:
    """Append rows naming `file_names` to the Clotho development captions."""
    csv_path = clotho_dir / "CLOTHO_v2.1" / "clotho_csv_files" / "clotho_captions_development.csv"
    rows = "".join(f"{name},a,b,c,d,e\n" for name in file_names)
    csv_path.write_text(csv_path.read_text() + rows)


def test_prepare_probes_media_and_leaves_out_empty_and_garbage_files(
    clotho_dir: Path, tmp_path: Path
):
    audio = clotho_dir / "CLOTHO_v2.1" / "clotho_audio_files" / "development"
    (audio / "empty.wav").write_bytes(b"")
    (audio / "garbage.wav").write_bytes(b"RIFF\x00\x00this is not a wave file at all" * 4)
    (audio / "text.ogg").write_text("just some text in a file named .ogg\n")
    _clotho_rows(clotho_dir, "empty.wav", "garbage.wav", "text.ogg")
    out, missing_out = tmp_path / "m.jsonl", tmp_path / "left_out.jsonl"
    report = prepare("clotho", clotho_dir, out, missing_out=missing_out)
    assert [r.id for r in read_manifest(out)] == ["crow, at dawn.wav", "duck.wav", "hen.wav"]
    left_out = {m["id"]: m for m in map(json.loads, missing_out.read_text().splitlines())}
    assert sorted(left_out) == ["empty.wav", "garbage.wav", "gone.wav", "text.ogg"]
    assert left_out["empty.wav"]["reason"] == "file is empty (0 bytes)"
    assert left_out["gone.wav"]["reason"] == "file not found"
    assert left_out["garbage.wav"]["source"].endswith("clotho_captions_development.csv:6")
    assert "cannot open" in left_out["garbage.wav"]["reason"], left_out["garbage.wav"]
    assert report.records == 3 and len(report.missing) == 4

    unchecked = prepare("clotho", clotho_dir, out, check_media=False)
    assert unchecked.records == 6  # --no-check-media: only existence is checked

    runner = CliRunner(env={"COLUMNS": "300"})
    args = ["data", "prepare", "--format", "clotho", "--root", str(clotho_dir), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 record(s) left out: media missing (1), media unreadable (3)" in result.output
    assert "empty.wav [dev]: " in result.output and "file is empty (0 bytes)" in result.output
    assert runner.invoke(app, [*args, "--strict"]).exit_code == 1
    skipped = runner.invoke(app, [*args, "--no-check-media"])
    assert skipped.exit_code == 0 and "6 records" in skipped.output


def test_prepare_refuses_paths_that_leave_the_dataset_root(clotho_dir: Path, tmp_path: Path):
    """`/etc/passwd` and a real audio file one folder above `--root`, reached through `../`."""
    duck = clotho_dir / "CLOTHO_v2.1/clotho_audio_files/development/duck.wav"
    outside = tmp_path.parent / f"{tmp_path.name}-outside.wav"
    outside.write_bytes(duck.read_bytes())
    escape = f"../../../../{outside.name}"
    _clotho_rows(clotho_dir, "/etc/passwd", escape)
    out = tmp_path / "m.jsonl"
    try:
        for kwargs in ({}, {"check_media": False}):
            report = prepare("clotho", clotho_dir, out, **kwargs)
            assert [r.id for r in read_manifest(out)] == [
                "crow, at dawn.wav",
                "duck.wav",
                "hen.wav",
            ]
            refused = {m.id: m for m in report.missing if m.id != "gone.wav"}
            assert sorted(refused) == [escape, "/etc/passwd"]
            assert all(
                m.reason.startswith("path leaves the dataset root") for m in refused.values()
            )
        result = CliRunner(env={"COLUMNS": "300"}).invoke(
            app,
            ["data", "prepare", "--format", "clotho", "--root", str(clotho_dir), "--out", str(out)],
        )
        assert "path outside the dataset root (2)" in result.output, result.output
    finally:
        outside.unlink()


@pytest.mark.usefixtures("default_csv_limit")
def test_a_caption_longer_than_the_csv_module_limit_is_read(clotho_dir: Path):
    long_caption = "a crow caws " * 12_000  # 144,000 characters > csv's 131,072 default
    csv_path = clotho_dir / "CLOTHO_v2.1" / "clotho_csv_files" / "clotho_captions_evaluation.csv"
    csv_path.write_text(csv_path.read_text().replace("h1", long_caption.strip()))
    [hen] = [r for r in read_dataset("clotho", clotho_dir).records if r.id == "hen.wav"]
    assert hen.captions[0] == long_caption.strip()


def test_the_header_probe_fills_duration_s(
    clotho_dir: Path, vggsound_dir: Path, tux: dict[str, Path], tmp_path: Path
):
    """Clotho's CSVs give no durations: the probe `prepare` runs anyway reads them from the
    headers (libsndfile for the wavs, the container for VGGSound's mp4), so Table 1's audio
    length is known (it printed "unknown"); without the probe they stay unknown."""
    import soundfile as sf

    from multi2cap.analysis.dataset_report import write_dataset_report

    out = tmp_path / "clotho.jsonl"
    prepare("clotho", clotho_dir, out)
    records = read_manifest(out)
    assert [r.duration_s for r in records] == [
        pytest.approx(sf.info(r.audio).duration, abs=1e-3) for r in records
    ]
    assert all(r.duration_s and r.duration_s > 0.1 for r in records)
    report = write_dataset_report([out], tmp_path / "report")
    table1 = (report.out_dir / "report.md").read_text().split("## Table 1", 1)[1]
    clotho_row = next(line for line in table1.splitlines() if line.startswith("| clotho"))
    assert "unknown" not in clotho_row and "clips known" not in clotho_row

    videos = read_dataset("vggsound", vggsound_dir / "vggsound.csv", media=vggsound_dir / "video")
    frog = next(r for r in videos.records if r.id.startswith("---g-f_I2yQ"))
    assert frog.duration_s == pytest.approx(sf.info(tux["frog"]).duration, abs=0.1)  # AAC padding

    unprobed = read_dataset("clotho", clotho_dir, check_media=False)
    assert all(r.duration_s is None for r in unprobed.records)
