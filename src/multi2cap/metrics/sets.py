"""The metric registry: the keys users request, the sets they type, what each key outputs, its
label in the paper's tables, which way it points, and what it is computed from.

Set names follow aac-metrics 0.6.0 (`aac_metrics.functional.evaluate.METRICS_SETS`) where they
share a name, with one difference in form: aac-metrics lists `spider`, `spider_fl` and `fense`
and each of those also returns its parts (SPIDEr gives CIDEr-D and SPICE; SPIDEr-FL gives
CIDEr-D, SPICE, SPIDEr and FER; FENSE gives SBERT-sim and FER), so our sets name those parts
explicitly and the outputs are the same keys. See docs/metrics.md for each set.

A new metric is one entry in each table below (`METRIC_KEYS`, `HIGHER_IS_BETTER`, and
`DEPENDENCIES` / `OUTPUTS` / `MULTI_CANDIDATE` where they apply), its assets in
`availability.py` and its scorer in `evaluator.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

BLEU_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")
#: Every metric a user can request, in the order results list them.
METRIC_KEYS = (
    *BLEU_KEYS,
    "rouge_l",
    "meteor",
    "cider_d",
    "spice",
    "spider",
    "spider_fl",
    "spider_max",
    "fer",
    "sbert_sim",
    "fense",
    "bert_score",
    "vocab",
    # a transformers CLAP named by the user (no default): text-text, text-audio, and MACE
    "clap_sim",
    "clap_sim_audio",
    "mace",
    # CLAIR-A: an LLM judge through an OpenAI-compatible endpoint (paid requests: in no set)
    "clair_a",
)
#: The keys a metric writes into the results, when they are not just its own key (aac-metrics'
#: output names: `vocab.*`, `bert_score.*`, and SPIDEr-max's `*_max` of the best candidate).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "vocab": (
        "vocab",
        "vocab.mrefs_full",
        "vocab.ratio_full",
        "vocab.mrefs_avg",
        "vocab.ratio_avg",
    ),
    "spider_max": ("spider_max", "cider_d_max", "spice_max"),
    "bert_score": ("bert_score.f1", "bert_score.precision", "bert_score.recall"),
}
#: Every key a result can hold, in the order results list them.
OUTPUT_KEYS = tuple(o for k in METRIC_KEYS for o in OUTPUTS.get(k, (k,)))
#: Metrics that score several candidates per item (`mult_candidates`), never in a set.
MULTI_CANDIDATE = frozenset({"spider_max"})
#: Metrics that send paid requests to an LLM judge, never in a set: asked for by name.
JUDGE_METRICS = frozenset({"clair_a"})

#: The abbreviations the paper's tables use for each metric key (Table 2, Table 9); keys the
#: paper does not report use aac-metrics' names.
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
#: Whether a larger value is better, for every output key and for training's `val_loss`: the
#: one place that says which way a metric points (training's best checkpoint, the ablation
#: tables' wins). FER is a fluency *error* rate: lower is better. Vocabulary sizes and ratios are
#: reported the way the AAC literature does, as diversity figures where more is better (the
#: references' vocabulary is the same for every system).
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
    **dict.fromkeys(OUTPUTS["vocab"], True),
    **dict.fromkeys(OUTPUTS["spider_max"], True),
    **dict.fromkeys(OUTPUTS["bert_score"], True),
    "clap_sim": True,
    "clap_sim_audio": True,
    "mace": True,
    "clair_a": True,
    "val_loss": False,
}


def higher_is_better(metric: str) -> bool:
    """The direction of `metric` from `HIGHER_IS_BETTER`. A qualified key such as
    `g_hat/cider_d`, `audio_only.cider_d` or `audio_only.vocab.ratio_full` takes the direction of
    its longest known suffix.

    Raises KeyError naming the known keys for a metric whose direction is not recorded, so a
    caller never guesses from the name.
    """
    parts = metric.replace("/", ".").split(".")
    for start in range(len(parts)):
        key = ".".join(parts[start:])
        if key in HIGHER_IS_BETTER:
            return HIGHER_IS_BETTER[key]
    raise KeyError(
        f"no recorded direction for metric {metric!r} (known: {', '.join(HIGHER_IS_BETTER)}); "
        "say which way it points explicitly"
    )


#: What each metric is computed from (the metric itself, or the metrics it combines).
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "spider": ("cider_d", "spice"),
    "spider_fl": ("cider_d", "spice", "fer"),
    "fense": ("sbert_sim", "fer"),
    "clap_sim": ("clap",),
    "clap_sim_audio": ("clap",),
    "mace": ("clap", "fer"),
    "clair_a": ("judge",),
}
#: Metrics whose value needs at least two items (CIDEr-D's IDF is 0 on one item).
NEEDS_TWO_ITEMS = frozenset(("cider_d", "spider", "spider_fl", "spider_max"))

_SPIDER = ("cider_d", "spice", "spider")
METRIC_SETS: dict[str, tuple[str, ...]] = {
    # Everything that runs with the pycocoevalcap wheel and Java alone.
    "offline": (*BLEU_KEYS, "rouge_l", "meteor", "cider_d", "vocab"),
    # The columns of the paper's Table 2.
    "paper": (*BLEU_KEYS, "rouge_l", "meteor", *_SPIDER, "spider_fl", "sbert_sim", "fense"),
    # aac-metrics' sets: "default" (= "dcase2020", the legacy COCO metrics and SPIDEr),
    # "dcase2023" (METEOR and SPIDEr-FL, the 2023 ranking metric), "dcase2024" (+ FENSE, vocab).
    "default": (*BLEU_KEYS, "meteor", "rouge_l", *_SPIDER),
    "dcase2020": (*BLEU_KEYS, "meteor", "rouge_l", *_SPIDER),
    "dcase2023": ("meteor", *_SPIDER, "spider_fl", "fer"),
    "dcase2024": ("meteor", *_SPIDER, "spider_fl", "fer", "sbert_sim", "fense", "vocab"),
    # BLEU-1..4 (aac-metrics' `bleu` is BLEU-4 alone; users typing `bleu` mean all four).
    "bleu": BLEU_KEYS,
    # Every metric of one candidate per item that runs without paying a judge (SPIDEr-max needs
    # several candidates, clair_a sends paid requests: request them by name).
    "all": tuple(k for k in METRIC_KEYS if k not in MULTI_CANDIDATE | JUDGE_METRICS),
}


def resolve_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """Metric keys, in canonical order, from a set name (`METRIC_SETS`), a comma-separated
    string of keys and set names, or a sequence of them."""
    if isinstance(metrics, str):
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
