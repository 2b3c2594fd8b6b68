"""Screening a reader's records before they reach a manifest: paths must stay inside the
dataset's folders, and (with `check_media`, the default of `multi2cap data prepare`) every media
file must open.

Containment is lexical (the normalised path must lie under one of the roots), so a Clotho
`file_name` of `/etc/passwd` or `../../x.wav` is refused while symlinks inside a root are kept
(the Hugging Face cache links `x.flac` to a blob elsewhere). The readability check is a *header
probe*: zero-byte files, garbage and containers without an audio stream are caught without
decoding (libsndfile's header read for plain audio, PyAV's demuxer for containers and whatever
libsndfile refuses, PIL's `verify` for images); a file cut short after a valid header still
passes and fails later, at decoding, where training records it as a skipped clip. Probes run in
a thread pool, so that slow storage (a network file system) overlaps its waits.

The audio probe also reads the duration the header declares (libsndfile's frames / rate, else
the container's audio stream or format duration): a record whose reader did not know
`duration_s` (Clotho, AudioCaps: their CSVs do not say) gets it from there, so Table 1's audio
length is known without decoding a single file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from multi2cap.data.manifest import ManifestRecord
from multi2cap.data.readers.common import OUTSIDE_ROOT, MissingMedia, ReadResult

MediaKind = Literal["audio", "image"]

PROBE_THREADS = 8


def leaves_roots(path: str, roots: Sequence[Path]) -> bool:
    """Whether `path`, normalised as text, lies outside every folder in `roots`."""
    target = os.path.normpath(os.path.abspath(path))
    for root in roots:
        base = os.path.normpath(os.path.abspath(root))
        if target == base or target.startswith(base.rstrip(os.sep) + os.sep):
            return False
    return True


@dataclass(frozen=True)
class Probe:
    """What a header probe found: `problem` (None when the file reads as its kind) and, for
    audio, the duration in seconds its header declares (None when it declares none)."""

    problem: str | None
    duration_s: float | None = None


def probe(path: str, kind: MediaKind) -> Probe:
    """Probe the header of `path` as `kind` (see the module docstring)."""
    try:
        size = os.stat(path).st_size
    except OSError as err:
        return Probe(f"cannot read ({err.strerror})")
    if size == 0:
        return Probe("file is empty (0 bytes)")
    if kind == "image":
        return Probe(_image_problem(path))
    return _probe_audio(path)


def _image_problem(path: str) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err})"
    return None


def _probe_audio(path: str) -> Probe:
    import soundfile as sf

    from multi2cap.media.errors import MediaError
    from multi2cap.media.video import probe_media

    try:
        info = sf.info(os.fsencode(path))
        if info.frames > 0 and info.samplerate > 0:
            return Probe(None, info.frames / info.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not a libsndfile format (mp4, m4a, ...): ask FFmpeg
    try:
        media = probe_media(path)
    except MediaError as err:
        return Probe(err.problem)
    if not media.has_audio:
        return Probe("no audio stream")
    return Probe(None, media.audio_duration_s or media.duration_s)


def screen_records(result: ReadResult, roots: Sequence[Path], check_media: bool) -> ReadResult:
    """`result` with the records whose media leave `roots` or (when `check_media`) do not open
    moved to `missing`, each with its reason; record order is kept. (A path that does not exist
    was left out by the reader already, as "file not found", wherever it points.) A kept record
    without `duration_s` takes its audio header's (when `check_media`)."""
    outside = f"{OUTSIDE_ROOT} ({', '.join(map(str, roots))})"
    jobs: list[tuple[ManifestRecord, str, MediaKind]] = []
    refused: dict[str, tuple[str, str]] = {}
    for record in result.records:
        for path, kind in ((record.audio, "audio"), (record.image, "image")):
            if path is None:
                continue
            if leaves_roots(path, roots):
                refused.setdefault(record.id, (path, outside))
            elif check_media:
                jobs.append((record, path, kind))  # type: ignore[arg-type]
    durations: dict[str, float] = {}
    if jobs:
        with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
            probes = list(pool.map(lambda job: probe(job[1], job[2]), jobs))
        for (record, path, kind), found in zip(jobs, probes, strict=True):
            if found.problem is not None:
                refused.setdefault(record.id, (path, found.problem))
            elif kind == "audio" and found.duration_s is not None:
                durations[record.id] = round(found.duration_s, 3)
    kept, left_out = [], list(result.missing)
    for record in result.records:
        if record.id in refused:
            path, reason = refused[record.id]
            source = result.sources.get(record.id, "?")
            left_out.append(MissingMedia(record.id, record.split, path, source, reason))
        elif record.duration_s is None and record.id in durations:
            kept.append(dataclasses.replace(record, duration_s=durations[record.id]))
        else:
            kept.append(record)
    return ReadResult(kept, left_out, result.duplicates, result.sources)
