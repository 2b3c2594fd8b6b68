"""The offline backend: measured descriptors, readable varied captions, honest provenance."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from vgg_helpers import SAMPLE_RATE, clip_items, make_extracted, tone_with_bursts

from multi2cap.io import read_jsonl
from multi2cap.vggcaps.descriptors import (
    describe_audio,
    describe_image,
    detect_onsets,
    loudness_envelope,
    spectral_centroid,
)
from multi2cap.vggcaps.offline import natural_category, offline_stage1, offline_stage2
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.postprocess import postprocess
from multi2cap.vggcaps.records import BuildConfig


def test_envelope_level_of_a_full_scale_sine_is_minus_3_dbfs() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    envelope = loudness_envelope(np.sin(2 * np.pi * 440 * t), SAMPLE_RATE)
    assert envelope.shape == (20,)
    assert np.allclose(envelope, 20 * np.log10(np.sqrt(0.5)), atol=0.05)


def test_onsets_are_found_where_the_bursts_start() -> None:
    wave = tone_with_bursts(500.0, [0.4, 1.2], seconds=2.0)
    onsets = detect_onsets(loudness_envelope(wave, SAMPLE_RATE)) * 0.05
    assert np.allclose(onsets, [0.4, 1.2], atol=0.051)
    assert detect_onsets(loudness_envelope(np.zeros(SAMPLE_RATE), SAMPLE_RATE)).size == 0


def test_centroid_tracks_the_tone_frequency() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low = spectral_centroid(np.sin(2 * np.pi * 300 * t), SAMPLE_RATE)
    high = spectral_centroid(np.sin(2 * np.pi * 5000 * t), SAMPLE_RATE)
    assert low == pytest.approx(300, rel=0.05) and high == pytest.approx(5000, rel=0.02)


def test_descriptors_summarise_loudness_trend_and_steadiness() -> None:
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    rising = (np.linspace(0.01, 0.8, t.size) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    desc = describe_audio(rising, SAMPLE_RATE)
    assert desc.trend_db > 10 and desc.variation > 5
    steady = describe_audio(0.5 * np.sin(2 * np.pi * 1000 * t), SAMPLE_RATE)
    assert steady.variation < 0.1 and abs(steady.trend_db) < 0.1
    assert steady.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    assert steady.active_fraction == 1.0


def test_image_descriptors() -> None:
    dark_green = describe_image(Image.new("RGB", (40, 30), (10, 90, 20)))
    assert dark_green.brightness < 0.3 and dark_green.hue_name == "green"
    grey = describe_image(Image.new("RGB", (40, 30), (200, 200, 200)))
    assert grey.saturation < 0.05 and grey.brightness > 0.7


def test_natural_category() -> None:
    assert natural_category("bird chirping, tweeting") == "bird chirping"
    assert natural_category("police car (siren)") == "police car siren"


def test_offline_captions_are_varied_and_pass_post_processing() -> None:
    captions = set()
    for index, (clip_id, category) in enumerate(clip_items(12)):
        wave = tone_with_bursts(150.0 + 700.0 * index, [0.2 * (index % 5) + 0.1] * (index % 3))
        first = offline_stage1(clip_id, category, describe_audio(wave, SAMPLE_RATE))
        image = describe_image(Image.new("RGB", (8, 8), (20 * index, 100, 250 - 20 * index)))
        second = offline_stage2(clip_id, first, image)
        assert postprocess(first, category, 1).caption == first, first
        assert postprocess(second, category, 2).caption == second, second
        assert natural_category(category) in first.lower()
        captions.add(second)
    assert len(captions) == 12
    openings = {c.split()[0] for c in captions}
    assert len(openings) >= 3


def test_offline_build_says_offline_and_is_deterministic(tmp_path) -> None:
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        make_extracted(out, clip_items(4))
        summary = build_vggcaps(
            BuildConfig(out=out, backend="offline", steps=("caption", "split"), progress=False)
        )
        assert summary.exit_code == 0 and summary.dataset_size == 4 and summary.cost_usd == 0
        results.append((out / "vggcaps.jsonl").read_text())
        records = list(read_jsonl(out / "vggcaps.jsonl"))
        assert {r["backend"] for r in records} == {"offline"}
        assert {r["model"] for r in records} == {"offline-descriptors-v1"}
        assert all(
            r["caption"].startswith(r["raw_caption"].rstrip("."))
            or r["raw_caption"][1:].rstrip(".") in r["caption"]
            for r in records
        )
    assert results[0] == results[1]
