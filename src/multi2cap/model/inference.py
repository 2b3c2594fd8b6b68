"""Captioning files and folders with a trained model (what `multi2cap caption` runs).

A file that cannot be read is recorded with its reason and the others are still captioned.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from multi2cap.io import atomic_write_text, write_jsonl
from multi2cap.media.audio import load_audio
from multi2cap.media.errors import MediaError
from multi2cap.model.multi2cap import Multi2Cap

AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".m4a", ".aac", ".mp4",
     ".mkv", ".webm", ".mov", ".avi"}
)  # fmt: skip
"""Extensions collected from folders (any file given explicitly is tried whatever its name)."""


@dataclass
class FileCaption:
    """One input file: its caption, or the reason it could not be captioned."""

    path: Path
    caption: str | None = None
    error: str | None = None


def collect_audio_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the audio/video files under each folder (recursive, sorted).

    Raises `FileNotFoundError` naming a folder without any audio file."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
            )
            if not found:
                raise FileNotFoundError(f"no audio files under {item}")
            files.extend(found)
        else:
            files.append(item)
    return files


def caption_files(
    model: Multi2Cap,
    files: Sequence[Path],
    *,
    batch_size: int = 8,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[FileCaption]:
    """Caption `files` in input order, reading `batch_size` files at a time (so memory holds
    one batch of audio, not the corpus). `on_progress(n)` is called with each batch's size."""
    results = [FileCaption(Path(f)) for f in files]
    for start in range(0, len(results), batch_size):
        group = results[start : start + batch_size]
        ready, waves = [], []
        for item in group:
            try:
                waves.append(load_audio(item.path))
                ready.append(item)
            except MediaError as err:
                item.error = str(err)
        if waves:
            texts = model.caption(
                waves, num_beams=num_beams, max_new_tokens=max_new_tokens, batch_size=batch_size
            )
            for item, text in zip(ready, texts, strict=True):
                item.caption = text
        if on_progress is not None:
            on_progress(len(group))
    return results


def write_captions(results: Sequence[FileCaption], output: Path) -> Path | None:
    """CSV `file_name,caption,path` of the captioned files (the `file_name` column is what
    `multi2cap evaluate --predictions` and Clotho's references use), written atomically; the
    failures go to `<output stem>.failures.jsonl` next to it. Returns that file's path, or None
    when nothing failed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file_name", "caption", "path"])
    for item in results:
        if item.caption is not None:
            writer.writerow([item.path.name, item.caption, str(item.path)])
    atomic_write_text(output, buffer.getvalue())
    failed = [{"path": str(r.path), "error": r.error} for r in results if r.error is not None]
    if not failed:
        return None
    failures = output.with_name(f"{output.stem}.failures.jsonl")
    write_jsonl(failures, failed)
    return failures
