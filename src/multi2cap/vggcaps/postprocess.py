"""Post-processing of LLM outputs into one clean caption, or a rejection with its reason.

Two kinds of rule, each a small named function so it can be tested and reported on its own:
- *cleaners* `str -> str` rewrite harmless noise (wrappers, markdown, whitespace, repeats);
- *checks* `(text, category) -> reason | None` reject outputs the pipeline must re-ask for
  (empty, refusals, leaked instructions or inputs, absurd length).

`postprocess` runs the cleaners in `CLEANERS` order, then the checks; the first failing check
names the rejection. A reply the model cut off at its token cap while repeating itself ("A dog
barks. la la la ..." to 300 tokens) is rejected before the checks: cleaned, it would read as a
short, plausible caption ("A dog barks. la.").

Every rule is linear in the length of its input (an endpoint may send a megabyte of junk): the
repeated-phrase collapse builds new lists instead of deleting in place, wrapper stripping stops
after `MAX_WRAPPER_LAYERS` layers, and the prefix pattern cannot backtrack over whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MIN_WORDS = 4
MAX_WORDS = 80
# a reply cut at the token cap is a loop when removing repeats drops at least this many words
LOOP_MIN_REPEATED_WORDS = 4
MAX_WRAPPER_LAYERS = 16  # "Caption:", quotes, list marks nested deeper are left for the checks
MAX_COLLAPSE_PASSES = 16  # a normal caption settles after one or two

_QUOTES = "\"'“”‘’«»`"
# possessive `\s*+`: nothing after a run of whitespace here can match whitespace, so giving
# it back never helps, and greedy runs backtracked quadratically over a long run of spaces
_PREFIX = re.compile(
    r"^\s*+(?:>{1,3}\s*+)?(?:\*\*|__)?\s*+(?:here(?:'s| is)\s++(?:a|the|my|your)\s++)?"
    r"(?:(?:final|revised|refined|raw|audio|new|improved)\s++)?"
    r"caption\s*+(?:\d+\s*+)?(?:\*\*|__)?\s*+[:\-–—]\s*+(?:\*\*|__)?",
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
    """Remove 'Caption:' style prefixes, markdown emphasis, list marks and enclosing quotes
    (layer by layer, at most `MAX_WRAPPER_LAYERS`: each layer copies the text)."""
    out = _MARKDOWN.sub("", text).strip()
    previous = None
    for _ in range(MAX_WRAPPER_LAYERS):
        if out == previous:
            break
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
    """Delete the second copy of phrases of 1-`longest` words repeated back to back (longest
    phrase length first, left to right, over and over until nothing changes; words compared
    without punctuation or case, a word with no letters never matches).

    Each pass over one phrase length reads the words once and appends to new lists; the first
    version deleted in place, which shifted the rest of the list at every deletion: quadratic,
    3.55 s for a 1-MB looping reply. Passes stop after `MAX_COLLAPSE_PASSES` rounds (a normal
    caption settles in one or two), so the whole is linear in the number of words."""
    words = sentence.split(" ")
    keys = [_NON_WORD.sub("", w).lower() for w in words]
    for _ in range(MAX_COLLAPSE_PASSES):
        changed = False
        for n in range(min(longest, len(words) // 2), 0, -1):
            words, keys, removed = _collapse_pass(words, keys, n)
            changed |= removed
        if not changed:
            break
    return " ".join(words)


def _collapse_pass(words: list[str], keys: list[str], n: int) -> tuple[list[str], list[str], bool]:
    """One left-to-right pass for phrases of `n` words: (words, keys, whether any was removed).

    Nothing can change before the first place where `n` words in a row equal the words `n`
    later, found at C speed (`bytes.find`); most passes end there. From that place, the words
    kept so far are `out`, and the phrase ending there, `out[i:i + n]`, is compared with the
    next `n` input words: equal, those are skipped (the phrase stays, so a third copy is
    caught too); else the window moves one word on."""
    same = bytes(a == b and a != "" for a, b in zip(keys, keys[n:], strict=False))
    start = same.find(b"\x01" * n)
    if start < 0:
        return words, keys, False
    out_words, out_keys = words[: start + n], keys[: start + n]
    i, p, total = start, start + n, len(words)
    while p + n <= total:
        window = out_keys[i : i + n]
        if window == keys[p : p + n] and all(window):
            p += n
        else:
            out_words.append(words[p])
            out_keys.append(keys[p])
            i += 1
            p += 1
    out_words.extend(words[p:])
    out_keys.extend(keys[p:])
    return out_words, out_keys, True  # at `start` at least one phrase was removed


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
    return _clean(text)[0]


def _clean(text: str) -> tuple[str, int]:
    """The cleaned text, and how many words `remove_repeated_phrases` dropped."""
    dropped = 0
    for cleaner in CLEANERS:
        before = len(text.split()) if cleaner is remove_repeated_phrases else 0
        text = cleaner(text)
        if cleaner is remove_repeated_phrases:
            dropped += before - len(text.split())
    return text, dropped


def postprocess(
    text: str | None, category: str, stage: int, *, cut_at_token_cap: bool = False
) -> Outcome:
    """Clean an LLM output for `stage` (1 or 2) and accept or reject it.

    `cut_at_token_cap`: the model stopped at its token cap (`finish_reason == "length"`); such
    a reply is rejected when it was repeating itself (at least `LOOP_MIN_REPEATED_WORDS` words
    dropped as repeats), since what is left after cleaning is the start of a loop."""
    cleaned, dropped = _clean(text or "")
    if cut_at_token_cap and dropped >= LOOP_MIN_REPEATED_WORDS:
        reason = f"cut off at the token cap while repeating itself ({dropped} repeated words)"
        return Outcome(caption=None, cleaned=cleaned, reason=reason)
    for check in STAGE_CHECKS[stage]:
        reason = check(cleaned, category)
        if reason is not None:
            return Outcome(caption=None, cleaned=cleaned, reason=reason)
    return Outcome(caption=cleaned, cleaned=cleaned, reason=None)
