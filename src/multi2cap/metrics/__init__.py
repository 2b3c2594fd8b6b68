"""AAC evaluation metrics, faithful to pycocoevalcap 1.2 / aac-metrics 0.6.0, offline-first.

`corpus, per_item = evaluate(candidates, mult_references, metrics="offline")` scores once (the
result also has `.corpus`, `.per_item`, `.unavailable`, `.settings`); `Evaluator` keeps the
METEOR JVM and the models warm across calls. `metric_availability()` and `asset_statuses()` tell
what can run on this machine (used by `multi2cap info`). Importing this package loads neither
torch nor transformers.
"""

from multi2cap.metrics.evaluator import (
    HIGHER_IS_BETTER,
    METRIC_KEYS,
    METRIC_SETS,
    PAPER_LABELS,
    EvalResult,
    Evaluator,
    MetricAssets,
    MetricWarning,
    evaluate,
    higher_is_better,
    metric_availability,
    resolve_metrics,
)
from multi2cap.metrics.resources import MetricUnavailableError, asset_statuses

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_KEYS",
    "METRIC_SETS",
    "PAPER_LABELS",
    "EvalResult",
    "Evaluator",
    "MetricAssets",
    "MetricUnavailableError",
    "MetricWarning",
    "asset_statuses",
    "evaluate",
    "higher_is_better",
    "metric_availability",
    "resolve_metrics",
]
