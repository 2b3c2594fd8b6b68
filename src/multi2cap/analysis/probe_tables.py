"""Tables of the probe and ablation analyses, written as CSV (raw values) and markdown (printed).

Every analysis writes `<stem>.csv` (machine-readable, full precision) and `<stem>.md` (the table a
reader compares with the paper, values rounded as the paper prints them, with a caption saying
what was measured and on what), both through `multi2cap.io` so an interrupted run never leaves a
torn file.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from multi2cap.io import atomic_write_text

Row = Mapping[str, Any]


def format_cell(value: Any, digits: int = 1) -> str:
    """Markdown text of one value: floats rounded to `digits`, None / NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    digits: int = 1,
) -> str:
    """A GitHub markdown table; numbers are right-aligned."""
    header = "| " + " | ".join(columns) + " |"
    align = "|" + "|".join("---:" if i else ":---" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(format_cell(v, digits) for v in row) + " |" for row in rows]
    return "\n".join([header, align, *body]) + "\n"


def csv_text(columns: Sequence[str], rows: Sequence[Row]) -> str:
    """CSV of `rows` (dicts) in `columns` order; None is an empty cell, floats keep full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buffer.getvalue()


def write_table(
    out_dir: Path,
    stem: str,
    columns: Sequence[str],
    rows: Sequence[Row],
    markdown: str,
) -> list[Path]:
    """Write `stem.csv` from `rows` and `stem.md` from the already formatted `markdown`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{stem}.csv"
    md_path = out_dir / f"{stem}.md"
    atomic_write_text(csv_path, csv_text(columns, rows))
    atomic_write_text(md_path, markdown)
    return [csv_path, md_path]
