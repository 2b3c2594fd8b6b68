"""Captioning files and folders with a trained model (what `multi2cap caption` runs).

A file that cannot be read is recorded with its reason and the others are still captioned; the
caption files are written by `multi2cap.model.caption_files`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from multi2cap.fsnames import printable
from multi2cap.media.audio import SAMPLE_RATE, load_audio
from multi2cap.media.errors import MediaError
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.rerank import ClapReranker, RerankedCaption

AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".m4a", ".aac", ".mp4",
     ".mkv", ".webm", ".mov", ".avi"}
)  # fmt: skip
"""Extensions collected from folders (any file given explicitly is tried whatever its name)."""


@dataclass
class FileCaption:
    """One input: its caption, or the reason it could not be captioned.

    `key` is the `file_name` written for it: the shortest trailing part of its path that no other
    file of the run shares (`a.wav`, or `dev/a.wav` and `eval/a.wav` when both are captioned), so
    rows stay unique for `multi2cap evaluate` and bare names still match Clotho's references.
    `rerank` holds the CLAP re-ranking details when the caption was chosen by one.
    """

    path: Path
    caption: str | None = None
    error: str | None = None
    key: str = ""
    rerank: RerankedCaption | None = None


@dataclass
class CollectedInputs:
    """What `collect_audio_files` found: the files to caption and the inputs that gave none."""

    files: list[Path] = field(default_factory=list)
    problems: list[FileCaption] = field(default_factory=list)


def _walk_audio(folder: Path) -> list[Path]:
    """Audio files under `folder`, following folder symlinks but entering each real folder once
    (a link to an ancestor cannot loop). Sorted by path."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            info = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        for name in filenames:
            path = Path(dirpath, name)
            if Path(name).suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                found.append(path)
    return sorted(found)


def collect_audio_files(inputs: Sequence[str | Path]) -> CollectedInputs:
    """Files as given, and the audio/video files under each folder (recursive, sorted, folder
    symlinks followed once each). A folder without any audio file is a problem of its own, not
    the end of the job; a file reached twice (given twice, or through two inputs) is kept once."""
    collected = CollectedInputs()
    seen: set[str] = set()
    for item in map(Path, inputs):
        if item.is_dir():
            found = _walk_audio(item)
            if not found:
                collected.problems.append(
                    FileCaption(item, error=f"no audio files under {printable(item)}")
                )
        else:
            found = [item]
        for path in found:
            if (absolute := os.path.abspath(path)) not in seen:
                seen.add(absolute)
                collected.files.append(path)
    return collected


def unique_keys(paths: Sequence[Path]) -> list[str]:
    """For each path, its shortest `/`-joined trailing part shared by no other path (distinct
    absolute paths always get distinct keys)."""
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    depth = [1] * len(parts)
    while True:
        keys = ["/".join(p[-d:]).lstrip("/") for p, d in zip(parts, depth, strict=True)]
        counts = Counter(keys)
        clashing = [i for i, k in enumerate(keys) if counts[k] > 1 and depth[i] < len(parts[i])]
        if not clashing:
            return keys
        for i in clashing:
            depth[i] += 1


def caption_files(
    model: Multi2Cap,
    files: Sequence[Path],
    *,
    batch_size: int = 8,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    reranker: ClapReranker | None = None,
) -> list[FileCaption]:
    """Caption `files` in input order, reading `batch_size` files at a time (so memory holds
    one batch of audio, not the corpus). `on_progress(n)` is called with each batch's size.

    With a `reranker`, each file is also read at the CLAP's rate and its caption is the CLAP's
    choice among the candidates of one beam search (`multi2cap.model.rerank`); the beam width
    is then the reranker's (`num_beams` must stay None)."""
    if reranker is not None and num_beams is not None:
        raise ValueError("with a reranker, set the beam width in its RerankConfig.num_beams")
    paths = [Path(f) for f in files]
    results = [FileCaption(p, key=k) for p, k in zip(paths, unique_keys(paths), strict=True)]
    for start in range(0, len(results), batch_size):
        group = results[start : start + batch_size]
        ready, waves, clap_waves = [], [], []
        for item in group:
            try:
                wave = load_audio(item.path)
                if reranker is not None:
                    clap_waves.append(reranker.scorer.load(item.path))
                waves.append(wave)
                ready.append(item)
            except MediaError as err:
                item.error = printable(err)
            except Exception as err:  # one odd file must not end the job
                item.error = printable(
                    f"{item.path}: unexpected decoder error ({type(err).__name__}: {err})"
                )
        if waves and reranker is not None:
            reranked = reranker.caption_waves(
                model, waves, clap_waves, batch_size=batch_size, max_new_tokens=max_new_tokens
            )
            for item, choice in zip(ready, reranked, strict=True):
                item.caption, item.rerank = choice.caption, choice
        elif waves:
            texts = model.caption(
                waves,
                sampling_rate=SAMPLE_RATE,  # load_audio's rate
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
            )
            for item, text in zip(ready, texts, strict=True):
                item.caption = text
        if on_progress is not None:
            on_progress(len(group))
    return results
