"""The CLAP scorer (tiny random CLAPs saved to folders, fused and unfused) and the `clap_sim`,
`clap_sim_audio` and `mace` metrics: a clip's score equals the one computed alone and directly
with `ClapModel.forward`; batches never change it; assets are named when missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from tiny_echecker import echecker_checkpoint
from typer.testing import CliRunner

from multi2cap.assets import AssetNotFoundError
from multi2cap.cli.main import app
from multi2cap.media.audio import load_audio
from multi2cap.metrics import MetricUnavailableError, evaluate, metric_availability
from multi2cap.metrics.clap import (
    CLAP_MODEL_ENV,
    ClapScorer,
    mace,
    resolve_clap_model,
    save_tiny_clap,
)

torch = pytest.importorskip("torch", reason="CLAP needs torch")
transformers = pytest.importorskip("transformers", reason="CLAP needs transformers")

TEXTS = ["a dog barks loudly", "rain falls on a tin roof", "a bell rings twice", "birds sing"]
SR = 48_000


@pytest.fixture(scope="module")
def clap_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clap")
    return {
        "unfused": save_tiny_clap(root / "unfused", TEXTS),
        "fused": save_tiny_clap(root / "fused", TEXTS, fused=True),
    }


@pytest.fixture(scope="module")
def scorers(clap_folders: dict[str, Path]) -> dict[str, ClapScorer]:
    torch.set_num_threads(1)
    return {kind: ClapScorer(folder) for kind, folder in clap_folders.items()}


def _waves(seconds: list[float], seed: int = 0) -> list[np.ndarray]:
    """Noise bursts with a tone, distinct per clip, at 48 kHz."""
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(seconds):
        t = np.arange(int(s * SR)) / SR
        tone = 0.2 * np.sin(2 * np.pi * (300 + 170 * i) * t)
        out.append((tone + 0.05 * rng.standard_normal(t.shape[0])).astype(np.float32))
    return out


# Shorter than the 10-s window, exactly it, and longer (random crops / fusion views).
LENGTHS = [0.3, 2.5, 10.0, 13.0]


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_a_batch_scores_every_clip_as_alone(kind: str, scorers: dict[str, ClapScorer]) -> None:
    scorer = scorers[kind]
    waves = _waves(LENGTHS)
    scorer.audio_batch_size = 4
    batched = scorer.embed_audio(waves)
    alone = torch.cat([scorer.embed_audio([w]) for w in waves])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    scorer.audio_batch_size = 3  # batches of other make-ups: the same again
    torch.testing.assert_close(scorer.embed_audio(waves[::-1]), alone.flip(0), atol=1e-5, rtol=0)
    scorer.audio_batch_size = 16


def test_the_trap_is_real_for_the_extractor_on_a_batch(scorers: dict[str, ClapScorer]) -> None:
    """What the scorer avoids: transformers' extractor run on a batch of short clips marks one
    random clip of a fused CLAP as "longer", so the others score differently than alone."""
    scorer = scorers["fused"]
    waves = _waves([0.5, 1.0, 1.5])
    fe = scorer.feature_extractor
    inputs = fe(waves, sampling_rate=SR, truncation="fusion", return_tensors="pt")
    assert int(inputs["is_longer"].sum()) == 1
    with torch.no_grad():
        naive = scorer.model.get_audio_features(**inputs).pooler_output
    naive = torch.nn.functional.normalize(naive, dim=-1)
    alone = scorer.embed_audio(waves)
    assert (naive - alone).abs().amax(dim=1).gt(1e-3).sum() >= 2


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_scores_equal_clap_forward_on_each_clip_alone(
    kind: str, scorers: dict[str, ClapScorer]
) -> None:
    """audio_text == cosine from `ClapModel.forward` (its logits over exp(logit_scale)) fed
    with the extractor's output for the clip alone and the tokenizer's for each text alone."""
    scorer = scorers[kind]
    waves = _waves([1.2, 12.0])
    texts = [["a dog barks loudly", "birds sing"], ["rain falls on a tin roof"]]
    got = scorer.audio_text(waves, texts)
    model = scorer.model
    truncation = "fusion" if kind == "fused" else "rand_trunc"
    for wave, group, scores in zip(waves, texts, got, strict=True):
        np.random.seed(scorer.crop_seed)
        audio = scorer.feature_extractor(
            wave, sampling_rate=SR, truncation=truncation, return_tensors="pt"
        )
        for text, score in zip(group, scores, strict=True):
            tokens = scorer.tokenizer([text], return_tensors="pt")
            with torch.no_grad():
                out = model(**tokens, **audio)
                cosine = out.logits_per_audio[0, 0] / model.logit_scale_a.exp()
            assert score == pytest.approx(float(cosine), abs=1e-5)


def test_long_audio_crops_are_fixed_by_the_seed_and_first_keeps_the_first_window(
    clap_folders: dict[str, Path], scorers: dict[str, ClapScorer]
) -> None:
    scorer = scorers["unfused"]
    (wave,) = _waves([14.0])
    np.random.seed(123)
    state = np.random.get_state()
    first, _ = scorer.clip_features(wave)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global generator restored
    again, _ = scorer.clip_features(wave)
    np.testing.assert_array_equal(first, again)
    other = ClapScorer(clap_folders["unfused"], crop_seed=5)
    assert not np.array_equal(other.clip_features(wave)[0], first)
    head = ClapScorer(clap_folders["unfused"], long_audio="first")
    window, _ = head.clip_features(wave)
    np.testing.assert_array_equal(window, scorer.clip_features(wave[: 10 * SR])[0])


def test_text_embeddings_do_not_depend_on_padding(scorers: dict[str, ClapScorer]) -> None:
    scorer = scorers["unfused"]
    texts = ["birds sing", "rain falls on a tin roof and a dog barks loudly", "birds sing"]
    scorer.text_batch_size = 2
    batched = scorer.embed_texts(texts)
    alone = torch.cat([scorer.embed_texts([t]) for t in texts])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    scorer.text_batch_size = 64


def test_audio_is_read_at_the_clap_rate(tmp_path: Path, scorers: dict[str, ClapScorer]) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, _waves([1.0])[0][::3], 16_000)
    wave = scorers["unfused"].load(path)
    np.testing.assert_array_equal(wave, load_audio(path, SR))
    assert wave.shape[0] == SR


def test_a_missing_or_wrong_clap_model_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CLAP_MODEL_ENV, raising=False)
    with pytest.raises(AssetNotFoundError, match=r"no CLAP model given.*--clap-model"):
        resolve_clap_model(None)
    with pytest.raises(AssetNotFoundError, match=r"not-cached/clap.*local Hugging Face cache"):
        resolve_clap_model("not-cached/clap")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssetNotFoundError, match=r"no config\.json"):
        resolve_clap_model(tmp_path / "empty")
    bert = tmp_path / "bert"
    transformers.BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1
    ).save_pretrained(bert)
    with pytest.raises(ValueError, match="'bert' model, not a CLAP"):
        ClapScorer(bert)
    monkeypatch.setenv(CLAP_MODEL_ENV, str(bert))
    assert resolve_clap_model(None) == str(bert)


# ---------------------------------------------------------------------- metrics


def _clips(folder: Path, n: int) -> list[str]:
    paths = []
    for i, wave in enumerate(_waves([1.0 + i for i in range(n)], seed=3)):
        path = folder / f"clip{i}.wav"
        sf.write(path, wave, SR)
        paths.append(str(path))
    return paths


def test_clap_sim_metrics_equal_the_scorer(
    tmp_path: Path, clap_folders: dict[str, Path], scorers: dict[str, ClapScorer]
) -> None:
    cands = ["a dog barks", "rain falls", "a bell rings"]
    mrefs = [["a dog barks loudly", "dog"], ["rain falls on a tin roof"], ["birds sing", "bell"]]
    audio = _clips(tmp_path, 3)
    folder = str(clap_folders["unfused"])
    result = evaluate(
        cands, mrefs, metrics="clap_sim,clap_sim_audio,bleu_1", tokenize=False,
        clap_model=folder, audio_paths=audio,
    )  # fmt: skip
    scorer = scorers["unfused"]
    text = [
        np.mean([float(scorer.embed_texts([c])[0] @ scorer.embed_texts([r])[0]) for r in refs])
        for c, refs in zip(cands, mrefs, strict=True)
    ]
    waves = [scorer.load(p) for p in audio]
    sims = [scorer.audio_text([w], [[c]])[0][0] for w, c in zip(waves, cands, strict=True)]
    assert result.per_item["clap_sim[unfused]"] == pytest.approx(text, abs=1e-5)
    assert result.per_item["clap_sim_audio[unfused]"] == pytest.approx(sims, abs=1e-5)
    assert result.corpus["clap_sim_audio[unfused]"] == pytest.approx(np.mean(sims), abs=1e-6)
    assert "bleu_1" in result.corpus
    assert result.settings["clap_model"] == folder


def test_clap_metrics_without_model_or_audio_are_unavailable(
    tmp_path: Path, clap_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CLAP_MODEL_ENV, raising=False)
    cands, mrefs = ["a dog barks", "rain"], [["a dog"], ["rain falls"]]
    assert "no CLAP model given" in (metric_availability()["clap_sim"] or "")
    with pytest.raises(MetricUnavailableError, match=r"clap_sim.*--clap-model"):
        evaluate(cands, mrefs, metrics="clap_sim", tokenize=False)
    folder = str(clap_folders["unfused"])
    with pytest.raises(MetricUnavailableError, match="clap_sim_audio: needs each item's audio"):
        evaluate(cands, mrefs, metrics="clap_sim_audio", tokenize=False, clap_model=folder)
    skipped = evaluate(
        cands, mrefs, metrics="clap_sim,clap_sim_audio", tokenize=False, clap_model=folder,
        skip_unavailable=True,
    )  # fmt: skip
    assert list(skipped.corpus) == ["clap_sim[unfused]"]
    assert "audio_paths" in skipped.unavailable["clap_sim_audio"]
    with pytest.raises(ValueError, match="expected 2 paths"):
        evaluate(cands, mrefs, metrics="clap_sim_audio", tokenize=False, clap_model=folder,
                 audio_paths=_clips(tmp_path, 1))  # fmt: skip


@pytest.mark.parametrize("method", ["combined", "text", "audio"])
def test_mace_is_clap_sim_times_one_minus_03_fer(
    method: str, tmp_path: Path, clap_folders: dict[str, Path]
) -> None:
    cands, mrefs = ["a dog barks", "rain falls"], [["a dog"], ["rain falls on a roof"]]
    audio = _clips(tmp_path, 2)
    folder = str(clap_folders["unfused"])
    common = dict(tokenize=False, clap_model=folder, audio_paths=audio, mace_method=method)
    sims = evaluate(cands, mrefs, metrics="clap_sim,clap_sim_audio", **common).per_item
    text, audio_sim = sims["clap_sim[unfused]"], sims["clap_sim_audio[unfused]"]
    expected = {
        "text": text,
        "audio": audio_sim,
        "combined": [(t + a) / 2 for t, a in zip(text, audio_sim, strict=True)],
    }[method]
    for error, factor in ((False, 1.0), (True, 0.7)):
        checker = str(echecker_checkpoint(tmp_path, error))
        result = evaluate(cands, mrefs, metrics="mace,fer", echecker=checker, **common)
        assert result.per_item["fer"] == [float(error)] * 2
        assert result.per_item["mace[unfused]"] == pytest.approx(
            [factor * s for s in expected], abs=1e-6
        )
        assert result.settings["mace_method"] == method


def test_mace_needs_the_fense_checker(
    tmp_path: Path, clap_folders: dict[str, Path], monkeypatch: Any
) -> None:
    monkeypatch.delenv("MULTI2CAP_FENSE_ECHECKER", raising=False)
    folder = str(clap_folders["unfused"])
    with pytest.raises(MetricUnavailableError, match=r"mace.*FENSE error detector"):
        evaluate(["a"], [["a"]], metrics="mace", tokenize=False, clap_model=folder)
    # An echecker whose base BERT cannot be loaded: MACE is unavailable with it, not penalty-free.
    result = evaluate(
        ["a dog", "rain"], [["a dog"], ["rain"]], metrics="mace,clap_sim", tokenize=False,
        clap_model=folder, mace_method="text", echecker=str(echecker_checkpoint(tmp_path, False)),
        echecker_bert=str(tmp_path / "no-bert"), skip_unavailable=True,
    )  # fmt: skip
    assert "could not be loaded" in result.unavailable["mace"]
    assert list(result.corpus) == ["clap_sim[unfused]"]
    assert mace([0.0, 1.0], text_sim=[0.5, 0.5], audio_sim=None, method="text") == [0.5, 0.35]
    with pytest.raises(ValueError, match="needs the combined CLAP"):
        mace([0.0], text_sim=[0.5], audio_sim=None)


def test_evaluate_cli_scores_clap_sim_from_an_audio_folder(
    tmp_path: Path, clap_folders: dict[str, Path]
) -> None:
    audio = _clips(tmp_path, 2)
    predictions = tmp_path / "p.csv"
    predictions.write_text("file_name,caption\nclip0.wav,a dog barks\nclip1.wav,rain falls\n")
    references = tmp_path / "r.csv"
    references.write_text("file_name,caption_1\nclip0.wav,a dog\nclip1.wav,rain falls down\n")
    scores = tmp_path / "scores.json"
    args = ["evaluate", "-p", str(predictions), "-r", str(references), "--no-tokenize",
            "-m", "clap_sim_audio", "--clap-model", str(clap_folders["unfused"])]  # fmt: skip
    runner = CliRunner()
    missing = runner.invoke(app, [*args, "--audio-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a folder" in missing.output
    result = runner.invoke(app, [*args, "--audio-dir", str(tmp_path), "-o", str(scores)])
    assert result.exit_code == 0, result.output
    document = json.loads(scores.read_text())
    direct = evaluate(
        ["a dog barks", "rain falls"], [["a dog"], ["rain falls down"]], metrics="clap_sim_audio",
        tokenize=False, clap_model=str(clap_folders["unfused"]), audio_paths=audio,
    )  # fmt: skip
    key = "clap_sim_audio[unfused]"
    assert document["corpus"][key] == pytest.approx(direct.corpus[key], abs=1e-9)
    Path(audio[1]).unlink()
    gone = runner.invoke(app, [*args, "--audio-dir", str(tmp_path)])
    assert gone.exit_code == 2 and "clip1.wav" in gone.output
