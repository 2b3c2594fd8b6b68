"""Source accuracy: which of the demo's sources a caption names, scored against what was mixed in.

The demo knows the audible sources of every clip, so a caption can be scored on the question the
paper cares about (does it say what is heard?) and not only on n-gram overlap. Each source of
`sources.csv` is named by its noun phrase without the article ("a sea lion" -> "sea lion") and by
the noun part of its category ("hippo grunting" -> "hippo", "playing cymbal" -> "cymbal") when
that phrase belongs to that source alone ("chicken" is both the hen's and the rooster's: it names
neither). Matching is whole-word, case-insensitive, allows a plural "s"/"es" (unless that word is one of the sources'
sound verbs: "a rooster crows" names no crow), and takes the longest
phrase first, consuming its words: "a rubber duck squeaks" names the rubber duck, not a duck, and
"a sea lion barks" names no lion.

Scores are micro-averaged over (clip, source) pairs: precision = named and heard / named, recall =
named and heard / heard, F1 their harmonic mean. The faint subset is the clips with a source mixed
faint (-26 dB); there `recall_faint` is the recall of the faint sources alone. `silent_named` is the
fraction of visible-but-silent sources that a caption names anyway (a model that learnt from
frames could be tempted to say what it would have seen).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from multi2cap.demo.scenes import Scene, Source

_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_ARTICLES = ("a ", "an ", "the ")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _noun(name: str) -> str:
    lowered = name.lower()
    for article in _ARTICLES:
        if lowered.startswith(article):
            return lowered[len(article) :]
    return lowered


def _category_noun(category: str) -> str:
    """The words before the category's verb: "hippo grunting" -> "hippo", "playing cymbal" ->
    "cymbal", "sawing wood" -> "" (the wood is not the source)."""
    words = _words(category)
    if words[:1] == ["playing"]:
        words = words[1:]
    noun = []
    for word in words:
        if word.endswith("ing"):
            break
        noun.append(word)
    return " ".join(noun)


@dataclass(frozen=True)
class SourcePhrases:
    """Word tuples that name a source -> its key, and the sound verbs ("crows", "barks") that a
    plural ending must not turn into a name ("a rooster crows" names no crow)."""

    names: dict[tuple[str, ...], str]
    verbs: frozenset[str]


def source_phrases(sources: Iterable[Source]) -> SourcePhrases:
    """The phrases that name each source. Names win over category synonyms; a category synonym
    shared by several sources (or equal to another source's name) is dropped."""
    sources = list(sources)
    verbs = frozenset(w for s in sources for w in _words(f"{s.sound} {s.alt_sound}"))
    phrases: dict[tuple[str, ...], str] = {tuple(_words(_noun(s.name))): s.key for s in sources}
    synonyms: dict[tuple[str, ...], set[str]] = {}
    for source in sources:
        noun = tuple(_words(_category_noun(source.category)))
        if noun:
            synonyms.setdefault(noun, set()).add(source.key)
    for noun, keys in synonyms.items():
        if noun not in phrases and len(keys) == 1:
            phrases[noun] = next(iter(keys))
    return SourcePhrases(phrases, verbs)


def _word_matches(word: str, target: str, verbs: frozenset[str]) -> bool:
    return word == target or (word in (target + "s", target + "es") and word not in verbs)


def named_sources(caption: str, phrases: SourcePhrases) -> set[str]:
    """Keys of the sources a caption names (longest phrase first, each word used once)."""
    words = _words(caption)
    used = [False] * len(words)
    found: set[str] = set()
    for phrase in sorted(phrases.names, key=len, reverse=True):
        n = len(phrase)
        for start in range(len(words) - n + 1):
            if any(used[start : start + n]):
                continue
            window = words[start : start + n]
            # Only the last word of a phrase may carry a plural ending ("sea lions").
            last = _word_matches(window[-1], phrase[-1], phrases.verbs)
            if window[:-1] == list(phrase[:-1]) and last:
                found.add(phrases.names[phrase])
                used[start : start + n] = [True] * n
    return found


@dataclass
class SourceScores:
    """Micro-averaged source accuracy of one system on a set of clips (fractions in [0, 1])."""

    precision: float
    recall: float
    f1: float
    f1_faint: float
    recall_faint: float
    silent_named: float
    n_clips: int
    n_faint_clips: int

    def as_results(self) -> dict[str, float]:
        """The `results.json` keys (`source_*`)."""
        return {f"source_{k}": v for k, v in asdict(self).items()}


def _prf(pairs: Sequence[tuple[set[str], set[str]]]) -> tuple[float, float, float]:
    hits = sum(len(named & heard) for named, heard in pairs)
    named = sum(len(n) for n, _ in pairs)
    heard = sum(len(h) for _, h in pairs)
    precision = hits / named if named else 0.0
    recall = hits / heard if heard else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score_sources(
    captions: Mapping[str, str], scenes: Iterable[Scene], sources: Iterable[Source]
) -> SourceScores:
    """Score `captions` (clip id -> caption) against the audible sources of their scenes; scenes
    without a caption are ignored."""
    phrases = source_phrases(sources)
    pairs, faint_pairs = [], []
    faint_hits = faint_total = silent_hits = silent_total = 0
    for scene in scenes:
        if scene.id not in captions:
            continue
        named = named_sources(captions[scene.id], phrases)
        heard = {p.key for p in scene.sources if p.audible}
        pairs.append((named, heard))
        faint = {p.key for p in scene.sources if p.faint}
        if faint:
            faint_pairs.append((named, heard))
            faint_hits += len(named & faint)
            faint_total += len(faint)
        silent = {p.key for p in scene.sources if not p.audible} - heard
        silent_hits += len(named & silent)
        silent_total += len(silent)
    precision, recall, f1 = _prf(pairs)
    return SourceScores(
        precision=precision,
        recall=recall,
        f1=f1,
        f1_faint=_prf(faint_pairs)[2],
        recall_faint=faint_hits / faint_total if faint_total else 0.0,
        silent_named=silent_hits / silent_total if silent_total else 0.0,
        n_clips=len(pairs),
        n_faint_clips=len(faint_pairs),
    )
