"""CLAP re-ranking with a tiny Multi2Cap and a tiny random CLAP saved to a folder: candidates
from one beam search, the chosen caption is the argmax computed directly with
`ClapModel.forward`, a batch equals one clip at a time, ties go to the decoder's order, and the
`caption --rerank clap` command end to end."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from multi2cap_testkit import CAPTIONS, tiny
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.media.audio import load_audio
from multi2cap.metrics.clap import CLAP_MODEL_ENV, save_tiny_clap
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.rerank import ClapReranker, RerankConfig, choose

CLAP_RATE = 48_000


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = [*CAPTIONS, "describe the sound in detail audio caption"]
    return save_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap", words)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 44.1-kHz WAV files of different lengths (read at 16 kHz and at 48 kHz)."""
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for i, seconds in enumerate((0.7, 1.6, 1.1)):
        t = np.arange(int(seconds * 44_100)) / 44_100
        wave = 0.3 * np.sin(2 * np.pi * (220 + 330 * i) * t) * np.exp(-t * (1 + i))
        path = folder / f"clip{i}.wav"
        sf.write(path, wave.astype(np.float32), 44_100)
        paths.append(path)
    return paths


def _direct_scores(reranker: ClapReranker, path: Path, texts: list[str]) -> list[float]:
    """CLAP cosines computed without the scorer: the extractor on the clip alone (read at the
    CLAP's rate), the tokenizer on each text alone, `ClapModel.forward`, logits / exp(scale)."""
    scorer = reranker.scorer
    model = scorer.model
    np.random.seed(0)
    audio = scorer.feature_extractor(
        load_audio(path, CLAP_RATE), sampling_rate=CLAP_RATE, truncation="rand_trunc",
        return_tensors="pt",
    )  # fmt: skip
    scores = []
    with torch.no_grad():
        for text in texts:
            out = model(**scorer.tokenizer([text], return_tensors="pt"), **audio)
            scores.append(float(out.logits_per_audio[0, 0] / model.logit_scale_a.exp()))
    return scores


def test_one_beam_search_gives_the_candidates(clips: list[Path], monkeypatch: Any) -> None:
    model = tiny()
    calls: list[dict[str, Any]] = []
    generate = model.decoder.model.generate

    def counting(*args: Any, **kwargs: Any) -> Any:
        config = kwargs["generation_config"]
        calls.append({"beams": config.num_beams, "n": config.num_return_sequences})
        return generate(*args, **kwargs)

    monkeypatch.setattr(model.decoder.model, "generate", counting)
    groups = model.caption_candidates(clips, num_return_sequences=4, num_beams=5, batch_size=8)
    assert calls == [{"beams": 5, "n": 4}]  # one decoding pass for all clips and candidates
    assert [len(g) for g in groups] == [4, 4, 4]
    monkeypatch.undo()
    assert [g[0] for g in groups] == model.caption(clips, num_beams=5)
    with pytest.raises(ValueError, match=r"num_return_sequences must be 1\.\.num_beams"):
        model.caption_candidates(clips[0], num_return_sequences=4, num_beams=3)


def test_the_chosen_caption_is_the_argmax_computed_directly(
    clap_folder: Path, clips: list[Path]
) -> None:
    model = tiny()
    reranker = ClapReranker(clap_folder, candidates=4)
    results = reranker.caption(model, clips)
    beams = model.caption_candidates(clips, num_return_sequences=4, num_beams=4)
    for path, result, group in zip(clips, results, beams, strict=True):
        distinct = list(dict.fromkeys(group))
        assert [c.text for c in result.candidates] == distinct
        assert [(c.source, c.rank) for c in result.candidates] == [
            ("beam", group.index(t)) for t in distinct
        ]
        direct = _direct_scores(reranker, path, distinct)
        assert [c.clap for c in result.candidates] == pytest.approx(direct, abs=1e-5)
        assert result.caption == distinct[int(np.argmax(direct))]
        assert result.score == pytest.approx(max(direct), abs=1e-5)


