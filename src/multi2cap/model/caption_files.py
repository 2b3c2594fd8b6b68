"""The caption files `multi2cap caption` writes (`multi2cap evaluate --predictions` reads them
all, see `multi2cap.metrics.files`; columns in docs/data_formats.md).

Formats (`CaptionFormat`): `csv` (`file_name,caption,path`), `json` (an array of `CaptionRow`
objects), `jsonl` (one `CaptionRow` per line), `dcase` (the DCASE challenge's submission CSV,
`file_name,caption_predicted`). The format follows the output's extension unless named; a name
that says another format than the one asked for is an error, never a silent CSV in a `.json`.
Light on purpose (no torch): the CLI reads `CaptionFormat` when it starts.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

from multi2cap.fsnames import printable
from multi2cap.io import atomic_write_text, write_jsonl

if TYPE_CHECKING:
    from multi2cap.model.inference import FileCaption

CaptionFormat = Literal["csv", "json", "jsonl", "dcase"]
CAPTION_FORMATS: tuple[str, ...] = get_args(CaptionFormat)
_FORMAT_OF_SUFFIX: dict[str, CaptionFormat] = {".csv": "csv", ".json": "json", ".jsonl": "jsonl"}
_SUFFIX_OF_FORMAT = {"csv": ".csv", "json": ".json", "jsonl": ".jsonl", "dcase": ".csv"}
DCASE_COLUMNS = ("file_name", "caption_predicted")
"""The DCASE audio-captioning submission header (Clotho's file names, one caption each)."""
RERANK_COLUMNS = ("clap_score", "tied", "candidates")
"""What `--rerank-scores` adds to each row (`multi2cap.model.rerank.RerankedCaption.to_record`)."""


class CaptionRow(TypedDict):
    """One captioned file in a `csv`, `json` or `jsonl` caption file."""

    file_name: str
    caption: str
    path: str


def caption_format(output: Path | None, requested: CaptionFormat | None) -> CaptionFormat:
    """The format to write: `requested` (`--format`), else the one `output`'s extension names.

    Raises `ValueError` naming the file when the extension names no format, or another format
    than `requested` (a `dcase` file is a `.csv`); with no `output` (printing), `requested`
    or `csv`."""
    suffix = output.suffix.lower() if output is not None else None
    if requested is not None:
        if requested not in CAPTION_FORMATS:
            raise ValueError(f"unknown caption format {requested!r}: one of {CAPTION_FORMATS}")
        expected = _SUFFIX_OF_FORMAT[requested]
        if output is not None and suffix != expected:
            raise ValueError(
                f"--format {requested} writes a {expected} file, but {printable(output)} "
                f"ends in {suffix or 'no extension'}"
            )
        return requested
    if output is None:
        return "csv"
    if suffix not in _FORMAT_OF_SUFFIX:
        raise ValueError(
            f"{printable(output)}: cannot tell the caption format from "
            f"{'the extension ' + suffix if suffix else 'a name without extension'}: end it in "
            f".csv, .json or .jsonl, or pass --format ({', '.join(CAPTION_FORMATS)})"
        )
    return _FORMAT_OF_SUFFIX[suffix]


def caption_rows(
    results: Sequence[FileCaption], *, rerank_scores: bool = False
) -> list[dict[str, Any]]:
    """The captioned files' rows (`CaptionRow`), in input order (failures are not rows; see
    `write_captions`). Names that are not UTF-8 are written with `\\xNN` escapes (see
    `printable`). `rerank_scores` adds the CLAP re-ranking fields `RERANK_COLUMNS` to each row:
    `clap_score` (the caption's cosine), `tied` (the texts tied with it) and `candidates`
    (`{text, source, rank, clap}` in candidate order); all None for a caption not re-ranked."""
    rows: list[dict[str, Any]] = []
    for r in results:
        if r.caption is None:
            continue
        row: dict[str, Any] = dict(
            CaptionRow(file_name=printable(r.key), caption=r.caption, path=printable(r.path))
        )
        if rerank_scores:
            record = r.rerank.to_record() if r.rerank is not None else {}
            row.update({key: record.get(key) for key in RERANK_COLUMNS})
        rows.append(row)
    return rows


def _rerank_cells(row: dict[str, Any]) -> list[str]:
    """A CSV row's `RERANK_COLUMNS` cells: the score's repr, the lists as JSON; blank when the
    caption was not re-ranked."""
    if row["clap_score"] is None:
        return ["", "", ""]
    return [
        repr(row["clap_score"]),
        json.dumps(row["tied"], ensure_ascii=False),
        json.dumps(row["candidates"], ensure_ascii=False),
    ]


def format_captions(
    results: Sequence[FileCaption], fmt: CaptionFormat, *, rerank_scores: bool = False
) -> str:
    """The text of a caption file in format `fmt` (see the module docstring). `rerank_scores`
    adds the `RERANK_COLUMNS` (JSON and JSONL: fields; CSV and DCASE: columns after the
    format's own, lists as JSON text)."""
    rows = caption_rows(results, rerank_scores=rerank_scores)
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    extra = list(RERANK_COLUMNS) if rerank_scores else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "dcase":
        writer.writerow([*DCASE_COLUMNS, *extra])
        cells = [[row["file_name"], row["caption"]] for row in rows]
    else:
        writer.writerow([*CaptionRow.__annotations__, *extra])
        cells = [[row[key] for key in CaptionRow.__annotations__] for row in rows]
    for row, first in zip(rows, cells, strict=True):
        writer.writerow(first + _rerank_cells(row) if rerank_scores else first)
    return buffer.getvalue()


def write_captions(
    results: Sequence[FileCaption],
    output: Path,
    fmt: CaptionFormat | None = None,
    *,
    rerank_scores: bool = False,
) -> Path | None:
    """Write the captioned files to `output` atomically, in format `fmt` (default: from the
    extension, see `caption_format`); the `file_name` of each row, unique in the run, is what
    `multi2cap evaluate --predictions` and Clotho's references use. `rerank_scores` adds the
    CLAP re-ranking fields (see `format_captions`). The failures (files and inputs that gave
    no file) go to `<output stem>.failures.jsonl` next to it. Returns that file's path, or None
    when nothing failed."""
    text = format_captions(results, caption_format(output, fmt), rerank_scores=rerank_scores)
    atomic_write_text(output, text)
    failed = [{"path": printable(r.path), "error": r.error} for r in results if r.error is not None]
    if not failed:
        return None
    failures = output.with_name(f"{output.stem}.failures.jsonl")
    write_jsonl(failures, failed)
    return failures
