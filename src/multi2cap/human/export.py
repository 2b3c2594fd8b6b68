"""Exports of a study, in the formats the rest of the toolkit reads.

MOS study:
- `ratings.csv`: `rater,item,score` (what `multi2cap analyze dataset --ratings` reads for Figure 4)
  plus `gold` (1 = an attention item; `analysis.mos.read_ratings` leaves those rows out of the
  MOS), `gold_failed`, `position` (in the rater's order), `shown_at`, `answered_at` (UTC, ISO
  8601) and `response_s` (seconds from showing the item to the answer).
- `raters.csv`: per rater, answers, gold items answered and failed, mean score, median response.

Captions study (the Human rows of Tables 2 and 3):
- `captions_audio.csv` and `captions_audio_visual.csv`: `id,caption,rater,response_s`, one row
  per rater and item (stage 1: audio only; stage 2: audio with the frame).
- `raters/<rater>/captions_audio.csv`, `.../captions_audio_visual.csv`: `id,caption`, one rater's
  captions, the predictions format of `multi2cap evaluate`.
- `references.csv`: `id,caption_1..caption_N`, the dataset's captions (wide references format).

Both: `study.json`, the study's settings (seed, sample, manifest hash) for the record.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from multi2cap.human.store import GOLD_MAX_SCORE, StudyStore, open_study_db
from multi2cap.io import atomic_write_text, make_folder

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
STAGE_FILES = {1: "captions_audio.csv", 2: "captions_audio_visual.csv"}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def export_study(study: str | Path, out: str | Path) -> list[Path]:
    """Write the study's exports into `out` (created); returns the files written."""
    conn = open_study_db(study, readonly=True)
    try:
        store = StudyStore(conn)
        conn.execute("BEGIN")  # one consistent snapshot while the server keeps writing
        answers = store.answer_rows()
        items = store.items()
        conn.execute("COMMIT")
    finally:
        conn.close()
    target = Path(out)
    make_folder(target)
    files = [target / "study.json"]
    atomic_write_text(files[0], json.dumps(store.settings, indent=2, ensure_ascii=False) + "\n")
    if store.kind == "mos":
        files += _export_mos(target, answers)
    else:
        files += _export_captions(target, answers, items)
    return files


def _export_mos(target: Path, answers: Sequence[dict]) -> list[Path]:
    rows = []
    per_rater: dict[str, list[dict]] = defaultdict(list)
    for a in answers:
        failed = int(bool(a["gold"]) and a["score"] > GOLD_MAX_SCORE)
        response = a["answered_at"] - a["shown_at"]
        rows.append(
            [
                a["rater"],
                a["item"],
                a["score"],
                a["gold"],
                failed,
                a["position"],
                _iso(a["shown_at"]),
                _iso(a["answered_at"]),
                f"{response:.3f}",
            ]
        )
        per_rater[a["rater"]].append(
            {"gold": a["gold"], "failed": failed, "score": a["score"], "response": response}
        )
    summary = []
    for rater, entries in sorted(per_rater.items()):
        real = [e["score"] for e in entries if not e["gold"]]
        summary.append(
            [
                rater,
                len(entries),
                sum(e["gold"] for e in entries),
                sum(e["failed"] for e in entries),
                f"{statistics.fmean(real):.3f}" if real else "",
                f"{statistics.median(e['response'] for e in entries):.3f}",
            ]
        )
    return [
        _csv(target / "ratings.csv", RATINGS_COLUMNS, rows),
        _csv(
            target / "raters.csv",
            ("rater", "answers", "gold_answered", "gold_failed", "mean_score", "median_response_s"),
            summary,
        ),
    ]


def _export_captions(target: Path, answers: Sequence[dict], items: Sequence[dict]) -> list[Path]:
    files = []
    by_rater: dict[tuple[str, int], list[tuple[str, str]]] = defaultdict(list)
    for stage, name in STAGE_FILES.items():
        rows = []
        for a in answers:
            if a["stage"] == stage:
                rows.append(
                    [a["item"], a["caption"], a["rater"], f"{a['answered_at'] - a['shown_at']:.3f}"]
                )
                by_rater[(a["rater"], stage)].append((a["item"], a["caption"]))
        files.append(_csv(target / name, ("id", "caption", "rater", "response_s"), rows))
    for (rater, stage), rows in sorted(by_rater.items()):
        files.append(_csv(target / "raters" / rater / STAGE_FILES[stage], ("id", "caption"), rows))
    refs = [(i["item"], json.loads(i["refs"])) for i in items if not i["gold"]]
    width = max((len(r) for _, r in refs), default=1)
    files.append(
        _csv(
            target / "references.csv",
            ["id", *(f"caption_{k}" for k in range(1, width + 1))],
            [[item, *r, *[""] * (width - len(r))] for item, r in refs],
        )
    )
    return files
