"""`multi2cap.model.hf_audio` with tiny random encoders of each family (transformers config
classes, no downloads): batched == one-by-one, chunking, token counts, LoRA, Multi2Cap."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from multi2cap_testkit import CAPTIONS, make_batch

from multi2cap.assets import AssetNotFoundError
from multi2cap.model.config import AudioEncoderSpec, HfAudioOptions, LoraSpec, Multi2CapConfig
from multi2cap.model.hf_audio import (
    HfAudioEncoder,
    _pool,
    apply_lora,
    build_hf_audio_encoder,
)
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.recipes import RECIPES_DIR

SR = 16000
# Small windows where the family allows it (Whisper: 100 positions = 2 s; AST: 200 frames =
# 2 s), so that chunking is exercised on short audio.
TINY = {
    "whisper": dict(
        model_type="whisper",
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=100,
    ),
    "ast": dict(
        model_type="audio-spectrogram-transformer",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=200,
    ),
    "clap": dict(
        model_type="clap_audio_model",
        patch_embeds_hidden_size=16,
        depths=[1, 1, 1, 1],
        num_attention_heads=[2, 2, 2, 2],
        hidden_size=128,
    ),
    "clap-fused": dict(  # the fused variant: 4 mel views, attention feature fusion
        model_type="clap_audio_model",
        patch_embeds_hidden_size=16,
        depths=[1, 1, 1, 1],
        num_attention_heads=[2, 2, 2, 2],
        hidden_size=128,
        enable_fusion=True,
    ),
    "wav2vec2": dict(
        model_type="wav2vec2",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    ),
    "hubert": dict(
        model_type="hubert",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    ),
}
# Per family: a very short clip, a clip inside one window, one spanning 2-3 windows.
LENGTHS = {
    "whisper": [300, int(1.3 * SR), int(4.5 * SR)],
    "ast": [300, int(1.3 * SR), int(4.5 * SR)],
    "clap": [300, int(3.1 * SR), int(12.5 * SR)],
    "clap-fused": [300, int(2.1 * SR), int(10.5 * SR)],
    "wav2vec2": [300, int(3.1 * SR), int(17.0 * SR)],
    "hubert": [300, int(1.1 * SR), int(16.0 * SR)],
}
RATES = {
    "whisper": 50.0,
    "ast": 19 / 2,  # AST: (200 - 16) // 10 + 1 columns per 2 s
    "clap": 3.2,
    "clap-fused": 3.2,
    "wav2vec2": 50.0,
    "hubert": 50.0,
}


def _encoder(kind: str, **kwargs) -> HfAudioEncoder:
    torch.manual_seed(0)
    return build_hf_audio_encoder(config=TINY[kind], **kwargs).freeze()


def _waves(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    waves = torch.randn(len(lengths), max(lengths), generator=gen) * 0.1
    t = torch.arange(max(lengths)) / SR
    for i, n in enumerate(lengths):  # a tone per clip on top of noise; zeros after the end
        waves[i] += 0.3 * torch.sin(2 * math.pi * (300 + 200 * i) * t)
        waves[i, n:] = 0.0
    return waves, torch.tensor(lengths)


@pytest.mark.parametrize("kind", list(TINY))
def test_batched_equals_one_by_one_on_mixed_lengths(kind: str) -> None:
    encoder = _encoder(kind)
    lengths = LENGTHS[kind]
    waves, lens = _waves(lengths)
    with torch.no_grad():
        tokens, mask = encoder(waves, lens)
        assert mask.sum(1).tolist() == [encoder.num_tokens(n) for n in lengths]
        assert tokens.shape == (3, max(mask.sum(1)), encoder.output_dim)
        assert not tokens[~mask].any()
        for i, n in enumerate(lengths):
            alone, alone_mask = encoder(waves[i : i + 1, :n], lens[i : i + 1])
            assert alone_mask.all() and alone.shape[1] == mask[i].sum()
            torch.testing.assert_close(alone[0], tokens[i, : alone.shape[1]], atol=2e-5, rtol=0)
        # Samples past an example's end and the other examples change nothing.
        noisy = waves.clone()
        noisy[0, lengths[0] :] = 1.0
        noisy[2] = torch.randn(waves.shape[1]) * 0.1
        again, _ = encoder(noisy, lens)
    torch.testing.assert_close(again[:2], tokens[:2], atol=2e-5, rtol=0)
    assert not torch.allclose(again[2][mask[2]], tokens[2][mask[2]])


@pytest.mark.parametrize("kind", list(TINY))
def test_long_input_is_its_chunks_encoded_alone(kind: str) -> None:
    encoder = _encoder(kind)
    n = LENGTHS[kind][2]
    waves, lens = _waves([n])
    window = encoder.window_samples
    with torch.no_grad():
        whole, _ = encoder(waves, lens)
        parts = [
            encoder(waves[:, s : min(n, s + window)], torch.tensor([min(n, s + window) - s]))[0]
            for s in range(0, n, window)
        ]
    assert len(parts) >= 2
    torch.testing.assert_close(whole, torch.cat(parts, 1), atol=2e-5, rtol=0)
    assert encoder.tokens_per_second() == pytest.approx(RATES[kind], rel=0.03)


def test_whisper_tokens_follow_the_trimmed_length() -> None:
    """ceil((n // 160) / 2) tokens per window: 20 ms each, the positional rows sliced to T."""
    encoder = _encoder("whisper")
    assert encoder.window_samples == 100 * 2 * 160
    assert [encoder.num_tokens(n) for n in (1, 320, 321, 480, 32000, 32001, 40000)] == [
        1,
        1,
        1,
        2,
        100,
        101,
        125,
    ]
    wave = torch.randn(1, 8000) * 0.1
    tokens, _ = encoder(wave, torch.tensor([8000]))
    assert tokens.shape[1] == 25  # 0.5 s


def test_pool_averages_consecutive_tokens() -> None:
    tokens = torch.arange(10.0).repeat(2, 1).T  # (10, 2), row i = [i, i]
    assert _pool(tokens, 3).tolist() == [[1.0, 1.0], [4.0, 4.0], [7.0, 7.0], [9.0, 9.0]]
    base, pooled = _encoder("whisper"), _encoder("whisper", pool=4)
    waves, lens = _waves([int(1.3 * SR), int(0.7 * SR)])
    with torch.no_grad():
        full, full_mask = base(waves, lens)
        out, mask = pooled(waves, lens)
    assert mask.sum(1).tolist() == [math.ceil(m / 4) for m in full_mask.sum(1).tolist()]
    torch.testing.assert_close(out[1, :2], full[1, :8].view(2, 4, -1).mean(1))
    assert pooled.tokens_per_second() == pytest.approx(12.5)


def test_chunk_seconds_is_checked_against_the_native_window() -> None:
    assert _encoder("whisper", chunk_seconds=1.0).window_samples == SR
    with pytest.raises(ValueError, match="chunk_seconds"):
        _encoder("whisper", chunk_seconds=3.0)


@pytest.mark.parametrize("kind", ["whisper", "ast", "clap", "wav2vec2"])
def test_lora_trains_in_float32_on_a_bfloat16_backbone(kind: str) -> None:
    encoder = apply_lora(_encoder(kind, dtype="bfloat16"), r=2, alpha=4.0)
    trainable = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert encoder.dtype == torch.bfloat16
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert targets == set(encoder.default_targets)
    waves, lens = _waves(LENGTHS[kind][:2])
    encoder.train()
    tokens, mask = encoder(waves, lens)
    assert tokens.dtype == torch.float32
    tokens[mask].square().mean().backward()
    grads = [p.grad for n, p in trainable.items() if "lora_B" in n]
    assert grads and all(g is not None for g in grads)


def test_backbone_dropout_is_off_in_train_mode() -> None:
    """train() leaves the frozen backbone in eval mode (no dropout / layer drop), only LoRA
    dropout follows it."""
    config = dict(TINY["wav2vec2"], hidden_dropout=0.5, attention_dropout=0.5, layerdrop=0.5)
    torch.manual_seed(0)
    encoder = apply_lora(build_hf_audio_encoder(config=config).freeze(), r=2, dropout=0.0)
    waves, lens = _waves(LENGTHS["wav2vec2"][:2])
    with torch.no_grad():
        reference, _ = encoder.eval()(waves, lens)
        training, _ = encoder.train()(waves, lens)
    torch.testing.assert_close(training, reference)
    assert any(m.training for n, m in encoder.named_modules() if "lora_dropout" in n)


def test_bad_lora_targets_and_model_types_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="match no Linear"):
        apply_lora(_encoder("whisper"), targets=["nope"])
    with pytest.raises(ValueError, match="model_type must be one of"):
        build_hf_audio_encoder(config={"model_type": "bert"})


def test_missing_folder_names_the_config_field(tmp_path: Path, monkeypatch) -> None:
    # A local folder gets the `--backbone` hint (`hf download` of a path would make no sense,
    # `model.hub.hub_asset`); a hub id not in the offline cache gets `hf download`.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetNotFoundError, match=r"audio\.source.*--backbone audio=DIR") as err:
        build_hf_audio_encoder(str(tmp_path / "no-such-encoder"))
    assert "hf download" not in str(err.value)
    with pytest.raises(AssetNotFoundError, match=r"audio\.source.*hf download no-such/encoder"):
        build_hf_audio_encoder("no-such/encoder")


def _saved_folder(kind: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    """A tiny full model of the kind a hub repo holds, saved with its feature extractor; returns
    the audio part that should be loaded from it."""
    import transformers as tf

    fields = {k: v for k, v in TINY[kind].items() if k != "model_type"}
    torch.manual_seed(0)
    if kind == "whisper":  # a speech-recognition checkpoint: encoder + decoder
        full = tf.WhisperForConditionalGeneration(tf.WhisperConfig(**fields))
        part, fe = full.get_encoder(), tf.WhisperFeatureExtractor(feature_size=80)
    elif kind == "ast":  # an AudioSet classifier (`audio_spectrogram_transformer.` prefix)
        full = tf.ASTForAudioClassification(tf.ASTConfig(**fields))
        part = full.audio_spectrogram_transformer
        fe = tf.ASTFeatureExtractor(max_length=fields["max_length"])
    elif kind == "clap":  # the two-tower CLAP model; only its audio tower is kept
        text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
        text.update(intermediate_size=64, vocab_size=100, max_position_embeddings=40)
        config = tf.ClapConfig(text_config=text, audio_config=fields, projection_dim=16)
        full = tf.ClapModel(config)
        part, fe = full.audio_model, tf.ClapFeatureExtractor()
    else:
        full = tf.HubertModel(tf.HubertConfig(**fields))
        part, fe = full, tf.Wav2Vec2FeatureExtractor()
    full.save_pretrained(folder)
    fe.save_pretrained(folder)
    return part, folder


@pytest.mark.parametrize("kind", ["whisper", "ast", "clap", "hubert"])
def test_pretrained_folders_load_the_audio_part(kind: str, tmp_path: Path) -> None:
    part, folder = _saved_folder(kind, tmp_path / kind)
    encoder = build_hf_audio_encoder(str(folder))
    torch.testing.assert_close(encoder.model.state_dict(), part.state_dict())
    assert encoder.model_type == part.config.model_type
    waves, lens = _waves(LENGTHS[kind][:2])
    with torch.no_grad():
        tokens, mask = encoder(waves, lens)
    assert tokens.shape[-1] == encoder.output_dim and mask.any(1).all()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="kind hf: set `source`"):
        AudioEncoderSpec(kind="hf")
    spec = AudioEncoderSpec(kind="hf", source="openai/whisper-base", hf={"pool": 2})
    assert spec.hf == HfAudioOptions(pool=2)
    assert AudioEncoderSpec().kind == "ced"
    inline = Multi2CapConfig.from_yaml("audio: {kind: hf, config: {model_type: hubert}}").audio
    assert inline.source is None and inline.config == {"model_type": "hubert"}


def _tiny_config(kind: str, grounding: bool = True) -> Multi2CapConfig:
    audio = AudioEncoderSpec(
        kind="hf", source=None, config=TINY[kind], lora=LoraSpec(r=4, alpha=8.0, dropout=0.0)
    )
    return Multi2CapConfig.tiny(CAPTIONS, grounding=grounding, audio=audio)


@pytest.mark.parametrize("kind", ["whisper", "ast", "clap", "hubert"])
def test_multi2cap_trains_saves_and_reloads_with_an_hf_encoder(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Multi2Cap(_tiny_config(kind))
    assert model.audio_encoder.model_type == TINY[kind]["model_type"]
    batch = make_batch(4, [9600, 4000, 7000, 2000])
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    out = model(batch, "pretrain")
    out.loss.backward()
    lora = [n for n, p in model.named_parameters() if p.grad is not None and "audio_encoder" in n]
    assert lora and all("lora_" in n for n in lora)
    optimizer.step()
    units = {type(u).__name__ for u in model.shard_units()}
    assert type(model.audio_encoder.blocks[0]).__name__ in units
    folder = model.save_pretrained(tmp_path / "ckpt")
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["audio"]["kind"] == "hf"
    assert saved["audio"]["config"]["model_type"] == TINY[kind]["model_type"]
    loaded = Multi2Cap.from_pretrained(folder)
    model.eval()
    with torch.no_grad():
        for a, b in zip(
            model.encode_audio(batch["audio"], batch["audio_lengths"]),
            loaded.encode_audio(batch["audio"], batch["audio_lengths"]),
            strict=True,
        ):
            torch.testing.assert_close(a, b)
    lens = batch["audio_lengths"]
    assert loaded.caption(batch["audio"], lens) == model.caption(batch["audio"], lens)
    probe = model.probe_embeddings(batch)  # the grounding probes read the same embeddings
    assert probe.a_mean.shape == (4, model.audio_encoder.output_dim)
    # grounding.pool space (the tiny default): each patch over the audio steps
    assert probe.attention.shape[2] == probe.audio_mask.shape[1]


def test_whisper_recipes_validate() -> None:
    from multi2cap.train.config import load_train_config

    configs = RECIPES_DIR
    pre = load_train_config(configs / "pretrain_vggcaps_whisper.yaml")
    model = Multi2CapConfig.model_validate(pre.model)
    assert (pre.stage, model.grounding.enabled, model.audio.kind) == ("pretrain", False, "hf")
    assert model.audio.source == "openai/whisper-small" and model.audio.hf.pool == 8
    fine = load_train_config(configs / "finetune_clotho_whisper.yaml")
    assert fine.stage == "finetune" and fine.init_from.endswith("pretrain_vggcaps_whisper/best")
