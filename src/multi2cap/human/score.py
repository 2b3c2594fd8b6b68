"""The Human rows of the paper's Table 2 (and 3): raters' captions scored like a model's.

Each rater's captions of one stage (1: audio only, "Pre-training w/o visual"; 2: with the frame,
"w/ visual") are evaluated against the dataset's captions of the same items with
`multi2cap.metrics.Evaluator`, one corpus score per rater and stage; the Human row is the mean
over raters (the paper does not say how it pooled its 8 raters; the mean over raters is the
reading that keeps one rater's caption per item, as a model has). Items a rater has not captioned
are left out of that rater's score; a rater with fewer than two items is skipped (CIDEr-D's IDF
needs two). Values are raw (aac-metrics scale); the table prints x100 as the paper does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multi2cap.human.store import StudyStore, open_study_db

#: The paper's Table 2 Human rows (x100). "BL" is read as BLEU-1 (a BLEU-4 of 46 would be
#: out of reach for any captioner on VggCaps' 21-word captions).
PAPER_HUMAN_ROWS: dict[int, dict[str, float]] = {
    1: {"bleu_1": 46.1, "rouge_l": 29.6, "meteor": 13.5, "cider_d": 15.4, "spice": 7.5,
        "spider": 11.4, "spider_fl": 11.4, "sbert_sim": 48.6, "fense": 48.6},
    2: {"bleu_1": 49.2, "rouge_l": 32.9, "meteor": 14.8, "cider_d": 19.4, "spice": 7.5,
        "spider": 13.4, "spider_fl": 13.4, "sbert_sim": 48.9, "fense": 48.9},
}  # fmt: skip
STAGE_LABELS = {1: "audio only (w/o visual)", 2: "audio + frame (w/ visual)"}


@dataclass
class HumanScores:
    """`rows[stage][metric]` = mean over raters (raw); `per_rater[stage][rater][metric]`."""

    rows: dict[int, dict[str, float]]
    per_rater: dict[int, dict[str, dict[str, float]]]
    n_items: dict[int, dict[str, int]]
    unavailable: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scale": "raw (aac-metrics scale, not x100)",
            "human_rows": {STAGE_LABELS[s]: r for s, r in self.rows.items()},
            "per_rater": {STAGE_LABELS[s]: r for s, r in self.per_rater.items()},
            "n_items": {STAGE_LABELS[s]: r for s, r in self.n_items.items()},
            "unavailable": self.unavailable,
            "skipped": self.skipped,
        }


def caption_sets(study: str | Path) -> tuple[dict[int, dict[str, list[tuple[str, str]]]], dict]:
    """(`sets[stage][rater]` = [(item, caption)], `refs[item]` = the dataset's captions)."""
    conn = open_study_db(study, readonly=True)
    try:
        store = StudyStore(conn)
        if store.kind != "captions":
            raise ValueError(f"{study} is a {store.kind} study: `score` needs a captions study")
        refs = {i["item"]: json.loads(i["refs"]) for i in store.items() if not i["gold"]}
        sets: dict[int, dict[str, list[tuple[str, str]]]] = {1: defaultdict(list), 2: {}}
        sets[2] = defaultdict(list)
        for a in store.answer_rows():
            sets[a["stage"]][a["rater"]].append((a["item"], a["caption"]))
    finally:
        conn.close()
    return sets, refs


def score_study(study: str | Path, metrics: str = "offline", **evaluator: Any) -> HumanScores:
    """Each rater's captions per stage scored against the references, then averaged over raters."""
    from multi2cap.metrics import Evaluator

    sets, refs = caption_sets(study)
    result = HumanScores(rows={}, per_rater={1: {}, 2: {}}, n_items={1: {}, 2: {}})
    with Evaluator(metrics=metrics, **evaluator) as scorer:
        result.unavailable = dict(scorer.unavailable)
        for stage in (1, 2):
            for rater, pairs in sorted(sets[stage].items()):
                if len(pairs) < 2:
                    result.skipped.append(f"{rater} stage {stage}: {len(pairs)} caption(s)")
                    continue
                scores = scorer([c for _, c in pairs], [refs[item] for item, _ in pairs])
                result.per_rater[stage][rater] = dict(scores.corpus)
                result.n_items[stage][rater] = len(pairs)
                result.unavailable.update(scores.unavailable)
            raters = result.per_rater[stage]
            if raters:
                keys = [
                    k for k in next(iter(raters.values())) if all(k in r for r in raters.values())
                ]
                result.rows[stage] = {
                    k: sum(r[k] for r in raters.values()) / len(raters) for k in keys
                }
    return result
