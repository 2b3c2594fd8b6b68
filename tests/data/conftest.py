"""Tiny dataset folders in the real on-disk layouts, filled with real Tux Paint recordings and
pictures (never made by us); each has one clip whose media are absent on purpose."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

# Real recordings from Debian's tuxpaint-stamps-default: mono, 22.05/44.1 kHz, 0.6-7.9 s.
SOUNDS = {
    "crow": "animals/birds/crow.ogg",
    "duck": "animals/birds/duck.ogg",
    "hen": "animals/birds/hen.ogg",
    "frog": "animals/amphibians/frog.ogg",
    "blackbird": "animals/birds/blackbird.ogg",
}


@pytest.fixture(scope="session")
def tux(tuxpaint_dir: Path) -> dict[str, Path]:
    """name -> real .ogg; the stamp picture is the same path with .png."""
    paths = {name: tuxpaint_dir / rel for name, rel in SOUNDS.items()}
    absent = [p for p in paths.values() if not p.is_file() or not p.with_suffix(".png").is_file()]
    if absent:
        pytest.skip(f"Tux Paint sounds/pictures not installed: {absent}")
    return paths


def put_audio(source: Path, target: Path) -> Path:
    """Copy `source` to `target`, converting to wav/flac (soundfile) or mp4/AAC (PyAV)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == source.suffix:
        shutil.copyfile(source, target)
    elif target.suffix in (".wav", ".flac"):
        data, rate = sf.read(source, dtype="float32")
        sf.write(target, data, rate)
    elif target.suffix == ".mp4":
        _mux_mp4(source, target)
    else:
        raise ValueError(f"no converter to {target.suffix}")
    return target


