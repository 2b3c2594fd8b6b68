"""The HMM part-of-speech tagger on a tiny lexicon in Lingua::EN::Tagger's file format."""

from __future__ import annotations

from pathlib import Path

import pytest

from multi2cap.analysis import pos

WORDS = """--- #YAML:1.0
the: { det: 100 }
The: { det: 20 }
dog: { nn: 50 }
barks: { nns: 10, vbz: 10 }
bark: { nn: 10 }
loud: { jj: 10 }
"""
UNKNOWN = """--- #YAML:1.0
"-ing-": { vbg: 800, nn: 10 }
"-unknown-": { nn: 875, jj: 195 }
"""


def write_lexicon(folder: Path, nn_row: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "words.yml").write_text(WORDS, encoding="utf-8")
    (folder / "unknown.yml").write_text(UNKNOWN, encoding="utf-8")
    (folder / "tags.yml").write_text(
        "--- #YAML:1.0\n"
        "pp: { det: 0.9, nn: 0.1 }\n"
        "det: { nn: 0.8, nns: 0.15, jj: 0.05 }\n"
        f"nn: {{ {nn_row} }}\n"
        "nns: { pp: 0.5, vbz: 0.5 }\n"
        "vbz: { jj: 0.5, pp: 0.5 }\n"
        "vbg: { pp: 1.0 }\n"
        "jj: { nn: 0.5, pp: 0.5 }\n",
        encoding="utf-8",
    )
    return folder


def test_context_decides_between_equally_likely_tags(tmp_path: Path) -> None:
    # "barks" is NNS or VBZ with equal counts and the two tags have equal priors (10 each), so
    # the emission scores tie and the transition from NN decides.
    verb_after_noun = pos.HmmTagger.load(
        write_lexicon(tmp_path / "a", "vbz: 0.6, nns: 0.1, pp: 0.3")
    )
    assert verb_after_noun.tag(["the", "dog", "barks"]) == ["det", "nn", "vbz"]
    noun_after_noun = pos.HmmTagger.load(
        write_lexicon(tmp_path / "b", "vbz: 0.1, nns: 0.6, pp: 0.3")
    )
    assert noun_after_noun.tag(["the", "dog", "barks"]) == ["det", "nn", "nns"]
    assert verb_after_noun.tag([]) == []


def test_unknown_words_inflections_and_suffix_classes(tmp_path: Path) -> None:
    tagger = pos.HmmTagger.load(write_lexicon(tmp_path, "vbz: 0.6, nns: 0.1, pp: 0.3"))
    # "dogs" is not in the lexicon; its base "dog" is a noun, so NNS and VBZ stay open and
    # DET -> NNS (0.15) beats DET -> VBZ (floor).
    assert tagger.tag(["the", "dogs"]) == ["det", "nns"]
    # "zorbing" is unknown with no base: the -ing- class makes it VBG.
    assert tagger.tag(["dog", "zorbing"])[1] == "vbg"


def test_top_verbs_nouns_groups_forms_and_drops_stopwords(tmp_path: Path) -> None:
    tagger = pos.HmmTagger.load(write_lexicon(tmp_path, "vbz: 0.6, nns: 0.1, pp: 0.3"))
    captions = ["The dog barks.", "The dog barks loud.", "The dog."]
    terms = pos.top_verbs_nouns(captions, tagger, stopwords=frozenset({"the", "a"}))
    assert terms.verbs == [("barks", 2)]
    assert terms.nouns == [("dog", 3)]
    assert terms.captions_tagged == 3
    sampled = pos.top_verbs_nouns(captions, tagger, frozenset({"the"}), max_captions=2)
    assert sampled.captions_tagged == 2


def test_lexicon_dir_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pos.LEXICON_ENV, str(write_lexicon(tmp_path / "lex", "pp: 1.0")))
    assert pos.lexicon_dir() == tmp_path / "lex"
    assert pos.default_tagger() is not None
    monkeypatch.setenv(pos.LEXICON_ENV, str(tmp_path / "empty"))
    assert pos.lexicon_dir() is None
    assert pos.default_tagger() is None


def test_batched_decoding_equals_one_sentence_at_a_time(tmp_path: Path) -> None:
    tagger = pos.HmmTagger.load(write_lexicon(tmp_path, "vbz: 0.6, nns: 0.1, pp: 0.3"))
    sentences = [["the", "dog", "barks"], [], ["dog"], ["the", "dogs"], ["loud", "dog", "barks"]]
    assert tagger.tag_many(sentences) == [tagger.tag(s) for s in sentences]
    assert tagger.tag_many(sentences)[0] == ["det", "nn", "vbz"]
