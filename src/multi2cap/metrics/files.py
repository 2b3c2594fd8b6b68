"""Caption files for `multi2cap evaluate`: reading predictions and references, writing scores.

Predictions: CSV `id,caption` (Clotho's `file_name` is accepted for `id`, and DCASE's submission
header `file_name,caption_predicted` too), JSONL `{"id": ..., "caption": ...}` or a `.json` array
of such objects (`file_name` accepted for `id` as in CSV): every file `multi2cap caption` writes.
References: CSV wide (`id,caption_1..caption_N`, blank cells ignored), CSV long (`id,caption`,
one row per reference), JSONL `{"id": ..., "captions": [...]}` or a `.json` array of those. The format follows the
extension (`.csv`; `.jsonl`; `.json`, an array or JSON lines). Errors name the file and the line
(or `[index]` in a JSON array); an empty prediction is scored as it is, and counted
(`empty_predictions`) so that the CLI can warn and `scores.json` can say so.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from multi2cap.io import atomic_write_text, type_name
from multi2cap.metrics.result import EvalResult

_ID_COLUMNS = ("id", "file_name")
_PREDICTION_COLUMNS = ("caption", "caption_predicted")  # ours, DCASE's submission header
_WIDE_COLUMN = re.compile(r"^caption_(\d+)$")


class CaptionFileError(ValueError):
    """A predictions or references file is malformed; the message names the file and field."""


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line, row)]) of a CSV file, `line` being where the row starts.

    Fields may be as long as the file (the csv module's 131,072-character default limit is
    raised to the file's length). A quote that never closes, or a field holding a line break,
    is an error naming the line of the quote: captions are one line each, so a field spanning
    lines is an unbalanced quote that would otherwise swallow the rows after it (which then
    surface, far from the cause, as missing ids).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CaptionFileError(f"{path}: cannot read ({err})") from err
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    end = 0
    while True:
        start = _first_non_blank(lines, end)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            if "end of data" in str(err):
                raise CaptionFileError(
                    f"{path}:{start}: unbalanced quote: a quoted field opened on line {start} "
                    "never closes"
                ) from err
            raise CaptionFileError(f"{path}:{reader.line_num}: malformed CSV ({err})") from err
        end = reader.line_num
        if any("\n" in cell or "\r" in cell for cell in row):
            raise CaptionFileError(
                f"{path}:{start}: unbalanced quote? a field opened on line {start} runs to line "
                f"{end} (captions must not hold line breaks)"
            )
        if any(cell.strip() for cell in row):
            rows.append((start, row))
    if not rows:
        return [], []
    header = [h.strip() for h in rows[0][1]]
    records = []
    for line, row in rows[1:]:
        if any(cell.strip() for cell in row[len(header) :]):
            raise CaptionFileError(
                f"{path}:{line}: {len(row)} fields for {len(header)} columns {header} "
                "(a comma in an unquoted caption?)"
            )
        cells = row[: len(header)] + [""] * (len(header) - len(row))  # short rows: blank cells
        records.append((line, dict(zip(header, cells, strict=True))))
    return header, records


def _first_non_blank(lines: list[str], after: int) -> int:
    """1-based number of the first non-blank line after line `after` (where the next row starts)."""
    number = after
    while number < len(lines) and not lines[number].strip():
        number += 1
    return number + 1


def _id_column(path: Path, header: list[str]) -> str:
    for name in _ID_COLUMNS:
        if name in header:
            return name
    raise CaptionFileError(f"{path}: no `id` (or `file_name`) column in header {header}")


def _read_json_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """[(where, object)] of a JSONL file, or of a `.json` file holding one array of objects."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CaptionFileError(f"{path}: cannot read ({err})") from err
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise CaptionFileError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
        items = [(f"{path}:[{i}]", item) for i, item in enumerate(document)]
    else:
        items = []
        for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028
            if not line.strip():
                continue
            try:
                items.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise CaptionFileError(f"{path}:{number}: invalid JSON ({err.msg})") from err
    records = []
    for where, record in items:
        key = next((k for k in _ID_COLUMNS if isinstance(record, dict) and k in record), None)
        if key is None:
            raise CaptionFileError(
                f"{where}: expected an object with an `id` (or `file_name`) field, found "
                f"{_found(record)}"
            )
        records.append((where, {**record, "id": record[key]}))
    return records


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "json"
    raise CaptionFileError(f"{path}: unknown format (use a .csv, .jsonl or .json file)")


def read_predictions(path: str | Path) -> dict[str, str]:
    """id -> predicted caption, in file order; duplicate ids are an error."""
    path = Path(path)
    out: dict[str, str] = {}

    def add(key: str, caption: Any, where: str) -> None:
        if not isinstance(caption, str):
            raise CaptionFileError(f"{where}: `caption`: expected str, found {type_name(caption)}")
        if key in out:
            raise CaptionFileError(f"{where}: duplicate id {key!r}")
        out[key] = caption

    if _format(path) == "csv":
        header, rows = _read_csv(path)
        id_col = _id_column(path, header)
        caption_col = next((c for c in _PREDICTION_COLUMNS if c in header), None)
        if caption_col is None:
            raise CaptionFileError(
                f"{path}: no `caption` (or `caption_predicted`) column in header {header}"
            )
        for number, row in rows:
            add(str(row[id_col]).strip(), row[caption_col] or "", f"{path}:{number}")
    else:
        for where, record in _read_json_records(path):
            add(str(record["id"]), record.get("caption"), where)
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
        for number, row in rows:
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
        for where, record in _read_json_records(path):
            captions = record.get("captions")
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise CaptionFileError(
                    f"{where}: `captions`: expected list[str], found {type_name(captions)}"
                )
            key = str(record["id"])
            if key in out:
                raise CaptionFileError(f"{where}: duplicate id {key!r}")
            out[key] = [c for c in captions if c.strip()]
    empty = [key for key, refs in out.items() if not refs]
    if empty:
        raise CaptionFileError(f"{path}: no reference caption for id(s) {_listing(empty)}")
    if not out:
        raise CaptionFileError(f"{path}: no references")
    return out


def empty_predictions(predictions: dict[str, str]) -> list[str]:
    """Ids whose predicted caption is empty or blank (every metric scores them as no words)."""
    return [key for key, caption in predictions.items() if not caption.strip()]


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


def scores_document(
    result: EvalResult, n_items: int, empty: list[str] | None = None, **settings: Any
) -> dict[str, Any]:
    """The `scores.json` content: raw corpus values (null when unavailable), reasons, the number
    and ids of empty predictions (`empty`), settings."""
    corpus: dict[str, float | None] = dict(result.corpus)
    corpus.update(dict.fromkeys(result.unavailable))
    return {
        "corpus": corpus,
        "unavailable": result.unavailable,
        "n_items": n_items,
        "n_empty_predictions": len(empty or []),
        "empty_prediction_ids": list(empty or []),
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


def write_details(path: str | Path, ids: list[str], result: EvalResult, key: str) -> None:
    """JSONL with one record per item of what metric `key` says beside its value (`clair_a`:
    the judge's score and reason, or the error): `{"id", key: value or null, **details}`."""
    values = result.per_item.get(key, [])
    lines = []
    for i, item_id in enumerate(ids):
        value = values[i] if i < len(values) else None
        record = {"id": item_id, key: None if value is None or math.isnan(value) else value}
        lines.append(json.dumps({**record, **result.details[key][i]}, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))


def _found(record: Any) -> str:
    """An object without `id` shows its keys; anything else its type."""
    if isinstance(record, dict):
        return f"keys {sorted(record)[:8]}"
    return type_name(record)
