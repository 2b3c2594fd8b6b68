"""Which requested metrics can run here, and why the others cannot, said once per missing asset.

Cheap by design: it checks files and packages, loads no model and starts no JVM, so
`multi2cap info` and `Evaluator(...)` can call it before any work.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multi2cap.assets import AssetNotFoundError, java_executable
from multi2cap.metrics.clair_a import ClairAConfig, judge_ready
from multi2cap.metrics.clap import resolve_clap_model
from multi2cap.metrics.resources import (
    coco_jars,
    resolve_bert_score_model,
    resolve_echecker,
    resolve_sbert_model,
    spice_lib_dir,
)
from multi2cap.metrics.sets import DEPENDENCIES, METRIC_KEYS

#: BERTScore's layer for roberta-large in the BERTScore paper and its package (`bert_score`'s
#: model table); aac-metrics takes the last layer (24) instead, see docs/metrics.md.
BERT_SCORE_LAYER = 17


@dataclass(frozen=True)
class MetricAssets:
    """External assets and model settings (each asset `None` = environment variable, then the
    assets folder, then default; see resources.py).

    `device` runs the SBERT, echecker and BERTScore models; `allow_network` lets Hugging Face
    fetch a model that is not cached (never needed when the assets are local folders).
    `bert_score_layer` is the hidden layer BERTScore reads (`hidden_states[layer]`, -1 = last);
    `bert_score_idf` weights tokens by their IDF over the references (off, as in aac-metrics).
    `clap_model`: the CLAP of `clap_sim`, `clap_sim_audio`, `mace`; `mace_method`: `combined`,
    `text`, `audio` (see `multi2cap.metrics.clap`). `clair_a`: the judge of the `clair_a` metric
    (`multi2cap.metrics.clair_a.ClairAConfig`).
    """

    java: str | None = None
    spice_lib: str | None = None
    sbert_model: str | None = None
    echecker: str | None = None
    echecker_bert: str | None = None
    bert_score_model: str | None = None
    bert_score_layer: int = BERT_SCORE_LAYER
    bert_score_idf: bool = False
    clap_model: str | None = None
    mace_method: str = "combined"
    clair_a: ClairAConfig | None = None
    device: str = "cpu"
    allow_network: bool = False


#: The assets each metric (or part of a combined metric) needs, by name of `asset_problems`.
METRIC_ASSETS: dict[str, tuple[str, ...]] = {
    "meteor": ("java", "coco_jars"),
    "spice": ("java", "coco_jars", "spice_lib"),
    "spider_max": ("java", "coco_jars", "spice_lib"),
    "fer": ("echecker",),
    "sbert_sim": ("sbert",),
    "bert_score": ("bert_score",),
    "clap": ("clap",),
    "judge": ("judge",),
}


def asset_problems(assets: MetricAssets) -> dict[str, str | None]:
    """Asset name -> None when usable, else the reason with how to provide it."""

    def check(locate: Callable[[], Any]) -> str | None:
        try:
            locate()
        except AssetNotFoundError as err:
            return str(err)
        return None

    def java() -> None:
        if assets.java is not None:
            if not Path(assets.java).is_file():
                raise AssetNotFoundError(f"java executable {assets.java} not found")
        else:
            java_executable()

    def package(*names: str) -> Callable[[], None]:
        def locate() -> None:
            missing = [n for n in names if importlib.util.find_spec(n) is None]
            if missing:
                raise AssetNotFoundError(f"Python package(s) {', '.join(missing)} not installed")

        return locate

    return {
        "java": check(java),
        "coco_jars": check(coco_jars),
        "spice_lib": check(lambda: spice_lib_dir(assets.spice_lib)),
        "sbert": check(package("torch", "sentence_transformers"))
        or check(lambda: resolve_sbert_model(assets.sbert_model)),
        "echecker": check(package("torch", "transformers"))
        or check(lambda: resolve_echecker(assets.echecker)),
        "bert_score": check(package("torch", "transformers"))
        or check(lambda: resolve_bert_score_model(assets.bert_score_model)),
        "clap": check(package("torch", "transformers"))
        or check(lambda: resolve_clap_model(assets.clap_model, allow_network=assets.allow_network)),
        "judge": check(lambda: judge_ready(assets.clair_a)),
    }


def needs_asset(key: str, asset: str) -> bool:
    """Whether metric `key` (through any of its parts) needs `asset`."""
    return any(asset in METRIC_ASSETS.get(part, ()) for part in DEPENDENCIES.get(key, (key,)))


def missing_reasons(keys: Sequence[str], problems: dict[str, str | None]) -> dict[str, list[str]]:
    """Metric key -> the distinct reasons it cannot run (empty list: it can)."""
    out: dict[str, list[str]] = {}
    for key in keys:
        reasons: list[str] = []
        for asset, reason in problems.items():
            if reason is not None and needs_asset(key, asset) and reason not in reasons:
                reasons.append(reason)
        out[key] = reasons
    return out


def group_by_reason(reasons: dict[str, Sequence[str]]) -> list[tuple[list[str], str]]:
    """[(metrics, reason)], one entry per distinct reason in first-seen order: what to print so
    that each missing asset is explained once, naming every metric that needs it."""
    grouped: dict[str, list[str]] = {}
    for key, key_reasons in reasons.items():
        for reason in key_reasons:
            grouped.setdefault(reason, []).append(key)
    return [(keys, reason) for reason, keys in grouped.items()]


def unavailable_message(keys: Sequence[str], problems: dict[str, str | None]) -> str:
    """One line per missing asset, naming the requested metrics that need it and saying once how
    to provide it (a metric needing two missing assets appears under both)."""
    reasons = {k: v for k, v in missing_reasons(keys, problems).items() if v}
    lines = [f"- {', '.join(needing)}: {reason}" for needing, reason in group_by_reason(reasons)]
    return f"{len(reasons)} requested metric(s) cannot run here:\n" + "\n".join(lines)


def metric_availability(**assets: Any) -> dict[str, str | None]:
    """Metric key -> None if it can run here, else why not and how to provide what is missing.
    Cheap: checks files and packages, loads no model and starts no JVM."""
    reasons = missing_reasons(METRIC_KEYS, asset_problems(MetricAssets(**assets)))
    return {key: "; ".join(why) if why else None for key, why in reasons.items()}
