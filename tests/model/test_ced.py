"""CED encoder: hub-layout loading against a reference forward, chunking, masks, LoRA, BN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from multi2cap.assets import AssetNotFoundError
from multi2cap.media.melspec import CedLogMel
from multi2cap.model.ced import (
    CedConfig,
    CedEncoder,
    apply_lora,
    convert_hub_state_dict,
    load_ced,
)

SR = 16000
DIM, DEPTH, HEADS = 32, 2, 2


def tiny_config(**overrides: object) -> CedConfig:
    return CedConfig(embed_dim=DIM, depth=DEPTH, num_heads=HEADS, **overrides)


def tiny_encoder(seed: int = 0, **overrides: object) -> CedEncoder:
    torch.manual_seed(seed)
    return CedEncoder(tiny_config(**overrides)).eval()


def noise(seconds: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(int(seconds * SR), generator=g) * 0.1


def batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.shape[0] for w in waves])
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths


def hub_state_dict(seed: int = 0, n_classes: int = 10) -> dict[str, torch.Tensor]:
    """Random weights with the key names and shapes of `mispeech/ced-*` model.safetensors."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.1, offset: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale + offset

    sd = {
        "encoder.time_pos_embed": rnd(1, DIM, 1, 63),
        "encoder.freq_pos_embed": rnd(1, DIM, 4, 1),
        "encoder.init_bn.weight": rnd(64, offset=1.0),
        "encoder.init_bn.bias": rnd(64),
        "encoder.init_bn.running_mean": rnd(64, scale=5.0, offset=-40.0),
        "encoder.init_bn.running_var": torch.rand(64, generator=g) * 50 + 100,
        "encoder.init_bn.num_batches_tracked": torch.tensor(1000),
        "encoder.patch_embed.proj.weight": rnd(DIM, 1, 16, 16, scale=0.05),
        "encoder.patch_embed.proj.bias": rnd(DIM),
        "encoder.norm.weight": rnd(DIM, offset=1.0),
        "encoder.norm.bias": rnd(DIM),
        "outputlayer.0.weight": rnd(DIM, offset=1.0),
        "outputlayer.0.bias": rnd(DIM),
        "outputlayer.1.weight": rnd(n_classes, DIM),
        "outputlayer.1.bias": rnd(n_classes),
    }
    for i in range(DEPTH):
        p = f"encoder.blocks.{i}."
        sd |= {
            p + "norm1.weight": rnd(DIM, offset=1.0),
            p + "norm1.bias": rnd(DIM),
            p + "attn.qkv.weight": rnd(3 * DIM, DIM, scale=0.3),
            p + "attn.qkv.bias": rnd(3 * DIM),
            p + "attn.proj.weight": rnd(DIM, DIM),
            p + "attn.proj.bias": rnd(DIM),
            p + "norm2.weight": rnd(DIM, offset=1.0),
            p + "norm2.bias": rnd(DIM),
            p + "mlp.fc1.weight": rnd(4 * DIM, DIM),
            p + "mlp.fc1.bias": rnd(4 * DIM),
            p + "mlp.fc2.weight": rnd(DIM, 4 * DIM),
            p + "mlp.fc2.bias": rnd(DIM),
        }
    return sd


def hub_config() -> dict[str, object]:
    """A `config.json` as the hub writes it (classifier and training options included)."""
    return {
        "architectures": ["CedForAudioClassification"],
        "model_type": "ced",
        "name": "ced-test",
        "attn_drop_rate": 0.0,
        "depth": DEPTH,
        "drop_path_rate": 0.0,
        "drop_rate": 0.0,
        "embed_dim": DIM,
        "eval_avg": "mean",
        "mlp_ratio": 4.0,
        "num_heads": HEADS,
        "outputdim": 10,
        "patch_size": 16,
        "patch_stride": 16,
        "pooling": "mean",
        "qkv_bias": True,
        "target_length": 1012,
        "n_mels": 64,
        "n_fft": 512,
        "hop_size": 160,
        "center": True,
        "pad_last": True,
    }


