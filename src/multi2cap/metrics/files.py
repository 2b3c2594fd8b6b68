"""Caption files for `multi2cap evaluate`: reading predictions and references, writing scores.

Predictions: CSV `id,caption` (Clotho's `file_name` is accepted for `id`) or JSONL
`{"id": ..., "caption": ...}`. References: CSV wide (`id,caption_1..caption_N`, blank cells
ignored), CSV long (`id,caption`, one row per reference), or JSONL `{"id": ..., "captions": [...]}`.
The format follows the extension (`.csv`, `.jsonl`/`.json`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from multi2cap.io import atomic_write_text
from multi2cap.metrics.evaluator import EvalResult

_ID_COLUMNS = ("id", "file_name")
_WIDE_COLUMN = re.compile(r"^caption_(\d+)$")


class CaptionFileError(ValueError):
    """A predictions or references file is malformed; the message names the file and field."""


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CaptionFileError(f"{path}: cannot read ({err})") from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    return header, list(reader)


def _id_column(path: Path, header: list[str]) -> str:
    for name in _ID_COLUMNS:
        if name in header:
            return name
    raise CaptionFileError(f"{path}: no `id` (or `file_name`) column in header {header}")


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CaptionFileError(f"{path}: cannot read ({err})") from err
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CaptionFileError(f"{path}:{number}: invalid JSON ({err.msg})") from err
        if not isinstance(record, dict) or "id" not in record:
            raise CaptionFileError(f"{path}:{number}: expected an object with an `id` field")
        records.append((number, record))
    return records


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise CaptionFileError(f"{path}: unknown format (use a .csv or .jsonl file)")


def read_predictions(path: str | Path) -> dict[str, str]:
    """id -> predicted caption, in file order; duplicate ids are an error."""
    path = Path(path)
    out: dict[str, str] = {}

    def add(key: str, caption: Any, where: str) -> None:
        if not isinstance(caption, str):
            raise CaptionFileError(f"{where}: `caption` must be a string")
        if key in out:
            raise CaptionFileError(f"{where}: duplicate id {key!r}")
        out[key] = caption

    if _format(path) == "csv":
        header, rows = _read_csv(path)
        id_col = _id_column(path, header)
        if "caption" not in header:
            raise CaptionFileError(f"{path}: no `caption` column in header {header}")
        for number, row in enumerate(rows, start=2):
            add(str(row[id_col]).strip(), row["caption"] or "", f"{path}:{number}")
    else:
        for number, record in _read_jsonl(path):
            add(str(record["id"]), record.get("caption"), f"{path}:{number}")
    if not out:
        raise CaptionFileError(f"{path}: no predictions")
    return out


def read_references(path: str | Path) -> dict[str, list[str]]:
    """id -> reference captions (wide CSV, long CSV or JSONL; see the module docstring)."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    if _format(path) == "csv":
        header, rows = _read_csv(path)
        id_col = _id_column(path, header)
        wide = sorted(
            (int(m.group(1)), h) for h in header if (m := _WIDE_COLUMN.match(h)) is not None
        )
        if not wide and "caption" not in header:
            raise CaptionFileError(
                f"{path}: expected `caption_1..caption_N` (wide) or `caption` (long) columns, "
                f"found {header}"
            )
        for number, row in enumerate(rows, start=2):
            key = str(row[id_col]).strip()
            if wide:
                if key in out:
                    raise CaptionFileError(f"{path}:{number}: duplicate id {key!r}")
                out[key] = [row[h] for _, h in wide if row.get(h) and row[h].strip()]
            elif row.get("caption") and row["caption"].strip():
                out.setdefault(key, []).append(row["caption"])
            else:
                out.setdefault(key, [])
    else:
        for number, record in _read_jsonl(path):
            captions = record.get("captions")
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise CaptionFileError(f"{path}:{number}: `captions` must be a list of strings")
            key = str(record["id"])
            if key in out:
                raise CaptionFileError(f"{path}:{number}: duplicate id {key!r}")
            out[key] = [c for c in captions if c.strip()]
    empty = [key for key, refs in out.items() if not refs]
    if empty:
        raise CaptionFileError(f"{path}: no reference caption for id(s) {_listing(empty)}")
    if not out:
        raise CaptionFileError(f"{path}: no references")
    return out


def _listing(ids: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def align(
    predictions: dict[str, str], references: dict[str, list[str]]
) -> tuple[list[str], list[str], list[list[str]]]:
    """(ids, candidates, mult_references) in prediction order; ids must match one to one."""
    missing = [key for key in predictions if key not in references]
    extra = [key for key in references if key not in predictions]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"predicted ids without references: {_listing(missing)}")
        if extra:
            parts.append(f"reference ids without prediction: {_listing(extra)}")
        raise CaptionFileError("; ".join(parts))
    ids = list(predictions)
    return ids, [predictions[k] for k in ids], [references[k] for k in ids]


def scores_document(result: EvalResult, n_items: int, **settings: Any) -> dict[str, Any]:
    """The `scores.json` content: raw corpus values (null when unavailable), reasons, settings."""
    corpus: dict[str, float | None] = dict(result.corpus)
    corpus.update(dict.fromkeys(result.unavailable))
    return {
        "corpus": corpus,
        "unavailable": result.unavailable,
        "n_items": n_items,
        "scale": "raw (aac-metrics / pycocoevalcap scale, not x100)",
        "settings": {**result.settings, **settings},
    }


def write_scores(path: str | Path, document: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def write_per_item(path: str | Path, ids: list[str], result: EvalResult) -> None:
    """CSV with one row per item: `id` then one column per metric with per-item scores."""
    keys = list(result.per_item)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", *keys])
    for i, key in enumerate(ids):
        writer.writerow([key, *(repr(result.per_item[k][i]) for k in keys)])
    atomic_write_text(path, buffer.getvalue())
