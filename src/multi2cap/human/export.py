"""Exports of a study: JSON lines for programs, CSV for people, both from one snapshot.

**Two forms of the same rows.** Every `.jsonl` file holds the exact values (what `multi2cap
evaluate` and `multi2cap analyze dataset --ratings` read); every `.csv` file is for opening in a
spreadsheet, and is neutralised against formula injection (OWASP, "CSV Injection"): raters type
captions, and ids come from manifests and prediction files, so a text cell that starts with
`=`, `+`, `-`, `@`, a tab or a carriage return, or with `'` followed by one of those, gets one
`'` in front (`spreadsheet_safe`); remove the first `'` of such a cell to get the text back.
Numbers are never changed.

MOS and system-MOS studies:
- `ratings.jsonl` / `ratings.csv`: `rater,item,score` (what `analyze dataset --ratings` reads for
  Figure 4) plus `gold` (1 = an attention item; `analysis.mos.read_ratings` leaves those rows
  out), `gold_failed`, `position` (in the rater's order), `shown_at`, `answered_at` (UTC, ISO
  8601) and `response_s` (seconds from showing the item to the answer); system-MOS adds
  `system` and `caption` (the caption rated) after `item`.
- `raters.csv`: per rater, answers, gold items answered and failed, mean score, median response.

A/B study:
- `preferences.jsonl` / `preferences.csv`: `rater,item,gold,gold_failed,first,second,choice,
  preferred,caption_first,caption_second,position,shown_at,answered_at,response_s`: `first` and
  `second` name the systems whose captions the rater saw as A and B (for a gold item `own-clip`
  and `other-clip`), `choice` is what the rater answered (`A`, `B` or `tie`), `preferred` the
  answer un-randomised (a system's name or `tie`).
- `raters.csv`: per rater, answers, gold items answered and failed, preferences per system.

Captions study (the Human rows of Tables 2 and 3):
- `captions_audio.csv` and `captions_audio_visual.csv`: `id,caption,rater,response_s`, one row
  per rater and item (stage 1: audio only; stage 2: audio with the frame), for people.
- `raters/<rater>/captions_audio.jsonl`, `.../captions_audio_visual.jsonl`: `{"id", "caption"}`,
  one rater's captions, the predictions format of `multi2cap evaluate`.
- `references.jsonl` (`{"id", "captions"}`, the references format of `multi2cap evaluate`) and
  `references.csv` (`id,caption_1..caption_N`): the dataset's captions of the sampled clips.

Every study: `study.json` (the study's settings: seed, sample, manifest and systems' hashes) and,
for the rating studies, `summary.json` (`human/summary.py`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multi2cap.human.store import StudyStore, gold_failed, open_study_db
from multi2cap.human.summary import ab_sides, preferred_label, study_summary
from multi2cap.io import atomic_write_text, make_folder, write_jsonl

RATINGS_COLUMNS = (
    "rater",
    "item",
    "score",
    "gold",
    "gold_failed",
    "position",
    "shown_at",
    "answered_at",
    "response_s",
)
PREFERENCE_COLUMNS = (
    "rater",
    "item",
    "gold",
    "gold_failed",
    "first",
    "second",
    "choice",
    "preferred",
    "caption_first",
    "caption_second",
    "position",
    "shown_at",
    "answered_at",
    "response_s",
)
STAGE_FILES = {1: "captions_audio", 2: "captions_audio_visual"}
#: A cell a spreadsheet would read as a formula (OWASP's list), behind any number of `'`.
_FORMULA = re.compile(r"^'*[=+\-@\t\r]")


def spreadsheet_safe(cell: object) -> object:
    """`cell` as a spreadsheet shows it as text: a string matching `'*[=+-@\\t\\r]...` gets one
    `'` in front (reversible: drop the first `'` of a cell matching `'+[=+-@\\t\\r]`); other
    strings and every number are returned unchanged."""
    if isinstance(cell, str) and _FORMULA.match(cell):
        return "'" + cell
    return cell


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """A CSV for people: every text cell through `spreadsheet_safe`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def _both(
    target: Path, stem: str, columns: Sequence[str], records: Sequence[Mapping[str, Any]]
) -> list[Path]:
    """`stem.jsonl` (exact) and `stem.csv` (for people) of the same records."""
    write_jsonl(target / f"{stem}.jsonl", records)
    rows = [[record[c] for c in columns] for record in records]
    return [target / f"{stem}.jsonl", _csv(target / f"{stem}.csv", columns, rows)]


def export_study(study: str | Path, out: str | Path) -> list[Path]:
    """Write the study's exports into `out` (created); returns the files written."""
    conn = open_study_db(study, readonly=True)
    try:
        store = StudyStore(conn)
        conn.execute("BEGIN")  # one consistent snapshot while the server keeps writing
        answers = [dict(row) for row in store.answer_rows()]
        items = [dict(row) for row in store.items()]
        conn.execute("COMMIT")
    finally:
        conn.close()
    target = Path(out)
    make_folder(target)
    files = [target / "study.json"]
    atomic_write_text(files[0], json.dumps(store.settings, indent=2, ensure_ascii=False) + "\n")
    if store.kind == "captions":
        return files + _export_captions(target, answers, items)
    if store.kind == "ab":
        files += _export_ab(target, answers, store.settings["systems"])
    else:
        files += _export_mos(target, answers, with_system=store.kind == "system-mos")
    summary = study_summary(store.kind, store.settings, answers)
    atomic_write_text(target / "summary.json", json.dumps(summary, indent=2) + "\n")
    return [*files, target / "summary.json"]


