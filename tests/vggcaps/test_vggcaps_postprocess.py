"""Each post-processing rule on its own, then the whole chain per stage."""

from __future__ import annotations

import random
import re

import pytest

from multi2cap.vggcaps import postprocess as pp


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('Caption: "A dog barks loudly."', "A dog barks loudly."),
        (">>> Caption: A dog barks.", "A dog barks."),
        ("**Revised caption:** “Rain drums on a tin roof.”", "Rain drums on a tin roof."),
        ("- A bell rings.", "A bell rings."),
        ("Here's the revised caption: A bell rings.", "A bell rings."),
        ("Here is a caption - A bell rings.", "A bell rings."),
        ("1. A bell rings.", "A bell rings."),
        ("A bell rings.", "A bell rings."),
    ],
)
def test_strip_wrappers(raw: str, expected: str) -> None:
    assert pp.strip_wrappers(raw) == expected


def test_keep_first_caption() -> None:
    assert pp.keep_first_caption("A dog barks.\n\nNote: I focused on audio.") == "A dog barks."
    assert pp.keep_first_caption("A dog barks.\n2. A cat meows.") == "A dog barks."
    assert pp.keep_first_caption("\n\nA dog barks.") == "A dog barks."


def test_collapse_whitespace() -> None:
    assert pp.collapse_whitespace("  A  dog\n barks ,  loudly .") == "A dog barks, loudly."


def test_remove_repeated_phrases() -> None:
    assert pp.remove_repeated_phrases("A dog barks. A dog barks. A cat meows.") == (
        "A dog barks. A cat meows."
    )
    assert pp.remove_repeated_phrases("the the engine roars roars loudly.") == (
        "the engine roars loudly."
    )
    assert pp.remove_repeated_phrases("a loud bang a loud bang echoes.") == "a loud bang echoes."
    assert pp.remove_repeated_phrases("Bells ring, birds sing.") == "Bells ring, birds sing."


def test_ensure_final_period() -> None:
    assert pp.ensure_final_period("a dog barks,") == "A dog barks."
    assert pp.ensure_final_period("Wow!") == "Wow!"


def test_checks_name_their_reason() -> None:
    assert pp.check_empty(" . ", "x") == "empty output"
    assert pp.check_refusal("I'm sorry, but I can't help.", "x") == "refusal"
    assert pp.check_refusal("A sorry-sounding horn.", "x") is None
    assert "spectrogram" in pp.check_leaked_instructions("The spectrogram shows a hum.", "x")
    assert "image" in pp.check_leaked_instructions("In this image a dog barks.", "x")
    assert pp.check_leaked_instructions("Vivid imagery of a framed barn.", "x") is None
    assert pp.check_label_verbatim(
        "Bird chirping, tweeting fills the air.", "bird chirping, tweeting"
    )
    assert pp.check_label_verbatim('A clip of "dog barking" outdoors.', "dog barking")
    assert pp.check_label_verbatim("A dog barking in the yard.", "dog barking") is None
    assert pp.check_length("Dog barks.", "x").startswith("too short")
    assert pp.check_length(" ".join(["word"] * 81), "x").startswith("too long")
    assert pp.check_visual_reference("A bright red car is visible.", "x")
    assert pp.check_visual_reference("A car horn honks twice.", "x") is None


def test_postprocess_cleans_then_accepts_or_rejects_per_stage() -> None:
    ok = pp.postprocess('Caption: "a dog  barks  barks twice in the yard"', "dog barking", 1)
    assert ok.caption == "A dog barks twice in the yard." and ok.reason is None
    leak = pp.postprocess("This spectrogram depicts a dog barking.", "dog barking", 1)
    assert leak.caption is None and leak.reason.startswith("leaks")
    visual = "A dog barks in a sunny yard with colorful flowers visible nearby."
    assert pp.postprocess(visual, "dog barking", 1).reason.startswith("refers to visual")
    assert pp.postprocess(visual, "dog barking", 2).caption == visual
    assert pp.postprocess(None, "x", 2).reason == "empty output"


# ------------------------------------------------------------------ linear on hostile input


def _collapse_quadratic(sentence: str, longest: int = 6) -> str:
    """The first `_collapse_repeated_ngrams` (deleting in place), kept as the oracle."""
    words = sentence.split(" ")
    keys = [re.sub(r"\W", "", w).lower() for w in words]
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


def _random_caption(rng: random.Random) -> str:
    """A caption-like word sequence with stutters: phrases of 1-7 words said 2-4 times."""
    vocab = "a dog barks loudly the engine roars , rain falls on tin roof . birds sing -- A Dog"
    words = [rng.choice(vocab.split()) for _ in range(rng.randint(0, 40))]
    for _ in range(rng.randint(0, 4)):
        at, length = rng.randint(0, len(words)), rng.randint(1, 7)
        words[at:at] = words[at : at + length] * rng.randint(1, 3)
    return " ".join(words)


def test_the_linear_collapse_equals_the_first_one_on_captions() -> None:
    rng = random.Random(26)
    for _ in range(1000):
        text = _random_caption(rng)
        assert pp._collapse_repeated_ngrams(text) == _collapse_quadratic(text), text


def test_a_one_megabyte_loop_cut_at_the_token_cap_is_rejected() -> None:
    looping = "A dog barks in the yard. " + "la " * 333_000  # ~1 MB
    outcome = pp.postprocess(looping, "dog barking", 1, cut_at_token_cap=True)
    assert outcome.caption is None and outcome.reason is not None
    assert outcome.reason.startswith("cut off at the token cap while repeating itself")
    # not cut at the cap: the same loop is cleaned as before (and stays a rejection elsewhere)
    assert pp.postprocess("A dog barks in the yard. la la la la la", "x", 1).caption == (
        "A dog barks in the yard. la."
    )
    # a stutter in a caption cut at the cap is no loop
    stutter = pp.postprocess("A dog barks barks in the sunny yard", "x", 1, cut_at_token_cap=True)
    assert stutter.caption == "A dog barks in the sunny yard."