def test_a_batch_equals_one_clip_at_a_time(clap_folder: Path, clips: list[Path]) -> None:
    model = tiny()
    reranker = ClapReranker(clap_folder, candidates=3, num_beams=4, audio_batch_size=3)
    together = reranker.caption(model, clips, batch_size=3)
    alone = [reranker.caption(model, path)[0] for path in clips]
    assert [r.caption for r in together] == [r.caption for r in alone]
    for a, b in zip(together, alone, strict=True):
        assert [c.text for c in a.candidates] == [c.text for c in b.candidates]
        assert [c.clap for c in a.candidates] == pytest.approx(
            [c.clap for c in b.candidates], abs=1e-5
        )


def test_waveforms_are_resampled_to_the_clap_rate(clap_folder: Path, clips: list[Path]) -> None:
    model = tiny()
    reranker = ClapReranker(clap_folder, candidates=2)
    wave = load_audio(clips[1])
    (from_array,) = reranker.caption(model, wave)
    clap_wave = reranker.scorer.from_rate(wave, 16_000)
    assert clap_wave.shape[0] == wave.shape[0] * 3
    (expected,) = reranker.caption_waves(model, [wave], [clap_wave])
    assert from_array.caption == expected.caption
    assert from_array.score == pytest.approx(expected.score, abs=1e-6)
    (from_tensor,) = reranker.caption(model, torch.from_numpy(wave))
    assert from_tensor.caption == expected.caption


def test_sampled_candidates_are_seeded_and_deduplicated(
    clap_folder: Path, clips: list[Path]
) -> None:
    model = tiny()
    reranker = ClapReranker(clap_folder, candidates=2, sampled=3, seed=7)
    state = torch.random.get_rng_state()
    first = reranker.candidates(model, [load_audio(p) for p in clips])
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator untouched
    again = reranker.candidates(model, [load_audio(p) for p in clips])
    assert first == again
    for group in first:
        texts = [text for text, _, _ in group]
        assert len(texts) == len(set(texts))
        assert {source for _, source, _ in group} <= {"beam", "sample"}
        assert [rank for _, source, rank in group if source == "beam"] == [0, 1]
    cold = ClapReranker(reranker.scorer, RerankConfig(candidates=1, sampled=4, temperature=1e-4))
    for group in cold.candidates(model, [load_audio(clips[0])]):
        assert sum(source == "sample" for _, source, _ in group) <= 1  # 4 equal draws -> one


def test_ties_go_to_the_first_candidate_and_are_reported() -> None:
    texts = [("a", "beam", 0), ("b", "beam", 1), ("c", "beam", 2), ("d", "sample", 0)]
    exact = choose(texts, [0.5, 0.7, 0.7, 0.69])
    assert (exact.caption, exact.score, exact.tied) == ("b", 0.7, ["c"])
    loose = choose(texts, [0.5, 0.7, 0.7, 0.69], tie_tolerance=0.02)
    assert (loose.caption, loose.tied) == ("b", ["c", "d"])
    earlier = choose(texts, [0.69, 0.7, 0.1, 0.1], tie_tolerance=0.02)
    assert (earlier.caption, earlier.tied) == ("a", ["b"])
    record = exact.to_record()
    assert record["clap_score"] == 0.7 and record["tied"] == ["c"]
    assert record["candidates"][3] == {"text": "d", "source": "sample", "rank": 0, "clap": 0.69}


def test_config_checks_the_beam_width() -> None:
    with pytest.raises(ValueError, match=r"num_beams \(2\) must be >= candidates \(3\)"):
        RerankConfig(candidates=3, num_beams=2)
    assert RerankConfig(candidates=3).beams_for(5) == 5
    assert RerankConfig(candidates=6).beams_for(3) == 6


