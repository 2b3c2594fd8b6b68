"""Scores of several candidate captions per clip against the clip's references, with one metric:
what ranks a model's own candidates for preference tuning (`multi2cap.train.pairs`).

`cider_d` (default) scores every candidate with the IDF of the reference sets given, one
document per clip, so that a candidate's score does not depend on the other candidates; pass the
references of the whole corpus (clips without candidates too) to get the corpus IDF. The other
scorers are the `Evaluator`'s own implementations, whose per-item values do not depend on the
rest of the set: `sbert_sim`, `fense`, `clap_sim` (text-text) and `clap_sim_audio` (needs each
clip's audio). A scorer whose asset is missing raises `MetricUnavailableError` naming it: a
substitute is never used.

Captions are PTB-tokenized first, as `evaluate` does, so the values are `evaluate`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, get_args

from multi2cap.metrics.cider import cider_d_groups
from multi2cap.metrics.evaluator import Evaluator, MetricAssets
from multi2cap.metrics.tokenizer import ptb_tokenize

CandidateScorer = Literal["cider_d", "sbert_sim", "fense", "clap_sim", "clap_sim_audio"]
CANDIDATE_SCORERS: tuple[str, ...] = get_args(CandidateScorer)


def score_candidates(
    candidate_groups: Sequence[Sequence[str]],
    mult_references: Sequence[Sequence[str]],
    scorer: CandidateScorer = "cider_d",
    *,
    audio_paths: Sequence[str | os.PathLike[str]] | None = None,
    tokenizer_backend: str = "auto",
    **assets: Any,
) -> list[list[float]]:
    """`[clip][candidate]` scores of `candidate_groups[i]` against `mult_references[i]`.

    A clip may have no candidates (its references still count in CIDEr-D's IDF). `audio_paths`
    (one per clip) is needed by `clap_sim_audio`; `assets` are `MetricAssets` fields
    (`sbert_model`, `echecker`, `clap_model`, `device`, ...)."""
    if scorer not in CANDIDATE_SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}: choose from {', '.join(CANDIDATE_SCORERS)}")
    if len(candidate_groups) != len(mult_references):
        raise ValueError(
            f"{len(candidate_groups)} candidate groups but {len(mult_references)} reference lists"
        )
    if scorer == "clap_sim_audio" and (
        audio_paths is None or len(audio_paths) != len(candidate_groups)
    ):
        raise ValueError("scorer clap_sim_audio needs one audio path per clip (audio_paths)")
    java = MetricAssets(**assets).java
    if scorer == "cider_d":
        flat = [c for group in candidate_groups for c in group]
        flat += [r for refs in mult_references for r in refs]
        tokens, _ = ptb_tokenize(flat, java, tokenizer_backend)
        groups, position = [], 0
        for group in candidate_groups:
            groups.append(tokens[position : position + len(group)])
            position += len(group)
        references = []
        for refs in mult_references:
            references.append(tokens[position : position + len(refs)])
            position += len(refs)
        return cider_d_groups(groups, references)
    owner = [i for i, group in enumerate(candidate_groups) for _ in group]
    if not owner:
        return [[] for _ in candidate_groups]
    with Evaluator([scorer], tokenizer_backend=tokenizer_backend, **assets) as evaluator:
        result = evaluator.evaluate(
            [c for group in candidate_groups for c in group],
            [mult_references[i] for i in owner],
            [audio_paths[i] for i in owner] if audio_paths is not None else None,
        )
    (values,) = result.per_item.values()  # one metric, under its reported name
    out: list[list[float]] = [[] for _ in candidate_groups]
    for item, value in zip(owner, values, strict=True):
        out[item].append(float(value))
    return out