def reference_forward(sd: dict[str, torch.Tensor], mel: torch.Tensor) -> torch.Tensor:
    """The original CED computation on one clip of <= 1012 frames, straight from hub weights
    (fused qkv, explicit softmax attention), frequency rows averaged: `(64, T)` -> `(T // 16, D)`.
    """
    w = {k.removeprefix("encoder."): v for k, v in sd.items()}
    bn_scale = w["init_bn.weight"] / torch.sqrt(w["init_bn.running_var"] + 1e-5)
    x = (mel - w["init_bn.running_mean"][:, None]) * bn_scale[:, None] + w["init_bn.bias"][:, None]
    x = F.conv2d(x[None, None], w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], 16)
    t = x.shape[-1]
    x = x + w["time_pos_embed"][..., :t] + w["freq_pos_embed"]
    x = x.flatten(2).transpose(1, 2)  # (1, 4 t, D): frequency-major
    n, head_dim = x.shape[1], DIM // HEADS
    for i in range(DEPTH):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (DIM,), w[p + "norm1.weight"], w[p + "norm1.bias"], 1e-6)
        qkv = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(1, n, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(-1)
        h = (attn @ v).transpose(1, 2).reshape(1, n, DIM)
        x = x + F.linear(h, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        h = F.layer_norm(x, (DIM,), w[p + "norm2.weight"], w[p + "norm2.bias"], 1e-6)
        h = F.linear(F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])),
                     w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])  # fmt: skip
        x = x + h
    x = F.layer_norm(x, (DIM,), w["norm.weight"], w["norm.bias"], 1e-6)
    return x.reshape(4, t, DIM).mean(0)


@pytest.fixture
def hub_folder(tmp_path: Path) -> Path:
    save_file(hub_state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hub_config()))
    return tmp_path


# --- loading -------------------------------------------------------------------------------------


def test_hub_checkpoint_loads_and_matches_reference(hub_folder: Path) -> None:
    encoder = load_ced(hub_folder)
    assert not encoder.training
    assert encoder.output_dim == DIM
    sd = hub_state_dict()
    for seconds, seed in ((10.0, 1), (7.3, 2), (1011 * 160 / SR, 3)):  # last: exactly 1012 frames
        wave = noise(seconds, seed)
        mel = CedLogMel()(wave)
        expected = reference_forward(sd, mel)
        with torch.no_grad():
            tokens, mask = encoder(wave[None], torch.tensor([wave.shape[0]]))
        assert tokens.shape == (1, mel.shape[-1] // 16, DIM)
        assert mask.all()
        torch.testing.assert_close(tokens[0], expected, atol=1e-4, rtol=1e-4)
    assert encoder(noise(10.0, 1)[None], torch.tensor([SR * 10]))[0].shape[1] == 62


def test_loaded_weights_are_the_checkpoint_split_qkv(hub_folder: Path) -> None:
    encoder = load_ced(hub_folder)
    qkv = hub_state_dict()["encoder.blocks.1.attn.qkv.weight"]
    attn = encoder.blocks[1].attn
    torch.testing.assert_close(attn.q_proj.weight, qkv[:DIM], rtol=0, atol=0)
    torch.testing.assert_close(attn.k_proj.weight, qkv[DIM : 2 * DIM], rtol=0, atol=0)
    torch.testing.assert_close(attn.v_proj.weight, qkv[2 * DIM :], rtol=0, atol=0)


def test_converter_handles_zenodo_layout_and_is_idempotent() -> None:
    hub = convert_hub_state_dict(hub_state_dict())
    assert not any(k.startswith(("outputlayer", "encoder.")) or ".qkv." in k for k in hub)
    zenodo = {k.removeprefix("encoder.").replace("init_bn.", "init_bn.1."): v
              for k, v in hub_state_dict().items()}  # fmt: skip
    zenodo["front_end.0.mel_scale.fb"] = torch.zeros(257, 64)
    assert convert_hub_state_dict(zenodo).keys() == hub.keys()
    again = convert_hub_state_dict(hub)
    assert again.keys() == hub.keys()
    assert all(torch.equal(again[k], hub[k]) for k in hub)
    encoder = tiny_encoder()
    encoder.load_state_dict(hub)  # strict: our layout exactly


def test_mismatched_checkpoint_is_a_clear_error(hub_folder: Path) -> None:
    config = hub_config() | {"depth": DEPTH + 1}
    (hub_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"does not match its config\.json"):
        load_ced(hub_folder)
    (hub_folder / "config.json").write_text(json.dumps(hub_config() | {"embed_dim": 2 * DIM}))
    with pytest.raises(ValueError, match=r"(?s)does not match its config\.json.*size mismatch"):
        load_ced(hub_folder)


def test_missing_checkpoint_names_the_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AssetNotFoundError, match=r"mispeech/ced-tiny.*--local-dir"):
        load_ced("mispeech/ced-tiny")
    with pytest.raises(AssetNotFoundError, match="not a folder"):
        load_ced(tmp_path / "no" / "such" / "dir")
    with pytest.raises(AssetNotFoundError, match=r"config\.json"):
        load_ced(tmp_path)


