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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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


def media_problem(path: str, kind: MediaKind) -> str | None:
    """None when the header of `path` reads as `kind`, else why it does not (one line)."""
    try:
        size = os.stat(path).st_size
    except OSError as err:
        return f"cannot read ({err.strerror})"
    if size == 0:
        return "file is empty (0 bytes)"
    if kind == "image":
        return _image_problem(path)
    return _audio_problem(path)


def _image_problem(path: str) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err})"
    return None


def _audio_problem(path: str) -> str | None:
    import soundfile as sf

    from multi2cap.media.errors import MediaError
    from multi2cap.media.video import probe_media

    try:
        if sf.info(os.fsencode(path)).frames > 0:
            return None
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not a libsndfile format (mp4, m4a, ...): ask FFmpeg
    try:
        info = probe_media(path)
    except MediaError as err:
        return err.problem
    if not info.has_audio:
        return "no audio stream"
    return None


def screen_records(result: ReadResult, roots: Sequence[Path], check_media: bool) -> ReadResult:
    """`result` with the records whose media leave `roots` or (when `check_media`) do not open
    moved to `missing`, each with its reason; record order is kept. (A path that does not exist
    was left out by the reader already, as "file not found", wherever it points.)"""
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
    if jobs:
        with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
            problems = list(pool.map(lambda job: media_problem(job[1], job[2]), jobs))
        for (record, path, _), problem in zip(jobs, problems, strict=True):
            if problem is not None:
                refused.setdefault(record.id, (path, problem))
    if not refused:
        return result
    kept, left_out = [], list(result.missing)
    for record in result.records:
        if record.id in refused:
            path, reason = refused[record.id]
            source = result.sources.get(record.id, "?")
            left_out.append(MissingMedia(record.id, record.split, path, source, reason))
        else:
            kept.append(record)
    return ReadResult(kept, left_out, result.duplicates, result.sources)
