"""PTB tokenization: the CoreNLP jar as coco-caption runs it, and the pure-Python fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from multi2cap.assets import AssetNotFoundError
from multi2cap.metrics.tokenizer import ptb_tokenize, ptb_tokenize_java, ptb_tokenize_python

# (caption, coco-caption's tokenization) from the research note, plus caption-like extras.
CASES = [
    ("It's raining and birds chirp (loudly).", "it 's raining and birds chirp -lrb- loudly -rrb-"),
    ("A dog's bark, then a man's voice.", "a dog 's bark then a man 's voice"),
    ("A car doesn't start -- the engine sputters.", "a car does n't start the engine sputters"),
    ("Rain-water drips onto a roof; cars pass by!", "rain-water drips onto a roof cars pass by"),
    ("A man talks as a dog barks in the distance.", "a man talks as a dog barks in the distance"),
    ('He said "hello" to Mr. Smith.', "he said hello to mr. smith"),
    ("The U.S. army... marches", "the u.s. army marches"),
    ("'Quoted' words, 3.5 dB", "quoted words 3.5 db"),
    ("Wind blows. Birds chirp?", "wind blows birds chirp"),
    ("People's voices (children) can't stop", "people 's voices -lrb- children -rrb- ca n't stop"),
    ("Café naïve — ok", "café naïve ok"),
    ("", ""),
]


def test_jar_matches_coco_caption(java: str) -> None:
    captions = [c for c, _ in CASES]
    assert ptb_tokenize_java(captions, java) == [t for _, t in CASES]


def test_python_fallback_matches_the_jar_on_caption_cases() -> None:
    assert ptb_tokenize_python([c for c, _ in CASES]) == [t for _, t in CASES]


def test_line_breaks_inside_captions_keep_alignment(java: str) -> None:
    captions = ["Birds chirp\nwhile wind blows.", "a\rb\u2028c", "", "Last one.", "", ""]
    want = ["birds chirp while wind blows", "a b c", "", "last one", "", ""]
    assert ptb_tokenize_java(captions, java) == want
    assert ptb_tokenize_python(captions) == want


def test_punctuation_only_and_unicode(java: str) -> None:
    captions = ["...", "?!", ";:,", "音楽 が 流れる", "ÉCOLE Ünïcödé"]
    got = ptb_tokenize_java(captions, java)
    assert got[:3] == ["", "?!", ""]  # "?!" is one PTB token, not in the filter list
    assert got[3:] == ["音楽 が 流れる", "école ünïcödé"]


def test_backend_choice(java: str) -> None:
    assert ptb_tokenize(["A dog."], java)[1] == "java"
    assert ptb_tokenize(["A dog."], backend="python") == (["a dog"], "python")


def test_without_java_the_fallback_runs_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert ptb_tokenize(["A dog's bark (far)."]) == (
            ["a dog 's bark -lrb- far -rrb-"],
            "python",
        )
    assert "fallback" in caplog.text
    with pytest.raises(AssetNotFoundError, match="java"):
        ptb_tokenize(["A dog."], backend="java")
