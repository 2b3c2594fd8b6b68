"""Part-of-speech tagging for the report's top verbs and nouns, from data a package manager ships.

NLTK's and spaCy's English taggers need model downloads that an offline machine cannot make. The
Debian package `liblingua-en-tagger-perl` (Lingua::EN::Tagger 0.31, GPL-3) installs a Penn
Treebank lexicon (`words.yml`: word -> tag counts) and tag-bigram probabilities (`tags.yml`) under
/usr/share/perl5/Lingua/EN/Tagger/. This module reads those two data files (it does not copy them)
and runs its own bigram hidden Markov model with Viterbi decoding over the package's tokens
(`text_stats.tokenize`): the emission score of tag t for word w is P(t | w) / P(t) from the lexicon
counts, with case folded, and words missing from the lexicon get tags from their base form
("barks" -> "bark": VBZ or NNS) or else from the suffix classes of `unknown.yml`.

Set MULTI2CAP_POS_LEXICON to another folder holding `words.yml` and `tags.yml` to use other data.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multi2cap.analysis.text_stats import stem, tokenize

LEXICON_ENV = "MULTI2CAP_POS_LEXICON"
DEBIAN_LEXICON_DIR = Path("/usr/share/perl5/Lingua/EN/Tagger")
DEBIAN_PACKAGE = "liblingua-en-tagger-perl"

_ENTRY_RE = re.compile(r'^"?(.*?)"?:\s*\{(.*)\}\s*$')
_START_TAG = "pp"  # sentence-final punctuation: the state before a sentence's first word
_FLOOR = 1e-9

VERB_TAGS = frozenset({"vb", "vbd", "vbg", "vbn", "vbp", "vbz"})
NOUN_TAGS = frozenset({"nn", "nns", "nnp", "nnps"})
# Inflections derived from a known base form: base tag -> tag of the inflected word.
_INFLECTIONS = {
    "s": {"nn": "nns", "nnp": "nnps", "vb": "vbz", "vbp": "vbz"},
    "ed": {"vb": "vbd", "vbp": "vbn"},
    "ing": {"vb": "vbg", "vbp": "vbg"},
}

# Suffix classes of Lingua's unknown.yml, tried in this order.
_UNKNOWN_CLASSES = (
    (("ing",), "-ing-"),
    (("ed",), "-ed-"),
    (("ly",), "-ly-"),
    (("tion", "sion"), "-tion-"),
    (("ous", "ful", "ive", "able", "ible", "ic", "al", "less"), "-hyp-adj-"),
)


def _parse_entries(path: Path) -> Iterable[tuple[str, dict[str, float]]]:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _ENTRY_RE.match(line)
        if not match:
            continue
        fields = {}
        for part in match.group(2).split(","):
            tag, _, value = part.partition(":")
            if value.strip():
                fields[tag.strip()] = float(value)
        yield match.group(1), fields


class HmmTagger:
    """Bigram HMM tagger over Lingua::EN::Tagger's lexicon and transition data.

    `tag(words)` expects lowercase words as `text_stats.tokenize` returns them and gives one
    Penn Treebank tag (lowercase, Lingua's names) per word.
    """

    def __init__(
        self,
        lexicon: dict[str, dict[str, float]],
        transitions: dict[str, dict[str, float]],
        unknown: dict[str, dict[str, float]],
    ) -> None:
        tags = sorted(set(transitions) | {t for row in transitions.values() for t in row})
        self.tags = tags
        self._index = {t: i for i, t in enumerate(tags)}
        n = len(tags)
        trans = np.full((n, n), _FLOOR)
        for prev, row in transitions.items():
            for nxt, prob in row.items():
                trans[self._index[prev], self._index[nxt]] += prob
        self._log_trans = np.log(trans / trans.sum(axis=1, keepdims=True))
        prior = np.full(n, _FLOOR)
        for counts in lexicon.values():
            for tag, count in counts.items():
                if tag in self._index:
                    prior[self._index[tag]] += count
        self._log_prior = np.log(prior / prior.sum())
        self._lexicon = lexicon
        self._unknown = {k: self._emission(v) for k, v in unknown.items()}

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> HmmTagger:
        """Read `words.yml`, `tags.yml` and (optional) `unknown.yml` from `folder`."""
        root = Path(folder)
        lexicon: dict[str, dict[str, float]] = defaultdict(dict)
        for word, counts in _parse_entries(root / "words.yml"):
            merged = lexicon[word.lower()]
            for tag, count in counts.items():
                merged[tag] = merged.get(tag, 0.0) + count
        transitions = dict(_parse_entries(root / "tags.yml"))
        unknown_path = root / "unknown.yml"
        unknown = dict(_parse_entries(unknown_path)) if unknown_path.is_file() else {}
        return cls(dict(lexicon), transitions, unknown)

    def _emission(self, counts: dict[str, float]) -> np.ndarray:
        vector = np.full(len(self.tags), _FLOOR)
        for tag, count in counts.items():
            if tag in self._index:
                vector[self._index[tag]] += count
        return np.log(vector / vector.sum()) - self._log_prior

    @functools.lru_cache(maxsize=200_000)  # noqa: B019  (one tagger per process; bounded)
    def _word_scores(self, word: str) -> np.ndarray:
        counts = self._lexicon.get(word)
        if counts is None:
            counts = self._inflected(word)
        if counts is not None:
            return self._emission(counts)
        return self._unknown_scores(word)

    def _inflected(self, word: str) -> dict[str, float] | None:
        for suffix, mapping in _INFLECTIONS.items():
            if not word.endswith(suffix) or len(word) <= len(suffix) + 2:
                continue
            stem = word[: -len(suffix)]
            for base in (
                stem,
                stem + "e",
                stem[:-1] if suffix == "s" and stem.endswith("e") else "",
            ):
                counts = self._lexicon.get(base) if base else None
                if counts:
                    derived: dict[str, float] = {}
                    for tag, count in counts.items():
                        if tag in mapping:
                            derived[mapping[tag]] = derived.get(mapping[tag], 0.0) + count
                    if suffix == "s" and derived:
                        # English turns most nouns into verbs and back ("a bark", "it barks"):
                        # leave both readings open and let the context decide.
                        total = sum(derived.values())
                        derived = {"nns": total / 2, "vbz": total / 2}
                    if derived:
                        return derived
        return None

    def _unknown_scores(self, word: str) -> np.ndarray:
        for suffixes, key in _UNKNOWN_CLASSES:
            if word.endswith(suffixes) and key in self._unknown:
                return self._unknown[key]
        if word.endswith("s") and not word.endswith(("ss", "us", "is")) and "-s-" in self._unknown:
            return self._unknown["-s-"]
        if "-unknown-" in self._unknown:
            return self._unknown["-unknown-"]
        return self._emission({"nn": 1.0})

    def tag(self, words: Sequence[str]) -> list[str]:
        """Most likely tag sequence (Viterbi) for one sentence of lowercase words."""
        return self.tag_many([words])[0]

    def tag_many(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        """`tag` for many sentences; sentences of equal length are decoded as one batch."""
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, words in enumerate(sentences):
            by_length[len(words)].append(i)
        result: list[list[str]] = [[] for _ in sentences]
        start = self._log_trans[self._index[_START_TAG]] if _START_TAG in self._index else 0.0
        for length, members in by_length.items():
            if length == 0:
                continue
            # emissions: (B, T, K) scores of every tag for every word of the batch
            emissions = np.stack(
                [np.stack([self._word_scores(w) for w in sentences[i]]) for i in members]
            )
            score = start + emissions[:, 0]  # (B, K)
            back = []
            for t in range(1, length):
                candidates = score[:, :, None] + self._log_trans  # (B, K_prev, K)
                best_prev = candidates.argmax(axis=1)  # (B, K)
                back.append(best_prev)
                score = np.take_along_axis(candidates, best_prev[:, None, :], axis=1)[:, 0]
                score = score + emissions[:, t]
            path = [score.argmax(axis=1)]  # (B,)
            for pointers in reversed(back):
                path.append(np.take_along_axis(pointers, path[-1][:, None], axis=1)[:, 0])
            tags = np.stack(path[::-1], axis=1)  # (B, T)
            for row, i in zip(tags, members, strict=True):
                result[i] = [self.tags[k] for k in row]
        return result


def lexicon_dir() -> Path | None:
    """The folder with the tagger's data: $MULTI2CAP_POS_LEXICON, else the Debian package's."""
    override = os.environ.get(LEXICON_ENV)
    candidates = [Path(override)] if override else [DEBIAN_LEXICON_DIR]
    for folder in candidates:
        if (folder / "words.yml").is_file() and (folder / "tags.yml").is_file():
            return folder
    return None


@functools.cache
def _load_cached(folder: str) -> HmmTagger:
    return HmmTagger.load(folder)


def default_tagger() -> HmmTagger | None:
    """The tagger over `lexicon_dir()`, loaded once per process; None when no data is installed."""
    folder = lexicon_dir()
    return _load_cached(str(folder)) if folder is not None else None


@dataclass(frozen=True)
class TopTerms:
    """Most frequent verbs and nouns of a caption set, and how they were found."""

    verbs: list[tuple[str, int]]
    nouns: list[tuple[str, int]]
    captions_tagged: int


def top_verbs_nouns(
    captions: Sequence[str],
    tagger: HmmTagger,
    stopwords: frozenset[str],
    k: int = 15,
    max_captions: int = 5000,
    seed: int = 0,
) -> TopTerms:
    """Tag up to `max_captions` captions (a seeded sample) and count verbs and nouns.

    Forms are grouped by Porter stem ("fills", "filled", "filling" -> "fill") and each group is
    shown under its most frequent form; stop words (including auxiliaries) are left out.
    """
    rng = np.random.default_rng(seed)
    chosen = (
        rng.choice(len(captions), size=max_captions, replace=False)
        if len(captions) > max_captions
        else np.arange(len(captions))
    )
    forms: dict[str, defaultdict[str, Counter[str]]] = {
        "verb": defaultdict(Counter),
        "noun": defaultdict(Counter),
    }
    sentences = [tokenize(captions[int(i)]) for i in chosen]
    for words, tags in zip(sentences, tagger.tag_many(sentences), strict=True):
        for word, tag in zip(words, tags, strict=True):
            if word in stopwords or len(word) < 2:
                continue
            kind = "verb" if tag in VERB_TAGS else "noun" if tag in NOUN_TAGS else None
            if kind:
                forms[kind][stem(word)][word] += 1

    def ranked(groups: defaultdict[str, Counter[str]]) -> list[tuple[str, int]]:
        totals = [(c.most_common(1)[0][0], sum(c.values())) for c in groups.values()]
        return sorted(totals, key=lambda item: (-item[1], item[0]))[:k]

    return TopTerms(ranked(forms["verb"]), ranked(forms["noun"]), len(chosen))