def _mux_mp4(source: Path, target: Path) -> None:
    """An audio-only mp4 (AAC) holding `source`, standing in for a VGGSound clip."""
    data, rate = sf.read(source, dtype="float32", always_2d=True)
    with av.open(str(target), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for start in range(0, len(data), 1024):
            chunk = np.ascontiguousarray(data[start : start + 1024, :1].T)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def clotho_dir(tmp_path: Path, tux: dict[str, Path]) -> Path:
    """CLOTHO_v2.1 with dev (3 rows, one without audio) and eval (1 row) splits."""
    base = tmp_path / "CLOTHO_v2.1"
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    write_text(
        base / "clotho_csv_files" / "clotho_captions_development.csv",
        header
        + '"crow, at dawn.wav","A crow caws, twice.",c2,c3,c4,c5\n'
        + 'duck.wav,"He said ""quack"" loudly",d2,d3,d4,d5\n'
        + "gone.wav,g1,g2,g3,g4,g5\n",
    )
    write_text(
        base / "clotho_csv_files" / "clotho_captions_evaluation.csv",
        header + "hen.wav,h1,h2,h3,h4,h5\n",
    )
    audio = base / "clotho_audio_files"
    put_audio(tux["crow"], audio / "development" / "crow, at dawn.wav")
    put_audio(tux["duck"], audio / "development" / "duck.wav")
    put_audio(tux["hen"], audio / "evaluation" / "hen.wav")
    return tmp_path


@pytest.fixture
def audiocaps_dir(tmp_path: Path, tux: dict[str, Path]) -> Path:
    """AUDIOCAPS v1: train (2 clips), val (2 clips x 5 interleaved rows, one clip absent)."""
    base = tmp_path / "AUDIOCAPS"
    header = "audiocap_id,youtube_id,start_time,caption\n"
    write_text(
        base / "csv_files_v1" / "train.csv",
        header + '1,-abc_DEF123,30,"A duck quacks, loudly"\n2,xyzXYZ12345,0,A frog croaks\n',
    )
    rows = []
    for i in range(5):
        rows.append(f"{10 + i},--lead_dash,10,hen clucks {i}\n")
        rows.append(f"{20 + i},absentclip1,250,nothing {i}\n")
    write_text(base / "csv_files_v1" / "val.csv", header + "".join(rows))
    audio = base / "audio_32000Hz"
    put_audio(tux["duck"], audio / "train" / "-abc_DEF123_30.flac")
    put_audio(tux["frog"], audio / "train" / "xyzXYZ12345_0.flac")
    put_audio(tux["hen"], audio / "val" / "--lead_dash_10.flac")
    return tmp_path


@pytest.fixture
def wavcaps_dir(tmp_path: Path, tux: dict[str, Path]) -> Path:
    """WavCaps with AudioSet_SL (HF dict form), FreeSound (one absent) and SoundBible (bare list)."""
    base = tmp_path / "WavCaps"
    as_items = [{"id": "Y-abc_DEF1234.wav", "caption": "A crow calls", "audio": "wav_path"}]
    as_items[0]["duration"] = 1.96
    write_text(
        base / "json_files" / "AudioSet_SL" / "as_final.json",
        json.dumps({"num_captions_per_audio": 1, "data": as_items}),
    )
    fsd_items = [
        {"id": "180913", "caption": "Ducks quack", "audio": "wav_path", "duration": 3.2},
        {"id": "999", "caption": "Absent", "audio": "wav_path", "duration": 1.0},
    ]
    write_text(
        base / "json_files" / "FreeSound" / "fsd_final.json",
        json.dumps({"num_captions_per_audio": 1, "data": fsd_items}),
    )
    sb_items = [{"id": "180913", "caption": "A hen clucks", "duration": 1.45}]
    write_text(base / "json_files" / "SoundBible" / "sb_final.json", json.dumps(sb_items))
    audio = base / "Audio"
    put_audio(tux["crow"], audio / "AudioSet_SL" / "Y-abc_DEF1234.flac")
    put_audio(tux["duck"], audio / "FreeSound" / "180913.flac")
    put_audio(tux["hen"], audio / "SoundBible" / "180913.flac")
    return tmp_path


@pytest.fixture
def vggsound_dir(tmp_path: Path, tux: dict[str, Path]) -> Path:
    """vggsound.csv (quoted labels, leading dashes, a duplicate row) + nested mp4 clips."""
    write_text(
        tmp_path / "vggsound.csv",
        "---g-f_I2yQ,1,people marching,test\n"
        '--0PQM4-hqg,30,"male speech, man speaking",train\n'
        'abcdefghijk,0,"playing violin, fiddle",train\n'
        '--0PQM4-hqg,30,"male speech, man speaking",train\n',
    )
    put_audio(tux["frog"], tmp_path / "video" / "part_00" / "---g-f_I2yQ_000001.mp4")
    put_audio(tux["crow"], tmp_path / "video" / "--0PQM4-hqg_000030.mp4")
    return tmp_path


@pytest.fixture
def vggcaps_dir(tmp_path: Path, tux: dict[str, Path]) -> Path:
    """vggcaps.jsonl with three records; the third one's frame is absent."""
    media = tmp_path / "media"
    records = []
    for name, split in (("duck", "train"), ("hen", "test"), ("frog", "train")):
        clip_id = f"-{name}_abcdef_000010"
        put_audio(tux[name], media / f"{clip_id}.flac")
        if name != "frog":
            Image.open(tux[name].with_suffix(".png")).convert("RGB").save(media / f"{clip_id}.jpg")
        records.append(
            {
                "id": clip_id,
                "youtube_id": clip_id[:-7],
                "start_s": 10,
                "category": f"{name} calling",
                "vggsound_split": "train",
                "split": split,
                "audio": f"media/{clip_id}.flac",
                "frame": f"media/{clip_id}.jpg",
                "spectrogram": f"media/{clip_id}.png",
                "duration_s": 10.0,
                "raw_caption": "raw",
                "caption": f"A {name} calls twice.",
                "backend": "offline",
                "prompt_version": "v1",
                "usage": {},
            }
        )
    write_text(tmp_path / "vggcaps.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return tmp_path
