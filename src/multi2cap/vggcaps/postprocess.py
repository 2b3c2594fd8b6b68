"""Post-processing of LLM outputs into one clean caption, or a rejection with its reason.

Two kinds of rule, each a small named function so it can be tested and reported on its own:
- *cleaners* `str -> str` rewrite harmless noise (wrappers, markdown, whitespace, repeats);
- *checks* `(text, category) -> reason | None` reject outputs the pipeline must re-ask for
  (empty, refusals, leaked instructions or inputs, absurd length).

`postprocess` runs the cleaners in `CLEANERS` order, then the checks; the first failing check
names the rejection.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MIN_WORDS = 4
MAX_WORDS = 80

_QUOTES = "\"'“”‘’«»`"
_PREFIX = re.compile(
    r"^\s*(?:>{1,3}\s*)?(?:\*\*|__)?\s*(?:here(?:'s| is)\s+(?:a|the|my|your)\s+)?"
    r"(?:(?:final|revised|refined|raw|audio|new|improved)\s+)?"
    r"caption\s*(?:\d+\s*)?(?:\*\*|__)?\s*[:\-–—]\s*(?:\*\*|__)?",
    re.IGNORECASE,
)
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*)", re.MULTILINE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NON_WORD = re.compile(r"\W")
_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i can(?:'|no)t|i cannot|i am unable|i'?m unable|"
    r"unfortunately,? i|as an ai|i do not have|i don't have)",
    re.IGNORECASE,
)
_LEAK_WORDS = re.compile(
    r"\b(?:spectrograms?|spectrums?|spectra|images?|frames?|captions?|categor(?:y|ies)|"
    r"labels?|prompts?|\[rules\]|rules)\b",
    re.IGNORECASE,
)
_VISUAL_WORDS = re.compile(
    r"\b(?:visible|visibly|seen|see|sees|shown|pictured|depicted|colou?rful|colou?rs?)\b",
    re.IGNORECASE,
)

Cleaner = Callable[[str], str]
Check = Callable[[str, str], "str | None"]


def strip_wrappers(text: str) -> str:
    """Remove 'Caption:' style prefixes, markdown emphasis, list marks and enclosing quotes."""
    out = _MARKDOWN.sub("", text).strip()
    previous = None
    while out != previous:
        previous = out
        out = _PREFIX.sub("", out).strip()
        out = _LIST_MARK.sub("", out).strip()
        if len(out) >= 2 and out[0] in _QUOTES and out[-1] in _QUOTES:
            out = out[1:-1].strip()
    return out


def keep_first_caption(text: str) -> str:
    """Keep only the first paragraph: models sometimes add a second caption or a note."""
    for paragraph in re.split(
        r"\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)|\n(?=\s*note\b)", text, flags=re.I
    ):
        if paragraph.strip():
            return paragraph.strip()
    return ""


def collapse_whitespace(text: str) -> str:
    """One space between words, none before punctuation."""
    out = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;:!?])", r"\1", out)


def remove_repeated_phrases(text: str) -> str:
    """Drop sentences that repeat an earlier one and phrases (1-6 words) repeated back to back."""
    kept: list[str] = []
    seen: set[str] = set()
    for sentence in _SENTENCE.split(text):
        key = re.sub(r"\W+", " ", sentence).strip().lower()
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(_collapse_repeated_ngrams(sentence))
    return " ".join(kept).strip()


def _collapse_repeated_ngrams(sentence: str, longest: int = 6) -> str:
    words = sentence.split(" ")
    keys = [_NON_WORD.sub("", w).lower() for w in words]
    changed = True
    while changed:
        changed = False
        for n in range(min(longest, len(words) // 2), 0, -1):
            i = 0
            while i + 2 * n <= len(words):
                if all(keys[i : i + n]) and keys[i : i + n] == keys[i + n : i + 2 * n]:
                    del words[i + n : i + 2 * n], keys[i + n : i + 2 * n]
                    changed = True
                else:
                    i += 1
    return " ".join(words)


def ensure_final_period(text: str) -> str:
    """Captions end with sentence punctuation and start with a capital letter."""
    if not text:
        return text
    out = text[0].upper() + text[1:]
    return out if out[-1] in ".!?" else out.rstrip(",;:") + "."


CLEANERS: tuple[Cleaner, ...] = (
    strip_wrappers,
    keep_first_caption,
    collapse_whitespace,
    strip_wrappers,
    remove_repeated_phrases,
    ensure_final_period,
)


def check_empty(text: str, category: str) -> str | None:
    """Nothing left after cleaning."""
    return "empty output" if not text.strip(" .") else None


def check_refusal(text: str, category: str) -> str | None:
    """The model declined ('I'm sorry, I can't ...')."""
    return "refusal" if _REFUSAL.search(text) else None


def check_leaked_instructions(text: str, category: str) -> str | None:
    """The caption talks about the inputs or the task (spectrogram, image, frame, caption, ...)."""
    match = _LEAK_WORDS.search(text)
    return f"leaks the inputs or instructions ({match.group(0)!r})" if match else None


def check_label_verbatim(text: str, category: str) -> str | None:
    """The category label is copied in a way that reads as a label, not as prose: quoted, or a
    label with a comma or parentheses (e.g. 'bird chirping, tweeting') appearing verbatim."""
    label = category.strip().lower()
    if not label:
        return None
    lowered = text.lower()
    quoted = any(f"{q1}{label}{q2}" in lowered for q1, q2 in ('""', "''", "“”", "‘’"))
    label_like = ("," in label or "(" in label) and label in lowered
    return f"copies the category label {category!r}" if quoted or label_like else None


def check_length(text: str, category: str) -> str | None:
    """Absurdly short or long for one caption (bounds in words)."""
    words = len(text.split())
    if words < MIN_WORDS:
        return f"too short ({words} words < {MIN_WORDS})"
    if words > MAX_WORDS:
        return f"too long ({words} words > {MAX_WORDS})"
    return None


def check_visual_reference(text: str, category: str) -> str | None:
    """Stage 1 only: Listing 1 rule 3 forbids visual content in the audio-only caption."""
    match = _VISUAL_WORDS.search(text)
    return f"refers to visual content ({match.group(0)!r})" if match else None


STAGE_CHECKS: dict[int, tuple[Check, ...]] = {
    1: (
        check_empty,
        check_refusal,
        check_leaked_instructions,
        check_label_verbatim,
        check_length,
        check_visual_reference,
    ),
    2: (check_empty, check_refusal, check_leaked_instructions, check_label_verbatim, check_length),
}


@dataclass(frozen=True)
class Outcome:
    """`caption` when accepted; else `reason` (and the cleaned text that was rejected)."""

    caption: str | None
    cleaned: str
    reason: str | None


def clean(text: str) -> str:
    """Run every cleaner in order."""
    for cleaner in CLEANERS:
        text = cleaner(text)
    return text


def postprocess(text: str | None, category: str, stage: int) -> Outcome:
    """Clean an LLM output for `stage` (1 or 2) and accept or reject it."""
    cleaned = clean(text or "")
    for check in STAGE_CHECKS[stage]:
        reason = check(cleaned, category)
        if reason is not None:
            return Outcome(caption=None, cleaned=cleaned, reason=reason)
    return Outcome(caption=cleaned, cleaned=cleaned, reason=None)
