"""Benchmark: what `multi2cap data prepare --check-media` (the default) costs per media file.

A Clotho v2.1 layout is filled with N real Tux Paint recordings (ogg, read by libsndfile's
header probe) and a VGGSound layout with N audio-only AAC mp4 clips muxed from them (PyAV's
demuxer probe). `prepare` runs with and without the probe, and with the probe on 1 and 8 threads;
each setting is repeated and the median reported, with the probe's cost per file (ms) as the
difference against `--no-check-media` in the same run.

    .venv/bin/python benchmarks/bench_media_check.py [--files N] [--repeats R]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from multi2cap.assets import tuxpaint_stamps_dir
from multi2cap.data.readers import media_check, prepare


def _mux_mp4(source: Path, target: Path) -> None:
    data, rate = sf.read(source, dtype="float32", always_2d=True)
    with av.open(str(target), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for start in range(0, len(data), 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[start : start + 1024, :1].T), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def build(root: Path, n: int) -> tuple[Path, Path]:
    sounds = sorted(tuxpaint_stamps_dir().rglob("*.ogg"))[:n]
    clotho = root / "CLOTHO_v2.1"
    audio = clotho / "clotho_audio_files" / "evaluation"
    audio.mkdir(parents=True)
    (clotho / "clotho_csv_files").mkdir()
    rows = ["file_name,caption_1,caption_2,caption_3,caption_4,caption_5"]
    vggsound = root / "vggsound"
    (vggsound / "video").mkdir(parents=True)
    csv_rows = []
    for i, sound in enumerate(sounds):
        shutil.copyfile(sound, audio / f"s{i:05d}.ogg")
        rows.append(f"s{i:05d}.ogg,a,b,c,d,e")
        _mux_mp4(sound, vggsound / "video" / f"clip{i:07d}_000000.mp4")
        csv_rows.append(f"clip{i:07d},0,label,train")
    (clotho / "clotho_csv_files" / "clotho_captions_evaluation.csv").write_text("\n".join(rows))
    (vggsound / "vggsound.csv").write_text("\n".join(csv_rows) + "\n")
    return root, vggsound


def timed(fmt: str, root: Path, out: Path, check: bool, threads: int, repeats: int) -> float:
    media_check.PROBE_THREADS = threads
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        report = prepare(fmt, root, out, check_media=check)
        times.append(time.perf_counter() - start)
        assert not report.missing, report.missing[:3]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clotho, vggsound = build(Path(tmp), args.files)
        out = Path(tmp) / "m.jsonl"
        for fmt, root, kind in (("clotho", clotho, "ogg"), ("vggsound", vggsound, "mp4")):
            base = timed(fmt, root, out, False, 1, args.repeats)
            print(f"{kind}: --no-check-media {base:.3f} s for {args.files} files")
            for threads in (1, 8):
                probed = timed(fmt, root, out, True, threads, args.repeats)
                per_file = (probed - base) / args.files * 1000
                print(
                    f"{kind}: --check-media, {threads} thread(s): {probed:.3f} s "
                    f"({probed / base:.1f}x), probe {per_file:.2f} ms per file"
                )


if __name__ == "__main__":
    main()