def test_hub_config_names_select_presets() -> None:
    config = CedConfig.from_hub_config({"name": "ced-base", "embed_dim": 768, "outputdim": 527})
    assert config == CedConfig.base()
    assert CedConfig.from_hub_config({"name": "ced-mini"}).embed_dim == 256
    with pytest.raises(ValueError, match="patch_stride"):
        CedConfig.from_hub_config({"patch_size": 16, "patch_stride": 10})


def test_presets_match_the_published_models() -> None:
    widths = [(c.embed_dim, c.num_heads, c.depth) for c in
              (CedConfig.tiny(), CedConfig.mini(), CedConfig.small(), CedConfig.base())]  # fmt: skip
    assert widths == [(192, 3, 12), (256, 4, 12), (384, 6, 12), (768, 12, 12)]
    # ced-tiny has 5.5 M parameters with its 527-way classifier (LayerNorm + Linear)
    d = 192
    encoder_params = sum(p.numel() for p in CedEncoder(CedConfig.tiny()).parameters())
    assert abs(encoder_params + 2 * d + 527 * (d + 1) - 5.5e6) / 5.5e6 < 0.01


# --- chunking, batching, masks ---------------------------------------------------------------------


def test_batched_equals_single_for_long_inputs() -> None:
    encoder = tiny_encoder()
    waves = [noise(25.0, 1), noise(4.0, 2), noise(12.5, 3)]
    with torch.no_grad():
        tokens, mask = encoder(*batch(waves))
        for i, wave in enumerate(waves):
            alone, alone_mask = encoder(wave[None], torch.tensor([wave.shape[0]]))
            n = int(mask[i].sum())
            assert alone_mask.all() and n == alone.shape[1]
            assert not mask[i, n:].any()
            torch.testing.assert_close(tokens[i, :n], alone[0], atol=1e-5, rtol=1e-5)
            assert torch.all(tokens[i, n:] == 0)
        # changing only the second example leaves the first untouched
        changed, _ = encoder(*batch([waves[0], noise(25.0, 9), waves[2]]))
    torch.testing.assert_close(changed[0], tokens[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed[1], tokens[1])


def test_long_input_is_the_concatenation_of_its_chunks() -> None:
    encoder = tiny_encoder()
    wave = noise(25.0, 4)
    mel = CedLogMel()(wave)[None]  # (1, 64, 2501)
    assert mel.shape[-1] == 2501
    with torch.no_grad():
        tokens, _ = encoder(wave[None], torch.tensor([wave.shape[0]]))
        parts = [
            encoder.forward_mel(mel[..., s : s + 1012], torch.tensor([min(1012, 2501 - s)]))[0]
            for s in (0, 1012, 2024)
        ]
    assert [p.shape[1] for p in parts] == [63, 63, 29]
    torch.testing.assert_close(tokens, torch.cat(parts, dim=1), atol=1e-5, rtol=1e-5)


def test_token_counts_and_mask_for_mixed_lengths() -> None:
    encoder = tiny_encoder()
    waves = [noise(10.0, 1), noise(3.0, 2), noise(0.05, 3), noise(30.0, 4)]
    with torch.no_grad():
        tokens, mask = encoder(*batch(waves))
    # frames = n // 160 + 1; tokens per chunk of <= 1012 frames = frames // 16; < 1 patch -> 1
    assert mask.sum(1).tolist() == [62, 18, 1, 63 + 63 + 61]
    assert tokens.shape == (4, 187, DIM)
    assert torch.isfinite(tokens).all()


def test_frame_padding_does_not_leak_into_forward_mel() -> None:
    encoder = tiny_encoder()
    mel = CedLogMel()(noise(6.0, 5))[None]
    padded = torch.cat([mel, torch.full((1, 64, 700), 50.0)], dim=-1)  # > 1012 frames
    with torch.no_grad():
        a, _ = encoder.forward_mel(mel, torch.tensor([mel.shape[-1]]))
        b, b_mask = encoder.forward_mel(padded, torch.tensor([mel.shape[-1]]))
    assert b_mask.all()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --- training modes: BatchNorm, freeze, LoRA ----------------------------------------------------


def test_init_bn_keeps_running_stats_in_train_mode() -> None:
    waves, lengths = batch([noise(2.0, 1), noise(1.0, 2)])
    encoder = tiny_encoder().train()
    assert encoder.training and not encoder.init_bn.training
    before = encoder.init_bn.running_mean.clone()
    encoder(waves, lengths)
    assert torch.equal(encoder.init_bn.running_mean, before)

    updating = tiny_encoder(update_bn_stats=True).train()
    assert updating.init_bn.training
    updating(waves, lengths)
    assert not torch.equal(updating.init_bn.running_mean, before)


def test_bfloat16_weights_accept_float_waves() -> None:
    waves, lengths = batch([noise(3.0, 1), noise(2.0, 2)])
    encoder = tiny_encoder()
    with torch.no_grad():
        expected, _ = encoder(waves, lengths)
        tokens, mask = encoder.to(torch.bfloat16)(waves, lengths)
    assert tokens.dtype == torch.bfloat16
    torch.testing.assert_close(tokens.float()[mask], expected[mask], atol=0.1, rtol=0.05)


def test_freeze() -> None:
    encoder = tiny_encoder().train().freeze()
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())