def test_waveforms_are_read_at_their_sampling_rate(clap_folder: Path, clips: list[Path]) -> None:
    """`caption_candidates` and `ClapReranker.caption` take raw waveforms at `sampling_rate`
    as `Multi2Cap.caption` does: 44.1-kHz arrays give what the 44.1-kHz files give (the
    captioner's input resampled to 16 kHz, the CLAP's from the array's own rate), and arrays
    without a rate are read as 16 kHz with a warning."""
    model = tiny()
    reranker = ClapReranker(clap_folder, candidates=2)
    waves = [sf.read(path, dtype="float32")[0] for path in clips]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a rate given: no warning
        groups = model.caption_candidates(
            waves, sampling_rate=44_100, num_return_sequences=2, num_beams=2
        )
        from_arrays = reranker.caption(model, waves, sampling_rate=44_100)
    assert groups == model.caption_candidates(clips, num_return_sequences=2, num_beams=2)
    from_files = reranker.caption(model, clips)
    assert [c.caption for c in from_arrays] == [c.caption for c in from_files]
    for a, b in zip(from_arrays, from_files, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)
    with pytest.warns(UserWarning, match="without sampling_rate") as record:
        reranker.caption(model, waves[:1])
    assert record[0].filename == __file__
    with pytest.warns(UserWarning, match="without sampling_rate") as record:
        model.caption_candidates(waves[:1])
    assert record[0].filename == __file__
    with pytest.raises(ValueError, match="sampling_rate must be a positive number of Hz"):
        reranker.caption(model, waves[:1], sampling_rate=-1)


# ---------------------------------------------------------------------- the command


def test_caption_rerank_clap_end_to_end(
    tmp_path: Path, clap_folder: Path, clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CLAP_MODEL_ENV, raising=False)
    checkpoint = tiny().save_pretrained(tmp_path / "ckpt")
    output = tmp_path / "out" / "captions.csv"
    runner = CliRunner(env={"COLUMNS": "400"})
    base = ["caption", *map(str, clips), "-c", str(checkpoint)]
    result = runner.invoke(
        app,
        [*base, "--rerank", "clap", "--clap-model", str(clap_folder), "--candidates", "3",
         "--rerank-scores", "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = Multi2Cap.from_pretrained(checkpoint)
    expected = ClapReranker(clap_folder, candidates=3).caption(model, clips)
    assert [r["caption"] for r in rows] == [e.caption for e in expected]
    for row, choice in zip(rows, expected, strict=True):
        assert float(row["clap_score"]) == pytest.approx(choice.score, abs=1e-5)
        assert json.loads(row["tied"]) == choice.tied
        listed = json.loads(row["candidates"])
        assert [c["text"] for c in listed] == [c.text for c in choice.candidates]
        assert max(listed, key=lambda c: c["clap"])["text"] == row["caption"]

    printed = runner.invoke(
        app, [*base[:2], *base[4:], "--rerank", "clap", "--clap-model", str(clap_folder),
              "--candidates", "2", "--rerank-scores"],
    )  # fmt: skip
    assert printed.exit_code == 0, printed.output
    assert "CLAP score" in printed.output

    for args, message in (
        (["--candidates", "3"], "apply with --rerank clap only"),
        (["--rerank-scores"], "--rerank-scores needs --rerank clap"),
        (["--rerank", "clap"], "no CLAP model given"),
        (["--rerank", "clap", "--clap-model", str(tmp_path / "nowhere")], "--clap-model"),
        (["--rerank", "clap", "--clap-model", str(clap_folder), "--beams", "2",
          "--candidates", "3"], "num_beams (2) must be >= candidates (3)"),
        (["--rerank", "best"], "'best' is not one of"),
    ):  # fmt: skip
        refused = runner.invoke(app, [*base, *args])
        assert refused.exit_code == 2, (args, refused.output)
        assert message in refused.output, (args, refused.output)
        assert "Traceback" not in refused.output
