"""Source accuracy of captions: which sources a caption names, scored against what was mixed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from multi2cap.demo.scenes import FAINT_GAIN_DB, Scene, SceneSource, Source
from multi2cap.demo.source_accuracy import named_sources, score_sources, source_phrases


def _source(key: str, name: str, category: str) -> Source:
    return Source(Path(f"{key}.ogg"), Path(f"{key}.png"), name, "sounds", "calls", category, "x")


SOURCES = [
    _source("duck", "a duck", "duck quacking"),
    _source("drake", "a drake", "duck quacking"),
    _source("rubberduck", "a rubber duck", "rubber duck squeaking"),
    _source("lion", "a lion", "lion roaring"),
    _source("sea_lion", "a sea lion", "sea lion barking"),
    _source("hen", "a hen", "chicken clucking"),
    _source("rooster", "a rooster", "chicken crowing"),
    _source("hippopotamus", "a hippopotamus", "hippo grunting"),
    _source("cymbal_crash", "a crash cymbal", "playing cymbal"),
    _source("saw", "a saw", "sawing wood"),
]
PHRASES = source_phrases(SOURCES)


@pytest.mark.parametrize(
    ("caption", "named"),
    [
        ("A rubber duck squeaks.", {"rubberduck"}),  # not also "a duck"
        ("A sea lion barks while a lion roars.", {"sea_lion", "lion"}),
        ("The sound of a hippo grunting.", {"hippopotamus"}),  # category synonym
        ("Two hippopotamuses and some ducks.", {"hippopotamus", "duck"}),  # plurals
        ("A cymbal crashes.", {"cymbal_crash"}),  # "playing cymbal" -> cymbal
        ("A chicken clucks.", set()),  # hen's and rooster's category: names neither
        ("Someone is sawing wood.", set()),  # the wood is not the source
        ("A DRAKE quacks.", {"drake"}),
        ("a lioness", set()),  # whole words only
    ],
)
def test_named_sources(caption, named):
    assert named_sources(caption, PHRASES) == named


def _scene(sid: str, placed: list[tuple[str, float | None]]) -> Scene:
    sources = [SceneSource(key, key, gain) for key, gain in placed]
    return Scene(id=sid, split="test", category="c", sources=sources, references=[])


def test_scores_are_micro_averaged_with_a_faint_subset_and_silent_sources():
    scenes = [
        _scene("a", [("duck", -6.0), ("lion", FAINT_GAIN_DB)]),  # lion faint
        _scene("b", [("hen", -4.0), ("saw", None)]),  # saw visible but silent
        _scene("c", [("rooster", -5.0)]),
    ]
    captions = {
        "a": "A duck quacks.",  # 1 of 2 heard, misses the faint lion
        "b": "A hen clucks and a saw rasps.",  # names the silent saw: a false positive
        "c": "A rooster crows.",
        "unused": "A lion roars.",  # no scene: ignored
    }
    scores = score_sources(captions, scenes, SOURCES)
    # named 1 + 2 + 1 = 4, heard 2 + 1 + 1 = 4, hits 1 + 1 + 1 = 3
    assert scores.precision == pytest.approx(3 / 4)
    assert scores.recall == pytest.approx(3 / 4)
    assert scores.f1 == pytest.approx(3 / 4)
    assert scores.n_clips == 3 and scores.n_faint_clips == 1
    # Faint subset = clip "a" alone: precision 1/1, recall 1/2.
    assert scores.f1_faint == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert scores.recall_faint == 0.0
    assert scores.silent_named == 1.0
    results = scores.as_results()
    assert results["source_f1"] == pytest.approx(0.75) and "source_f1_faint" in results


def test_an_empty_caption_scores_zero_not_an_error():
    scores = score_sources({"a": ""}, [_scene("a", [("duck", -6.0)])], SOURCES)
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)


def test_every_demo_source_has_a_name_that_names_it_alone(tuxpaint_dir):
    from multi2cap.demo.scenes import load_sources, reference_captions

    sources = load_sources(tuxpaint_dir)
    phrases = source_phrases(sources)
    import numpy as np

    for source in sources:
        # Every reference phrasing of a clip with only this source names exactly it.
        for reference in reference_captions([(source, False)], np.random.default_rng(0)):
            assert named_sources(reference, phrases) == {source.key}, reference