def test_lora_trains_only_adapters(hub_folder: Path) -> None:
    encoder = load_ced(hub_folder)
    waves, lengths = batch([noise(3.0, 1), noise(2.0, 2)])
    with torch.no_grad():
        before, _ = encoder(waves, lengths)
    apply_lora(encoder, r=4, alpha=8.0, dropout=0.0, targets=("q_proj", "v_proj"))
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {
        f"blocks.{i}.attn.{proj}.lora_{ab}.default.weight"
        for i in range(DEPTH)
        for proj in ("q_proj", "v_proj")
        for ab in "AB"
    }
    frozen = {n: p.detach().clone() for n, p in encoder.named_parameters() if not p.requires_grad}
    encoder.train()
    with torch.no_grad():  # LoRA B starts at zero: the adapted model is the loaded one
        torch.testing.assert_close(encoder(waves, lengths)[0], before)

    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):
        tokens, mask = encoder(waves, lengths)
        loss = (tokens[mask] ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in encoder.named_parameters() if n in frozen)
    with torch.no_grad():
        assert not torch.allclose(encoder(waves, lengths)[0], before)
    encoder.zero_grad()
    (encoder(waves, lengths)[0] ** 2).mean().backward()
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.requires_grad}
    encoder.zero_grad()
    (encoder.set_gradient_checkpointing()(waves, lengths)[0] ** 2).mean().backward()
    for n, p in encoder.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[n])
    with pytest.raises(ValueError, match="LoRA targets"):
        apply_lora(tiny_encoder(), targets=("qkv",))