def _timing(a: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "position": a["position"],
        "shown_at": _iso(a["shown_at"]),
        "answered_at": _iso(a["answered_at"]),
        "response_s": round(a["answered_at"] - a["shown_at"], 3),
    }


def _export_mos(target: Path, answers: Sequence[dict], with_system: bool) -> list[Path]:
    records = []
    for a in answers:
        failed = int(bool(a["gold"]) and gold_failed("mos", a["score"], None, 0))
        named = {"system": a["system"], "caption": a["item_caption"]} if with_system else {}
        records.append(
            {
                "rater": a["rater"],
                "item": a["item"],
                **named,
                "score": a["score"],
                "gold": a["gold"],
                "gold_failed": failed,
                **_timing(a),
            }
        )
    summary = []
    for rater, entries in _by_rater(records).items():
        real = [e["score"] for e in entries if not e["gold"]]
        summary.append(
            [
                rater,
                len(entries),
                sum(e["gold"] for e in entries),
                sum(e["gold_failed"] for e in entries),
                f"{statistics.fmean(real):.3f}" if real else "",
                f"{statistics.median(e['response_s'] for e in entries):.3f}",
            ]
        )
    header = ("rater", "answers", "gold_answered", "gold_failed", "mean_score", "median_response_s")
    columns = RATINGS_COLUMNS[:2] + ("system", "caption") * with_system + RATINGS_COLUMNS[2:]
    return [
        *_both(target, "ratings", columns, records),
        _csv(target / "raters.csv", header, summary),
    ]


def _export_ab(target: Path, answers: Sequence[dict], systems: Sequence[str]) -> list[Path]:
    records = []
    for a in answers:
        first, second = ab_sides(a, systems)
        shown = [a["item_caption"], a["caption_b"]]
        shown = shown[::-1] if a["swapped"] else shown
        failed = int(bool(a["gold"]) and gold_failed("ab", None, a["choice"], a["swapped"]))
        records.append(
            {
                "rater": a["rater"],
                "item": a["item"],
                "gold": a["gold"],
                "gold_failed": failed,
                "first": first,
                "second": second,
                "choice": a["choice"],
                "preferred": preferred_label(a, systems),
                "caption_first": shown[0],
                "caption_second": shown[1],
                **_timing(a),
            }
        )
    summary = []
    for rater, entries in _by_rater(records).items():
        real = [e["preferred"] for e in entries if not e["gold"]]
        summary.append(
            [
                rater,
                len(entries),
                sum(e["gold"] for e in entries),
                sum(e["gold_failed"] for e in entries),
                *(real.count(label) for label in (*systems, "tie")),
                f"{statistics.median(e['response_s'] for e in entries):.3f}",
            ]
        )
    header = (
        "rater",
        "answers",
        "gold_answered",
        "gold_failed",
        *(f"prefers_{s}" for s in systems),
        "ties",
        "median_response_s",
    )
    return [
        *_both(target, "preferences", PREFERENCE_COLUMNS, records),
        _csv(target / "raters.csv", header, summary),
    ]


def _by_rater(records: Sequence[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        grouped[record["rater"]].append(record)
    return dict(sorted(grouped.items()))


def _export_captions(target: Path, answers: Sequence[dict], items: Sequence[dict]) -> list[Path]:
    files = []
    by_rater: dict[tuple[str, int], list[dict[str, str]]] = defaultdict(list)
    for stage, stem in STAGE_FILES.items():
        rows = []
        for a in answers:
            if a["stage"] == stage:
                rows.append(
                    [a["item"], a["caption"], a["rater"], f"{a['answered_at'] - a['shown_at']:.3f}"]
                )
                by_rater[(a["rater"], stage)].append({"id": a["item"], "caption": a["caption"]})
        files.append(_csv(target / f"{stem}.csv", ("id", "caption", "rater", "response_s"), rows))
    for (rater, stage), predictions in sorted(by_rater.items()):
        path = target / "raters" / rater / f"{STAGE_FILES[stage]}.jsonl"
        write_jsonl(path, predictions)
        files.append(path)
    refs = [(i["item"], json.loads(i["refs"])) for i in items if not i["gold"]]
    write_jsonl(target / "references.jsonl", [{"id": item, "captions": r} for item, r in refs])
    width = max((len(r) for _, r in refs), default=1)
    files.append(target / "references.jsonl")
    files.append(
        _csv(
            target / "references.csv",
            ["id", *(f"caption_{k}" for k in range(1, width + 1))],
            [[item, *r, *[""] * (width - len(r))] for item, r in refs],
        )
    )
    return files
