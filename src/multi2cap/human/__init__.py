"""The human-evaluation kit (paper section 3.3): the MOS study and the two-stage human captions,
and the comparisons of systems AAC papers run (MOS of systems' captions, A/B preference).

`create_study` samples the items and builds the study folder; `create_app` is the raters' web
app over the study's SQLite database; `export_study` writes the ratings, preferences and
captions in the formats `analyze dataset --ratings` and `evaluate` read; `study_summary` gives
MOS per system with paired tests or the preference shares; `score_study` gives the Human rows.
See docs/human.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "create_study", "export_study", "score_study", "study_summary"]

_EXPORTS = {
    "create_app": "multi2cap.human.app",
    "create_study": "multi2cap.human.study",
    "export_study": "multi2cap.human.export",
    "score_study": "multi2cap.human.score",
    "study_summary": "multi2cap.human.summary",
}


def __getattr__(name: str) -> Any:
    # Lazy: the CLI's `status` should not import FastAPI, nor `create` the metrics.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'multi2cap.human' has no attribute {name!r}")
