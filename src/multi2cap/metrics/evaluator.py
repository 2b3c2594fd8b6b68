"""`evaluate` and the reusable `Evaluator`: every metric of the paper behind one call.

Semantics follow aac-metrics 0.6.0 / pycocoevalcap 1.2 (`evaluate(..., preprocess=True)`): all
captions are PTB-tokenized once, and every metric, the model-based ones included, sees the
tokenized text. Values are raw (BLEU in [0, 1], CIDEr-D in [0, 10], ...), never x100.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from multi2cap.assets import AssetNotFoundError, java_executable
from multi2cap.io import type_name
from multi2cap.metrics import combined
from multi2cap.metrics._ngrams import build_ngram_table
from multi2cap.metrics.bleu import bleu
from multi2cap.metrics.cider import cider_d
from multi2cap.metrics.clair_a import JUDGE_METRICS, ClairAConfig, ClairAJudge, judge_ready
from multi2cap.metrics.clap import CLAP_KEYS, CLAP_MODEL_ENV, ClapMetrics, resolve_clap_model
from multi2cap.metrics.meteor import MeteorScorer
from multi2cap.metrics.resources import (
    ECHECKER_BASE_SHA256,
    ECHECKER_BERT_ENV,
    PAPER_SBERT_MODEL,
    SBERT_MODEL_ENV,
    MetricUnavailableError,
    coco_jars,
    resolve_echecker,
    resolve_sbert_model,
    spice_lib_dir,
)
from multi2cap.metrics.rouge import rouge_l
from multi2cap.metrics.spice import spice
from multi2cap.metrics.tokenizer import ptb_tokenize

log = logging.getLogger(__name__)

BLEU_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")
METRIC_KEYS = (
    *BLEU_KEYS,
    "rouge_l",
    "meteor",
    "cider_d",
    "spice",
    "spider",
    "spider_fl",
    "fer",
    "sbert_sim",
    "fense",
    "vocab",
    "clap_sim",
    "clap_sim_audio",
    "mace",
    "clair_a",
)
#: The abbreviations the paper's tables use for each metric key (Table 2, Table 9).
PAPER_LABELS = {
    "bleu_1": "B-1",
    "bleu_2": "B-2",
    "bleu_3": "B-3",
    "bleu_4": "B-4",
    "rouge_l": "RG-L",
    "meteor": "ME",
    "cider_d": "CD",
    "spice": "SP",
    "spider": "SD",
    "spider_fl": "SD-F",
    "sbert_sim": "SB",
    "fense": "FS",
    "fer": "FER",
    "vocab": "vocab",
}
#: Whether a larger value is better, for every metric key and for training's `val_loss`: the one
#: place that says which way a metric points (training's best checkpoint, the ablation tables'
#: wins). FER is a fluency *error* rate: lower is better. The vocabulary size is reported the way
#: the AAC literature does, as a diversity figure where more is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    **dict.fromkeys(BLEU_KEYS, True),
    "rouge_l": True,
    "meteor": True,
    "cider_d": True,
    "spice": True,
    "spider": True,
    "spider_fl": True,
    "fer": False,
    "sbert_sim": True,
    "fense": True,
    "vocab": True,
    "clap_sim": True,
    "clap_sim_audio": True,
    "mace": True,
    "clair_a": True,
    "val_loss": False,
}


def higher_is_better(metric: str) -> bool:
    """The direction of `metric` from `HIGHER_IS_BETTER`. A qualified key such as
    `g_hat/cider_d` or `audio_only.cider_d` takes the direction of its last part.

    Raises KeyError naming the known keys for a metric whose direction is not recorded, so a
    caller never guesses from the name.
    """
    for key in (metric, metric.replace(".", "/").rsplit("/", 1)[-1]):
        if key in HIGHER_IS_BETTER:
            return HIGHER_IS_BETTER[key]
    raise KeyError(
        f"no recorded direction for metric {metric!r} (known: {', '.join(HIGHER_IS_BETTER)}); "
        "say which way it points explicitly"
    )


METRIC_SETS: dict[str, tuple[str, ...]] = {
    # Everything that runs with the pycocoevalcap wheel and Java alone.
    "offline": (*BLEU_KEYS, "rouge_l", "meteor", "cider_d", "vocab"),
    # The columns of the paper's Table 2.
    "paper": (
        *BLEU_KEYS,
        "rouge_l",
        "meteor",
        "cider_d",
        "spice",
        "spider",
        "spider_fl",
        "sbert_sim",
        "fense",
    ),
    # Every metric that runs here without paying a judge (clair_a is asked for by name).
    "all": tuple(k for k in METRIC_KEYS if k not in JUDGE_METRICS),
}
#: What each metric is computed from (the metric itself, or the metrics it combines).
_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "spider": ("cider_d", "spice"),
    "spider_fl": ("cider_d", "spice", "fer"),
    "fense": ("sbert_sim", "fer"),
    "clap_sim": ("clap",),
    "clap_sim_audio": ("clap",),
    "mace": ("clap", "fer"),
    "clair_a": ("judge",),
}
#: Metrics whose value needs at least two items (CIDEr-D's IDF is 0 on one item).
_NEEDS_TWO_ITEMS = frozenset(("cider_d", "spider", "spider_fl"))


def resolve_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """Metric keys, in canonical order, from a set name ("offline", "paper", "all"), a
    comma-separated string, or a sequence of keys."""
    if isinstance(metrics, str):
        if metrics in METRIC_SETS:
            return METRIC_SETS[metrics]
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    requested = set()
    for name in metrics:
        if name in METRIC_SETS:
            requested.update(METRIC_SETS[name])
        elif name in METRIC_KEYS:
            requested.add(name)
        else:
            raise ValueError(
                f"unknown metric {name!r}: choose from {', '.join(METRIC_KEYS)} "
                f"or a set ({', '.join(METRIC_SETS)})"
            )
    if not requested:
        raise ValueError("no metric requested")
    return tuple(k for k in METRIC_KEYS if k in requested)


@dataclass(frozen=True)
class MetricAssets:
    """External assets (each `None` = environment variable, then default; see resources.py).

    `device` runs the SBERT, echecker and CLAP models; `allow_network` lets Hugging Face fetch a
    model that is not cached (never needed when the assets are local folders). `clap_model`:
    the CLAP of `clap_sim`, `clap_sim_audio`, `mace`; `mace_method`: `combined`, `text`, `audio`
    (see `multi2cap.metrics.clap`). `clair_a`: the judge of the `clair_a` metric
    (`multi2cap.metrics.clair_a.ClairAConfig`).
    """

    java: str | None = None
    spice_lib: str | None = None
    sbert_model: str | None = None
    echecker: str | None = None
    echecker_bert: str | None = None
    device: str = "cpu"
    allow_network: bool = False
    clap_model: str | None = None
    mace_method: str = "combined"
    clair_a: ClairAConfig | None = None


@dataclass
class EvalResult:
    """Raw scores: `corpus[key]`, `per_item[key][i]` (absent for `vocab`, a corpus count),
    `unavailable[key]` = why a requested metric was skipped, `settings` = what produced them,
    `details[key][i]` = what a metric says of item i beside its value (`clair_a`: the judge's
    score, reason, or why the item failed)."""

    corpus: dict[str, float]
    per_item: dict[str, list[float]]
    unavailable: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _asset_problems(assets: MetricAssets) -> dict[str, str | None]:
    """None when the asset is usable, else the reason with how to provide it."""

    def check(locate: Any) -> str | None:
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

    def package(*names: str) -> Any:
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
        "clap": check(package("torch", "transformers"))
        or check(lambda: resolve_clap_model(assets.clap_model, allow_network=assets.allow_network)),
        "judge": check(lambda: judge_ready(assets.clair_a)),
    }


_METRIC_ASSETS: dict[str, tuple[str, ...]] = {
    "meteor": ("java", "coco_jars"),
    "spice": ("java", "coco_jars", "spice_lib"),
    "fer": ("echecker",),
    "sbert_sim": ("sbert",),
    "clap": ("clap",),
    "judge": ("judge",),
}


def _availability(keys: Sequence[str], problems: dict[str, str | None]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in keys:
        reasons = []
        for part in _DEPENDENCIES.get(key, (key,)):
            for asset in _METRIC_ASSETS.get(part, ()):
                reason = problems[asset]
                if reason is not None and reason not in reasons:
                    reasons.append(reason)
        out[key] = "; ".join(reasons) if reasons else None
    return out


def unavailable_message(keys: Sequence[str], problems: dict[str, str | None]) -> str:
    """One line per missing asset, naming the requested metrics that need it and saying once how
    to provide it (a metric needing two missing assets appears under both)."""
    lines = []
    for asset, reason in problems.items():
        if reason is None:
            continue
        needing = [
            key
            for key in keys
            if any(asset in _METRIC_ASSETS.get(part, ()) for part in _DEPENDENCIES.get(key, (key,)))
        ]
        if needing:
            lines.append(f"- {', '.join(needing)}: {reason}")
    count = len({key for key, why in _availability(keys, problems).items() if why is not None})
    return f"{count} requested metric(s) cannot run here:\n" + "\n".join(lines)


def metric_availability(**assets: Any) -> dict[str, str | None]:
    """Metric key -> None if it can run here, else why not and how to provide what is missing.
    Cheap: checks files and packages, loads no model and starts no JVM."""
    return _availability(METRIC_KEYS, _asset_problems(MetricAssets(**assets)))


def _model_label(path: str) -> str:
    """A short name for a model folder or hub id, used in the key of a non-paper SBERT model."""
    parts = Path(path).parts
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
        if part not in ("model", "models", "snapshots") and not (
            len(part) == 40 and all(c in "0123456789abcdef" for c in part)
        ):
            return part
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(np.array(values, dtype=float)))


class Evaluator:
    """Scores caption sets repeatedly with the same metrics and warm back-ends.

    Construction checks the assets of the requested metrics (raising `MetricUnavailableError`
    unless `skip_unavailable`) and starts the METEOR JVM in the background; models load on first
    use. Call it (or `evaluate`) once per caption set, and `close()` it or use it in a `with`.
    """

    def __init__(
        self,
        metrics: str | Sequence[str] = "offline",
        tokenize: bool = True,
        skip_unavailable: bool = False,
        tokenizer_backend: str = "auto",
        **assets: Any,
    ) -> None:
        self.metrics = resolve_metrics(metrics)
        self.tokenize = tokenize
        self.skip_unavailable = skip_unavailable
        self.tokenizer_backend = tokenizer_backend
        self.assets = MetricAssets(**assets)
        problems = _asset_problems(self.assets)
        availability = _availability(self.metrics, problems)
        self.unavailable = {k: v for k, v in availability.items() if v is not None}
        if self.unavailable and not skip_unavailable:
            raise MetricUnavailableError(unavailable_message(self.metrics, problems))
        self._needed = {
            part
            for key in self.metrics
            if key not in self.unavailable
            for part in _DEPENDENCIES.get(key, (key,))
        }
        self._clair_a: ClairAJudge | None = None
        if "judge" in self._needed and self.assets.clair_a is not None:
            self._clair_a = _clair_a_judge(self.assets.clair_a, problems)
            self._needed.update(self._clair_a.tie_break_parts)
        self.settings: dict[str, Any] = {"metrics": list(self.metrics), "tokenize": tokenize}
        self.sbert_key = "sbert_sim"
        self.fense_key = "fense"
        if "sbert_sim" in self._needed:
            self._sbert_path = resolve_sbert_model(self.assets.sbert_model)
            if PAPER_SBERT_MODEL.split("/")[-1] not in self._sbert_path:
                # Never report another model's similarity under the paper's metric name.
                label = _model_label(self._sbert_path)
                self.sbert_key = f"sbert_sim[{label}]"
                self.fense_key = f"fense[{label}]"
            self.settings["sbert_model"] = self._sbert_path
        self._clap: ClapMetrics | None = None
        if "clap" in self._needed:
            self._clap = ClapMetrics(
                self.assets.clap_model,
                self.assets.mace_method,
                device=self.assets.device,
                allow_network=self.assets.allow_network,
            )
            self.settings.update(self._clap.settings)
        self._meteor = MeteorScorer(java=self.assets.java) if "meteor" in self._needed else None
        self._sbert: Any = None
        self._echecker: Any = None

    def _sbert_scorer(self) -> Any:
        if self._sbert is None:
            from multi2cap.metrics.neural import SbertScorer

            self._sbert = SbertScorer(
                self._sbert_path,
                device=self.assets.device,
                allow_network=self.assets.allow_network,
            )
        return self._sbert

    def _error_detector(self) -> Any:
        if self._echecker is None:
            from multi2cap.metrics.neural import ErrorDetector

            checkpoint = resolve_echecker(self.assets.echecker)
            digest = _sha256(checkpoint)
            self.settings["echecker"] = str(checkpoint)
            self.settings["echecker_sha256"] = digest
            self.settings["echecker_is_paper"] = digest == ECHECKER_BASE_SHA256
            self._echecker = ErrorDetector(
                checkpoint,
                bert=self.assets.echecker_bert or os.environ.get(ECHECKER_BERT_ENV),
                device=self.assets.device,
                allow_network=self.assets.allow_network,
            )
        return self._echecker

    def _load_models(self, needed: set[str], unavailable: dict[str, str]) -> None:
        """Load the SBERT / echecker models the first time they are needed.

        A model whose files exist but cannot be loaded offline (e.g. the echecker's base BERT is
        not cached) makes its metrics unavailable: an error, or with `skip_unavailable` a reason.
        """
        loaders = (
            ("fer", self._error_detector, ("fer", "fense", "spider_fl", "mace"), ECHECKER_BERT_ENV),
            ("sbert_sim", self._sbert_scorer, ("sbert_sim", "fense"), SBERT_MODEL_ENV),
            ("clap", lambda: self._clap and self._clap.scorer(), CLAP_KEYS, CLAP_MODEL_ENV),
        )
        for part, load, dependents, env in loaders:
            if part not in needed:
                continue
            try:
                load()
            except OSError as err:
                reason = (
                    f"{part} model could not be loaded from local files ({err}); "
                    f"point {env} at a local copy or allow the network"
                )
                if not self.skip_unavailable:
                    raise MetricUnavailableError(reason) from err
                needed.discard(part)
                unavailable.update({k: reason for k in dependents if k in self.metrics})

    def __call__(
        self,
        candidates: Sequence[str],
        mult_references: Sequence[Sequence[str]],
        audio_paths: Sequence[str | os.PathLike[str]] | None = None,
    ) -> EvalResult:
        return self.evaluate(candidates, mult_references, audio_paths)

    def evaluate(
        self,
        candidates: Sequence[str],
        mult_references: Sequence[Sequence[str]],
        audio_paths: Sequence[str | os.PathLike[str]] | None = None,
    ) -> EvalResult:
        """Score `candidates[i]` against `mult_references[i]` (one or more references each);
        `audio_paths[i]` is item i's audio, for `clap_sim_audio` and `mace`."""
        _check_inputs(candidates, mult_references)
        unavailable = dict(self.unavailable)
        needed = set(self._needed)
        if self._clap is not None:
            keys = [k for k in self.metrics if k not in unavailable]
            short = self._clap.missing_audio(keys, audio_paths, len(candidates))
            if short and not self.skip_unavailable:
                raise MetricUnavailableError("; ".join(f"{k}: {r}" for k, r in short.items()))
            unavailable.update(short)
        if len(candidates) < 2:
            short = [k for k in self.metrics if k in _NEEDS_TWO_ITEMS and k not in unavailable]
            if short:
                reason = "needs at least 2 items (CIDEr-D's IDF over one item is always 0)"
                if not self.skip_unavailable:
                    raise MetricUnavailableError(f"{', '.join(short)}: {reason}")
                unavailable.update(dict.fromkeys(short, reason))
                needed.discard("cider_d")
                if "spice" not in self.metrics:
                    needed.discard("spice")
                if not {"fer", "fense"} & set(self.metrics):
                    needed.discard("fer")
        self._load_models(needed, unavailable)
        cands, mrefs = list(candidates), [list(refs) for refs in mult_references]
        tokenizer = None
        if self.tokenize:
            flat = cands + [r for refs in mrefs for r in refs]
            tokens, backend = ptb_tokenize(flat, self.assets.java, self.tokenizer_backend)
            tokenizer = "ptb-corenlp-3.4.1" if backend == "java" else "ptb-python"
            cands = tokens[: len(cands)]
            pos = len(cands)
            for refs in mrefs:
                refs[:] = tokens[pos : pos + len(refs)]
                pos += len(refs)
        per_item: dict[str, list[float]] = {}
        corpus: dict[str, float] = {}
        self._score_lexical(cands, mrefs, needed, corpus, per_item)
        if "meteor" in needed and self._meteor is not None:
            corpus["meteor"], per_item["meteor"] = self._meteor.score(cands, mrefs)
        if "spice" in needed:
            corpus["spice"], per_item["spice"] = spice(
                cands, mrefs, self.assets.spice_lib, self.assets.java
            )
        if "fer" in needed:
            corpus["fer"], per_item["fer"] = self._error_detector().fer(cands)
        if "sbert_sim" in needed:
            corpus["sbert_sim"], per_item["sbert_sim"] = self._sbert_scorer().score(cands, mrefs)
        if "cider_d" in per_item and "spice" in per_item:
            per_item["spider"] = combined.spider(per_item["cider_d"], per_item["spice"])
            corpus["spider"] = _mean(per_item["spider"])
        if "spider" in per_item and "fer" in per_item:
            per_item["spider_fl"] = combined.fluency_penalized(per_item["spider"], per_item["fer"])
            corpus["spider_fl"] = _mean(per_item["spider_fl"])
        if "sbert_sim" in per_item and "fer" in per_item:
            per_item["fense"] = combined.fluency_penalized(per_item["sbert_sim"], per_item["fer"])
            corpus["fense"] = _mean(per_item["fense"])
        if "clap" in needed and self._clap is not None:
            keys = [k for k in self.metrics if k not in unavailable]
            fer = per_item.get("fer")
            for key, values in self._clap.score(keys, cands, mrefs, audio_paths, fer).items():
                corpus[key], per_item[key] = _mean(values), values
        details: dict[str, list[dict[str, Any]]] = {}
        settings = dict(self.settings)  # after the lazy model loads, which record theirs
        if "judge" in needed and self._clair_a is not None:
            judged = self._clair_a.score(candidates, mult_references, per_item)
            settings["clair_a"], details["clair_a"] = judged.settings, judged.details
            if judged.corpus is None:
                unavailable["clair_a"] = f"no item was judged: {judged.details[0]['error']}"
            else:
                corpus["clair_a"], per_item["clair_a"] = judged.corpus, judged.per_item
        if tokenizer is not None:
            settings["tokenizer"] = tokenizer
        return self._select(corpus, per_item, unavailable, settings, details)

    def _score_lexical(
        self,
        cands: list[str],
        mrefs: list[list[str]],
        needed: set[str],
        corpus: dict[str, float],
        per_item: dict[str, list[float]],
    ) -> None:
        """BLEU, ROUGE-L, CIDEr-D and vocab: pure Python on the tokenized captions."""
        if needed & {*BLEU_KEYS, "cider_d"}:
            table = build_ngram_table(cands, mrefs)
            if needed & set(BLEU_KEYS):
                scores, items = bleu(table)
                for k, key in enumerate(BLEU_KEYS):
                    corpus[key], per_item[key] = scores[k], items[k]
            if "cider_d" in needed:
                corpus["cider_d"], per_item["cider_d"] = cider_d(table)
        if "rouge_l" in needed:
            corpus["rouge_l"], per_item["rouge_l"] = rouge_l(cands, mrefs)
        if "vocab" in needed:
            corpus["vocab"] = float(len({w for c in cands for w in c.split()}))

    def _select(
        self,
        corpus: dict[str, float],
        per_item: dict[str, list[float]],
        unavailable: dict[str, str],
        settings: dict[str, Any],
        details: dict[str, list[dict[str, Any]]],
    ) -> EvalResult:
        """Keep the requested metrics, under their reported keys."""
        rename = {"sbert_sim": self.sbert_key, "fense": self.fense_key}
        rename.update(self._clap.keys if self._clap is not None else {})
        out_corpus = {}
        out_items = {}
        for key in self.metrics:
            if key in unavailable or key not in corpus:
                continue
            name = rename.get(key, key)
            out_corpus[name] = corpus[key]
            if key in per_item:
                out_items[name] = per_item[key]
        return EvalResult(out_corpus, out_items, unavailable, settings, details)

    def close(self) -> None:
        """Stop the METEOR JVM and drop the models (idempotent)."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None
        self._sbert = None
        self._echecker = None
        if self._clap is not None:
            self._clap.close()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _clair_a_judge(config: ClairAConfig, problems: dict[str, str | None]) -> ClairAJudge:
    """The judge, with its tie-break left out (and why) when its models are missing here."""
    key = config.tie_break
    missing = None if key == "none" else _availability([key], problems)[key]
    return ClairAJudge(config, tie_break_missing=missing)


def _check_inputs(candidates: Sequence[str], mult_references: Sequence[Sequence[str]]) -> None:
    """Type and shape errors say what was expected and what was found."""
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise TypeError(f"candidates: expected list[str], found {type_name(candidates)}")
    if isinstance(mult_references, str) or not isinstance(mult_references, Sequence):
        raise TypeError(
            f"mult_references: expected list[list[str]], found {type_name(mult_references)}"
        )
    if len(candidates) != len(mult_references):
        raise ValueError(f"{len(candidates)} candidates but {len(mult_references)} reference lists")
    if not candidates:
        raise ValueError("nothing to evaluate: no candidates")
    for i, (cand, refs) in enumerate(zip(candidates, mult_references, strict=True)):
        if not isinstance(cand, str):
            raise TypeError(f"candidate {i}: expected str, found {type_name(cand)}")
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"item {i}: references: expected list[str], found {type_name(refs)}")
        if not refs:
            raise ValueError(f"item {i}: references must be a non-empty list of strings, found []")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise TypeError(f"item {i}: reference {j}: expected str, found {type_name(ref)}")


def evaluate(
    candidates: Sequence[str],
    mult_references: Sequence[Sequence[str]],
    metrics: str | Sequence[str] = "offline",
    tokenize: bool = True,
    skip_unavailable: bool = False,
    audio_paths: Sequence[str | os.PathLike[str]] | None = None,
    **assets: Any,
) -> EvalResult:
    """Score a caption set once (see `Evaluator` to keep the JVM and models warm across calls).

    `metrics`: "offline" (BLEU-1..4, ROUGE-L, METEOR, CIDEr-D, vocab), "paper" (Table 2), "all",
    or keys. `assets`: fields of `MetricAssets` (java, spice_lib, sbert_model, echecker, ...).
    """
    with Evaluator(metrics, tokenize=tokenize, skip_unavailable=skip_unavailable, **assets) as ev:
        return ev.evaluate(candidates, mult_references, audio_paths)
