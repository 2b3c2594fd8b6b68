"""Checks of what `evaluate` is given: caption lists of the right shapes and types, and the
preprocessing option under either of its names. Errors say what was expected and what was
found, and where (item and position)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from multi2cap.io import type_name
from multi2cap.metrics.sets import MULTI_CANDIDATE

#: A caption-preprocessing function: sentences in, sentences out (aac-metrics' `preprocess`).
Preprocess = Callable[[list[str]], list[str]]


def resolve_preprocessing(
    tokenize: bool | Preprocess | None, preprocess: bool | Preprocess | None
) -> bool | Preprocess:
    """`tokenize` and aac-metrics' name for it, `preprocess`: either may be given, not both
    with different values; neither means True (PTB tokenization)."""
    if tokenize is not None and preprocess is not None and tokenize is not preprocess:
        raise ValueError(
            f"tokenize={tokenize!r} and preprocess={preprocess!r} disagree: they are one option "
            "(preprocess is aac-metrics' name for it); pass one of them"
        )
    chosen = preprocess if preprocess is not None else tokenize
    if chosen is None:
        return True
    if not isinstance(chosen, bool) and not callable(chosen):
        raise TypeError(f"tokenize/preprocess: expected bool or a function, found {chosen!r}")
    return chosen


def check_inputs(
    candidates: Sequence[str] | None, mult_references: Sequence[Sequence[str]]
) -> None:
    """Type and shape errors say what was expected and what was found."""
    if candidates is not None and (
        isinstance(candidates, str) or not isinstance(candidates, Sequence)
    ):
        raise TypeError(f"candidates: expected list[str], found {type_name(candidates)}")
    if isinstance(mult_references, str) or not isinstance(mult_references, Sequence):
        raise TypeError(
            f"mult_references: expected list[list[str]], found {type_name(mult_references)}"
        )
    if candidates is not None and len(candidates) != len(mult_references):
        raise ValueError(f"{len(candidates)} candidates but {len(mult_references)} reference lists")
    if not mult_references:
        raise ValueError("nothing to evaluate: no candidates")
    for i, cand in enumerate(candidates if candidates is not None else ()):
        if not isinstance(cand, str):
            raise TypeError(f"candidate {i}: expected str, found {type_name(cand)}")
    for i, refs in enumerate(mult_references):
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"item {i}: references: expected list[str], found {type_name(refs)}")
        if not refs:
            raise ValueError(f"item {i}: references must be a non-empty list of strings, found []")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise TypeError(f"item {i}: reference {j}: expected str, found {type_name(ref)}")


def check_mult_candidates(
    mult_candidates: Sequence[Sequence[str]] | None,
    mult_references: Sequence[Sequence[str]],
    metrics: Sequence[str],
) -> None:
    """`mult_candidates` is given exactly when a several-candidate metric is requested, with
    one non-empty list of strings per item, all of the same length (as aac-metrics requires)."""
    several = [k for k in metrics if k in MULTI_CANDIDATE]
    if mult_candidates is None:
        if several:
            raise ValueError(
                f"{', '.join(several)} scores several candidates per item: pass "
                "mult_candidates=[[caption, ...], ...] (one list per item)"
            )
        return
    if not several:
        raise ValueError(
            "mult_candidates given but no requested metric uses them: request "
            f"{', '.join(sorted(MULTI_CANDIDATE))}"
        )
    if isinstance(mult_candidates, str) or not isinstance(mult_candidates, Sequence):
        raise TypeError(
            f"mult_candidates: expected list[list[str]], found {type_name(mult_candidates)}"
        )
    if len(mult_candidates) != len(mult_references):
        raise ValueError(
            f"{len(mult_candidates)} candidate lists but {len(mult_references)} reference lists"
        )
    for i, cands in enumerate(mult_candidates):
        if isinstance(cands, str) or not isinstance(cands, Sequence):
            raise TypeError(
                f"mult_candidates item {i}: expected list[str], found {type_name(cands)}"
            )
        if not cands or len(cands) != len(mult_candidates[0]):
            raise ValueError(
                f"mult_candidates item {i} has {len(cands)} candidates, item 0 has "
                f"{len(mult_candidates[0])}: every item needs the same number (>= 1), as in "
                "aac-metrics"
            )
        for j, cand in enumerate(cands):
            if not isinstance(cand, str):
                raise TypeError(
                    f"mult_candidates item {i}: candidate {j}: expected str, found "
                    f"{type_name(cand)}"
                )
