"""What `evaluate` returns: `EvalResult` (corpus and per-item scores, unpacking as aac-metrics'
tuple does), and the warning for a requested metric left out of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from multi2cap.metrics.availability import group_by_reason

#: Why CIDEr-D (and SPIDEr, SPIDEr-FL, SPIDEr-max) get no value on one item.
ONE_ITEM_REASON = (
    "needs at least 2 items: CIDEr-D's IDF over one item is log(1) = 0, so it has no "
    "meaningful value (aac-metrics raises, pycocoevalcap reports 0.0)"
)


class MetricWarning(UserWarning):
    """A requested metric was left out of the result (its reason is in `unavailable`)."""


@dataclass
class EvalResult:
    """Raw scores: `corpus[key]`, `per_item[key][i]` (absent for the `vocab*` counts),
    `unavailable[key]` = why a requested metric was left out, `settings` = what produced them.

    Unpacks as aac-metrics' result does: `corpus, per_item = evaluate(...)` (also `result[0]`,
    `result[1]`). `unavailable_reasons[key]` lists each distinct reason; `unavailable_grouped()`
    names each reason once with every metric it stops. `details[key][i]` is what a metric says of
    item i beside its value (`clair_a`: the judge's score, reason, or why the item failed).
    """

    corpus: dict[str, float]
    per_item: dict[str, list[float]]
    unavailable: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    unavailable_reasons: dict[str, list[str]] = field(default_factory=dict)
    details: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter((self.corpus, self.per_item))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(
                f"EvalResult indices are 0 (corpus) and 1 (per_item), found {index!r}: use "
                "result.corpus[key] for a score"
            )
        return (self.corpus, self.per_item)[index]

    def unavailable_grouped(self) -> list[tuple[list[str], str]]:
        """[(metrics, reason)]: each reason once, with every requested metric it stops."""
        reasons = self.unavailable_reasons or {k: [v] for k, v in self.unavailable.items()}
        return group_by_reason(reasons)
