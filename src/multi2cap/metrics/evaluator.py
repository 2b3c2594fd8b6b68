"""`evaluate` and the reusable `Evaluator`: every metric of the paper behind one call.

Semantics follow aac-metrics 0.6.0 / pycocoevalcap 1.2 (`evaluate(..., preprocess=True)`): all
captions are PTB-tokenized once, and every metric, the model-based ones included, sees the
tokenized text. Values are raw (BLEU in [0, 1], CIDEr-D in [0, 10], ...), never x100. The result
unpacks like aac-metrics' `(corpus_scores, sentence_scores)` tuple and keeps its attributes.
The metric registry (keys, sets, labels, directions) is in sets.py; what can run, in
availability.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from multi2cap.metrics import combined
from multi2cap.metrics._ngrams import build_ngram_table
from multi2cap.metrics.availability import (
    MetricAssets,
    asset_problems,
    metric_availability,
    missing_reasons,
    unavailable_message,
)
from multi2cap.metrics.bleu import bleu
from multi2cap.metrics.cider import cider_d
from multi2cap.metrics.clair_a import ClairAConfig, ClairAJudge
from multi2cap.metrics.clap import CLAP_KEYS, CLAP_MODEL_ENV, ClapMetrics
from multi2cap.metrics.inputs import (
    Preprocess,
    check_inputs,
    check_mult_candidates,
    resolve_preprocessing,
)
from multi2cap.metrics.meteor import MeteorScorer
from multi2cap.metrics.resources import (
    BERT_SCORE_MODEL,
    BERT_SCORE_MODEL_ENV,
    ECHECKER_BASE_SHA256,
    ECHECKER_BERT_ENV,
    PAPER_SBERT_MODEL,
    SBERT_MODEL_ENV,
    MetricUnavailableError,
    resolve_bert_score_model,
    resolve_echecker,
    resolve_sbert_model,
)
from multi2cap.metrics.result import ONE_ITEM_REASON, EvalResult, MetricWarning
from multi2cap.metrics.rouge import rouge_l
from multi2cap.metrics.sets import (
    BLEU_KEYS,
    DEPENDENCIES,
    HIGHER_IS_BETTER,
    METRIC_KEYS,
    METRIC_SETS,
    MULTI_CANDIDATE,
    NEEDS_TWO_ITEMS,
    OUTPUTS,
    PAPER_LABELS,
    higher_is_better,
    resolve_metrics,
)
from multi2cap.metrics.spice import spice
from multi2cap.metrics.tokenizer import ptb_tokenize
from multi2cap.metrics.vocab import vocab_stats

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_KEYS",
    "METRIC_SETS",
    "PAPER_LABELS",
    "EvalResult",
    "Evaluator",
    "MetricAssets",
    "MetricWarning",
    "evaluate",
    "higher_is_better",
    "metric_availability",
    "resolve_metrics",
]

log = logging.getLogger(__name__)


def _model_label(path: str) -> str:
    """A short name for a model folder or hub id, used in the key of a non-default model."""
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

    `tokenize` (or aac-metrics' `preprocess`): True = PTB tokenization, False = none, or a
    function applied to the candidates and to the flat references. One item: the metrics that
    need two (CIDEr-D, SPIDEr, SPIDEr-FL, SPIDEr-max) are left out with a `MetricWarning` and
    their reason in `unavailable`; `strict=True` raises `MetricUnavailableError` instead.
    """

    def __init__(
        self,
        metrics: str | Sequence[str] = "offline",
        tokenize: bool | Preprocess | None = None,
        skip_unavailable: bool = False,
        tokenizer_backend: str = "auto",
        *,
        preprocess: bool | Preprocess | None = None,
        strict: bool = False,
        **assets: Any,
    ) -> None:
        self.metrics = resolve_metrics(metrics)
        self.tokenize = resolve_preprocessing(tokenize, preprocess)
        self.skip_unavailable = skip_unavailable
        self.strict = strict
        self.tokenizer_backend = tokenizer_backend
        self.assets = MetricAssets(**assets)
        problems = asset_problems(self.assets)
        reasons = missing_reasons(self.metrics, problems)
        self.unavailable_reasons = {k: v for k, v in reasons.items() if v}
        if self.unavailable_reasons and not skip_unavailable:
            raise MetricUnavailableError(unavailable_message(self.metrics, problems))
        self._needed = {
            part
            for key in self.metrics
            if key not in self.unavailable_reasons
            for part in DEPENDENCIES.get(key, (key,))
        }
        self._clair_a: ClairAJudge | None = None
        if "judge" in self._needed and self.assets.clair_a is not None:
            self._clair_a = _clair_a_judge(self.assets.clair_a, problems)
            self._needed.update(self._clair_a.tie_break_parts)
        tokenize_setting = self.tokenize if isinstance(self.tokenize, bool) else "custom"
        self.settings: dict[str, Any] = {
            "metrics": list(self.metrics),
            "tokenize": tokenize_setting,
        }
        self.sbert_key = "sbert_sim"
        self.fense_key = "fense"
        self.bert_score_prefix = "bert_score"
        if "sbert_sim" in self._needed:
            self._sbert_path = resolve_sbert_model(self.assets.sbert_model)
            if PAPER_SBERT_MODEL.split("/")[-1] not in self._sbert_path:
                # Never report another model's similarity under the paper's metric name.
                label = _model_label(self._sbert_path)
                self.sbert_key = f"sbert_sim[{label}]"
                self.fense_key = f"fense[{label}]"
            self.settings["sbert_model"] = self._sbert_path
        if "bert_score" in self._needed:
            self._bert_score_path = resolve_bert_score_model(self.assets.bert_score_model)
            label = _model_label(self._bert_score_path)
            if label.split("/")[-1] != BERT_SCORE_MODEL:
                self.bert_score_prefix = f"bert_score[{label}]"
            self.settings["bert_score_model"] = self._bert_score_path
            self.settings["bert_score_layer"] = self.assets.bert_score_layer
            self.settings["bert_score_idf"] = self.assets.bert_score_idf
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
        self._bert: Any = None

    @property
    def unavailable(self) -> dict[str, str]:
        """Metric -> why it cannot run here (its reasons joined), known at construction."""
        return {k: "; ".join(v) for k, v in self.unavailable_reasons.items()}

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
                bert=self.assets.echecker_bert,
                device=self.assets.device,
                allow_network=self.assets.allow_network,
            )
        return self._echecker

    def _bert_scorer(self) -> Any:
        if self._bert is None:
            from multi2cap.metrics.bert_score import BertScorer

            self._bert = BertScorer(
                self._bert_score_path,
                layer=self.assets.bert_score_layer,
                idf=self.assets.bert_score_idf,
                device=self.assets.device,
                allow_network=self.assets.allow_network,
            )
        return self._bert

    def _load_models(self, needed: set[str], reasons: dict[str, list[str]]) -> None:
        """Load the SBERT / echecker / BERTScore models the first time they are needed.

        A model whose files exist but cannot be loaded offline (e.g. the echecker's base BERT is
        not cached) makes its metrics unavailable: an error, or with `skip_unavailable` a reason.
        """
        loaders = (
            ("fer", self._error_detector, ("fer", "fense", "spider_fl", "mace"), ECHECKER_BERT_ENV),
            ("sbert_sim", self._sbert_scorer, ("sbert_sim", "fense"), SBERT_MODEL_ENV),
            ("bert_score", self._bert_scorer, ("bert_score",), BERT_SCORE_MODEL_ENV),
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
                for key in dependents:
                    if key in self.metrics:
                        reasons.setdefault(key, []).append(reason)

    def __call__(
        self,
        candidates: Sequence[str] | None,
        mult_references: Sequence[Sequence[str]],
        mult_candidates: Sequence[Sequence[str]] | None = None,
        audio_paths: Sequence[str | os.PathLike[str]] | None = None,
    ) -> EvalResult:
        return self.evaluate(candidates, mult_references, mult_candidates, audio_paths)

    def _one_item(self, needed: set[str], reasons: dict[str, list[str]]) -> None:
        """One item: leave out what needs two (a warning), or raise under `strict`."""
        short = [k for k in self.metrics if k in NEEDS_TWO_ITEMS and k not in reasons]
        if not short:
            return
        if self.strict:
            raise MetricUnavailableError(f"{', '.join(short)}: {ONE_ITEM_REASON}")
        warnings.warn(
            f"{', '.join(short)} left out on 1 item: {ONE_ITEM_REASON}; the other metrics are "
            "scored (strict=True raises instead)",
            MetricWarning,
            stacklevel=4,
        )
        for key in short:
            reasons[key] = [ONE_ITEM_REASON]
        needed.difference_update({"cider_d", "spider_max"})
        if "spice" not in self.metrics:
            needed.discard("spice")
        if not {"fer", "fense"} & set(self.metrics):
            needed.discard("fer")

    def evaluate(
        self,
        candidates: Sequence[str] | None,
        mult_references: Sequence[Sequence[str]],
        mult_candidates: Sequence[Sequence[str]] | None = None,
        audio_paths: Sequence[str | os.PathLike[str]] | None = None,
    ) -> EvalResult:
        """Score `candidates[i]` against `mult_references[i]` (one or more references each).

        `mult_candidates[i]` (the same number of candidates for every item, as aac-metrics
        requires) feeds SPIDEr-max; `candidates` may be None when only SPIDEr-max is requested.
        `audio_paths[i]` is item i's audio, for `clap_sim_audio` and `mace`.
        """
        single = [k for k in self.metrics if k not in MULTI_CANDIDATE]
        if candidates is None and single:
            raise ValueError(f"candidates: expected list[str] for {', '.join(single)}, found None")
        check_inputs(candidates, mult_references)
        check_mult_candidates(mult_candidates, mult_references, self.metrics)
        reasons = {k: list(v) for k, v in self.unavailable_reasons.items()}
        needed = set(self._needed)
        if self._clap is not None:
            keys = [k for k in self.metrics if k not in reasons]
            short = self._clap.missing_audio(keys, audio_paths, len(mult_references))
            if short and not self.skip_unavailable:
                raise MetricUnavailableError("; ".join(f"{k}: {r}" for k, r in short.items()))
            for key, reason in short.items():
                reasons.setdefault(key, []).append(reason)
        if len(mult_references) < 2:
            self._one_item(needed, reasons)
        self._load_models(needed, reasons)
        cands, mrefs, mcands, tokenizer = self._preprocess(
            candidates, mult_references, mult_candidates
        )
        per_item: dict[str, list[float]] = {}
        corpus: dict[str, float] = {}
        if cands is not None:
            self._score_lexical(cands, mrefs, needed, corpus, per_item)
            if "vocab" in needed:
                corpus.update(vocab_stats(cands, mrefs))
            if "meteor" in needed and self._meteor is not None:
                corpus["meteor"], per_item["meteor"] = self._meteor.score(cands, mrefs)
        self._score_spice(cands, mrefs, mcands, needed, corpus, per_item)
        if cands is not None:
            self._score_models(cands, mrefs, needed, corpus, per_item)
        self._combine(corpus, per_item)
        if cands is not None and "clap" in needed and self._clap is not None:
            keys = [k for k in self.metrics if k not in reasons]
            fer = per_item.get("fer")
            for key, values in self._clap.score(keys, cands, mrefs, audio_paths, fer).items():
                corpus[key], per_item[key] = _mean(values), values
        details: dict[str, list[dict[str, Any]]] = {}
        settings = dict(self.settings)  # after the lazy model loads, which record theirs
        if "judge" in needed and self._clair_a is not None and candidates is not None:
            judged = self._clair_a.score(candidates, mult_references, per_item)
            settings["clair_a"], details["clair_a"] = judged.settings, judged.details
            if judged.corpus is None:
                reasons.setdefault("clair_a", []).append(
                    f"no item was judged: {judged.details[0]['error']}"
                )
            else:
                corpus["clair_a"], per_item["clair_a"] = judged.corpus, judged.per_item
        if tokenizer is not None:
            settings["tokenizer"] = tokenizer
        return self._select(corpus, per_item, reasons, settings, details)

    def _preprocess(
        self,
        candidates: Sequence[str] | None,
        mult_references: Sequence[Sequence[str]],
        mult_candidates: Sequence[Sequence[str]] | None,
    ) -> tuple[list[str] | None, list[list[str]], list[list[str]] | None, str | None]:
        """(candidates, references, several candidates, tokenizer name) after tokenization, all
        sentences in one tokenizer call."""
        groups = [list(refs) for refs in mult_references]
        if mult_candidates is not None:
            groups += [list(cands) for cands in mult_candidates]
        flat = ([*candidates] if candidates is not None else []) + [s for g in groups for s in g]
        tokenizer = None
        if self.tokenize is True:
            flat, backend = ptb_tokenize(flat, self.assets.java, self.tokenizer_backend)
            tokenizer = "ptb-corenlp-3.4.1" if backend == "java" else "ptb-python"
        elif callable(self.tokenize):
            n = len(candidates) if candidates is not None else 0
            head = list(self.tokenize(flat[:n])) if n else []
            tail = list(self.tokenize(flat[n:]))
            if len(head) != n or len(tail) != len(flat) - n:
                raise ValueError(
                    f"preprocess returned {len(head)} + {len(tail)} sentences for {n} + "
                    f"{len(flat) - n}: it must return one sentence per input sentence"
                )
            flat, tokenizer = head + tail, "custom"
        pos = len(candidates) if candidates is not None else 0
        cands = flat[:pos] if candidates is not None else None
        for g in groups:
            g[:] = flat[pos : pos + len(g)]
            pos += len(g)
        mrefs = groups[: len(mult_references)]
        mcands = groups[len(mult_references) :] if mult_candidates is not None else None
        return cands, mrefs, mcands, tokenizer

    def _score_lexical(
        self,
        cands: list[str],
        mrefs: list[list[str]],
        needed: set[str],
        corpus: dict[str, float],
        per_item: dict[str, list[float]],
    ) -> None:
        """BLEU, ROUGE-L and CIDEr-D: pure Python on the tokenized captions."""
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

    def _score_spice(
        self,
        cands: list[str] | None,
        mrefs: list[list[str]],
        mcands: list[list[str]] | None,
        needed: set[str],
        corpus: dict[str, float],
        per_item: dict[str, list[float]],
    ) -> None:
        """SPICE of the candidates and SPIDEr-max of the several candidates, in one JVM run."""
        pairs_c: list[str] = []
        pairs_r: list[list[str]] = []
        if "spice" in needed and cands is not None:
            pairs_c, pairs_r = list(cands), list(mrefs)
        n_single = len(pairs_c)
        if "spider_max" in needed and mcands is not None:
            pairs_c += [c for group in mcands for c in group]
            pairs_r += [refs for group, refs in zip(mcands, mrefs, strict=True) for _ in group]
        if not pairs_c:
            return
        _, scores = spice(pairs_c, pairs_r, self.assets.spice_lib, self.assets.java)
        if n_single:
            per_item["spice"] = scores[:n_single]
            corpus["spice"] = _mean(per_item["spice"])
        if "spider_max" in needed and mcands is not None:
            k = len(mcands[0])
            spice_k = np.array(scores[n_single:], dtype=float).reshape(len(mcands), k).T
            cider_k = np.array(
                [cider_d(build_ngram_table([g[j] for g in mcands], mrefs))[1] for j in range(k)]
            )
            spider_k = (cider_k + spice_k) / 2  # (candidates per item, items)
            best = np.argmax(spider_k, axis=0)  # the first best candidate, as torch.argmax
            items = np.arange(len(mcands))
            for key, values in (
                ("spider_max", spider_k),
                ("cider_d_max", cider_k),
                ("spice_max", spice_k),
            ):
                per_item[key] = values[best, items].tolist()
                corpus[key] = _mean(per_item[key])

    def _score_models(
        self,
        cands: list[str],
        mrefs: list[list[str]],
        needed: set[str],
        corpus: dict[str, float],
        per_item: dict[str, list[float]],
    ) -> None:
        """FER, SBERT-sim and BERTScore with the models loaded by `_load_models`."""
        if "fer" in needed:
            corpus["fer"], per_item["fer"] = self._error_detector().fer(cands)
        if "sbert_sim" in needed:
            corpus["sbert_sim"], per_item["sbert_sim"] = self._sbert_scorer().score(cands, mrefs)
        if "bert_score" in needed:
            for key, (value, values) in self._bert_scorer().score(cands, mrefs).items():
                corpus[key], per_item[key] = value, values

    @staticmethod
    def _combine(corpus: dict[str, float], per_item: dict[str, list[float]]) -> None:
        """SPIDEr, SPIDEr-FL and FENSE from their parts' per-item scores."""
        if "cider_d" in per_item and "spice" in per_item:
            per_item["spider"] = combined.spider(per_item["cider_d"], per_item["spice"])
            corpus["spider"] = _mean(per_item["spider"])
        if "spider" in per_item and "fer" in per_item:
            per_item["spider_fl"] = combined.fluency_penalized(per_item["spider"], per_item["fer"])
            corpus["spider_fl"] = _mean(per_item["spider_fl"])
        if "sbert_sim" in per_item and "fer" in per_item:
            per_item["fense"] = combined.fluency_penalized(per_item["sbert_sim"], per_item["fer"])
            corpus["fense"] = _mean(per_item["fense"])

    def _select(
        self,
        corpus: dict[str, float],
        per_item: dict[str, list[float]],
        reasons: dict[str, list[str]],
        settings: dict[str, Any],
        details: dict[str, list[dict[str, Any]]],
    ) -> EvalResult:
        """Keep the requested metrics' outputs, under their reported keys."""
        rename = {"sbert_sim": self.sbert_key, "fense": self.fense_key}
        rename.update(self._clap.keys if self._clap is not None else {})
        prefix = self.bert_score_prefix
        rename |= {f"bert_score.{p}": f"{prefix}.{p}" for p in ("f1", "precision", "recall")}
        out_corpus: dict[str, float] = {}
        out_items: dict[str, list[float]] = {}
        for key in self.metrics:
            if key in reasons:
                continue
            for output in OUTPUTS.get(key, (key,)):
                if output not in corpus:
                    continue
                name = rename.get(output, output)
                out_corpus[name] = corpus[output]
                if output in per_item:
                    out_items[name] = per_item[output]
        kept = {k: v for k, v in reasons.items() if k in self.metrics}
        unavailable = {k: "; ".join(v) for k, v in kept.items()}
        return EvalResult(out_corpus, out_items, unavailable, settings, kept, details)

    def close(self) -> None:
        """Stop the METEOR JVM and drop the models (idempotent)."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None
        self._sbert = None
        self._echecker = None
        self._bert = None
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
    missing = None if key == "none" else "; ".join(missing_reasons([key], problems)[key]) or None
    return ClairAJudge(config, tie_break_missing=missing)


def evaluate(
    candidates: Sequence[str] | None,
    mult_references: Sequence[Sequence[str]],
    metrics: str | Sequence[str] = "offline",
    tokenize: bool | Preprocess | None = None,
    skip_unavailable: bool = False,
    *,
    preprocess: bool | Preprocess | None = None,
    strict: bool = False,
    mult_candidates: Sequence[Sequence[str]] | None = None,
    audio_paths: Sequence[str | os.PathLike[str]] | None = None,
    **assets: Any,
) -> EvalResult:
    """Score a caption set once (see `Evaluator` to keep the JVM and models warm across calls).

    `metrics`: a set ("offline": BLEU-1..4, ROUGE-L, METEOR, CIDEr-D, vocab; "paper": Table 2;
    aac-metrics' "default", "dcase2020", "dcase2023", "dcase2024"; "bleu"; "all"), keys, or both.
    `assets`: fields of `MetricAssets` (java, spice_lib, sbert_model, echecker, ...).
    `corpus, per_item = evaluate(...)` unpacks as aac-metrics' result does.
    """
    with Evaluator(
        metrics,
        tokenize=tokenize,
        skip_unavailable=skip_unavailable,
        preprocess=preprocess,
        strict=strict,
        **assets,
    ) as ev:
        return ev.evaluate(candidates, mult_references, mult_candidates, audio_paths)
