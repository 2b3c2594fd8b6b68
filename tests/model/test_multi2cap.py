from __future__ import annotations

import math

import pytest
import torch
from multi2cap_testkit import CAPTIONS, make_batch, tiny
from safetensors.torch import load_file

from multi2cap.model.config import BACKBONES_FILE, TRAINABLE_FILE, Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap

MIXED = [9600, 4000, 2500, 7000]  # samples: 0.6, 0.25, 0.16, 0.44 s


def _groups(model: Multi2Cap, loss: torch.Tensor) -> set[str]:
    """Parameter groups that receive a non-zero gradient from `loss`."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True, retain_graph=True)
    touched = set()
    for (name, _), grad in zip(named, grads, strict=True):
        if grad is None or not grad.abs().sum() > 0:
            continue
        if "lora_" in name:
            touched.add(name.split(".")[0] + ".lora")
        elif name.startswith("adapter."):
            touched.add(".".join(name.split(".")[:2]))
        else:
            touched.add(name.split(".")[0])
    return touched


def test_pretrain_losses_are_finite_and_combined_with_alpha_beta() -> None:
    model = tiny()
    out = model(make_batch(4, MIXED), "pretrain")
    for value in (out.loss, out.loss_cap, out.loss_align, out.loss_vfr):
        assert value.ndim == 0 and torch.isfinite(value)
    expected = out.loss_cap + 0.02 * out.loss_align + 0.05 * out.loss_vfr
    torch.testing.assert_close(out.loss, expected)
    # untrained: caption loss near log(vocab), InfoNCE near log(batch) or above
    assert out.loss_cap.item() > 1.0 and out.loss_align.item() > 0.5 * math.log(4)


def test_shapes_and_masks_for_mixed_lengths() -> None:
    model = tiny().eval()
    batch = make_batch(4, MIXED)
    tokens, mask = model.encode_audio(batch["audio"], batch["audio_lengths"])
    assert tokens.shape[:2] == mask.shape and tokens.shape[2] == 32
    # 100 mel frames/s, one time token per 16 frames, at least one token
    assert mask.sum(1).tolist() == [max(1, (n // 160 + 1) // 16) for n in MIXED] == [3, 1, 1, 2]
    assert mask[:, 0].all() and not mask[1, 1:].any()
    probe = model.probe_embeddings(batch)
    assert probe.g.shape == probe.g_hat.shape == (4, 4, 32)
    assert probe.a_mean.shape == (4, 32) and probe.v_cls.shape == (4, 32)
    # grounding.pool space: each of the 16 patches (32 px / 8 px, 4 x 4) over the audio steps
    assert probe.attention.shape == (4, 16, tokens.shape[1])
    assert probe.g_shared.shape == (4, 4, 16) and probe.v_cls_shared.shape == (4, 16)
    torch.testing.assert_close(probe.audio_mask, mask)
    # a clip's grounding tokens do not depend on the rest of the batch
    alone = {key: value[2:3] for key, value in batch.items()}
    alone["audio"] = alone["audio"][:, : MIXED[2]]
    torch.testing.assert_close(model.probe_embeddings(alone).g, probe.g[2:3], atol=1e-5, rtol=1e-4)


def test_gradients_of_each_loss_reach_exactly_their_parameters() -> None:
    model = tiny()
    out = model(make_batch(4, MIXED), "pretrain")
    assert _groups(model, out.loss_cap) == {
        "audio_encoder.lora",
        "decoder.lora",
        "adapter.audio",
        "adapter.ground",
        "grounding",
    }
    assert _groups(model, out.loss_align) == {"audio_encoder.lora", "grounding", "align"}
    assert _groups(model, out.loss_vfr) == {"audio_encoder.lora", "vfr"}
    assert model.vision is not None
    assert not any(p.requires_grad for p in model.vision.parameters())
    out.loss.backward()
    assert all(p.grad is None for p in model.vision.parameters())


def test_adapter_fed_with_g_hat_sends_caption_gradients_to_the_vfr() -> None:
    model = tiny(pretrain_adapter_input="g_hat")
    out = model(make_batch(4, MIXED), "pretrain")
    assert _groups(model, out.loss_cap) == {
        "audio_encoder.lora",
        "decoder.lora",
        "adapter.audio",
        "adapter.ground",
        "vfr",
    }


def test_finetune_needs_no_image_and_keeps_the_vfr_frozen() -> None:
    model = tiny()
    out = model(make_batch(4, MIXED, images=False), "finetune")
    assert out.loss_align is None and out.loss_vfr is None
    torch.testing.assert_close(out.loss, out.loss_cap)
    assert _groups(model, out.loss) == {
        "audio_encoder.lora",
        "decoder.lora",
        "adapter.audio",
        "adapter.ground",
    }
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"audio_encoder", "decoder", "adapter"}
    unfrozen = tiny(freeze_vfr_in_finetune=False)
    out = unfrozen(make_batch(4, MIXED, images=False), "finetune")
    assert "vfr" in _groups(unfrozen, out.loss)


def test_audio_only_baseline_has_no_grounding() -> None:
    model = tiny(grounding=False)
    assert model.vision is None and model.vfr is None and model.grounding is None
    for stage in ("pretrain", "finetune"):
        out = model(make_batch(3, MIXED[:3]), stage)
        assert out.loss_align is None and out.loss_vfr is None
        assert _groups(model, out.loss) == {"audio_encoder.lora", "decoder.lora", "adapter.audio"}
    with pytest.raises(ValueError, match="baseline"):
        model.probe_embeddings(make_batch(2))


def test_pretrain_without_images_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="images"):
        tiny()(make_batch(2, images=False), "pretrain")
    with pytest.raises(ValueError, match="stage"):
        tiny().set_stage("train")


def test_mix_uses_g_hat_for_some_samples() -> None:
    model = tiny(pretrain_adapter_input="mix", mix_prob=1.0)
    out = model(make_batch(2), "pretrain")
    assert "vfr" in _groups(model, out.loss_cap) and "grounding" not in _groups(model, out.loss_cap)


@pytest.mark.parametrize("num_beams", [1, 2])
def test_batched_captioning_equals_one_by_one(num_beams: int) -> None:
    model = tiny()
    batch = make_batch(4, MIXED)
    waves = [batch["audio"][i, :n] for i, n in enumerate(MIXED)]
    together = model.caption(waves, num_beams=num_beams, batch_size=4)
    one_by_one = [model.caption(w, num_beams=num_beams)[0] for w in waves]
    padded = model.caption(batch["audio"], MIXED, num_beams=num_beams, batch_size=3)
    assert together == one_by_one == padded
    assert model.training  # caption() restores the mode it found


def test_caption_reads_files(tmp_path) -> None:
    import soundfile as sf

    model = tiny()
    wave = make_batch(1)["audio"][0].numpy()
    # Float samples: a 16-bit file would quantise the tone, and a random-weight decoder can
    # tell (its greedy caption diverged after a dozen tokens under grounding.pool space).
    sf.write(tmp_path / "tone.wav", wave, 16000, subtype="FLOAT")
    assert model.caption(tmp_path / "tone.wav") == model.caption(wave)
    with pytest.raises(ValueError, match="no audio"):
        model.caption([])


def test_save_load_restores_weights_and_captions(tmp_path) -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for _ in range(2):  # move LoRA B away from zero so the LoRA weights matter
        optimizer.zero_grad()
        model(make_batch(4, MIXED), "pretrain").loss.backward()
        optimizer.step()
    model.eval()
    waves = make_batch(4, MIXED)["audio"]
    before = model.caption(waves, MIXED, num_beams=2)
    folder = model.save_pretrained(tmp_path / "ckpt")
    names = {p.name for p in folder.iterdir()}
    assert names == {"config.yaml", TRAINABLE_FILE, BACKBONES_FILE, "tokenizer"}
    trainable = load_file(folder / TRAINABLE_FILE)
    assert any("decoder" in k and "lora_" in k for k in trainable)
    assert any(k.startswith("vfr.") for k in trainable)
    assert not any(k.startswith("vision.") for k in trainable)

    loaded = Multi2Cap.from_pretrained(folder)
    assert loaded.vision is None  # captioning does not need CLIP
    assert loaded.caption(waves, MIXED, num_beams=2) == before
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key

    # saving the CLIP-less model again keeps the inline CLIP weights; then probes still match
    again = loaded.save_pretrained(tmp_path / "ckpt")
    with_vision = Multi2Cap.from_pretrained(again, load_vision=True)
    batch = make_batch(4, MIXED)
    torch.testing.assert_close(
        with_vision.probe_embeddings(batch).g, model.probe_embeddings(batch).g
    )
    assert not list(tmp_path.glob(".ckpt*"))  # no temporary folders left behind


def test_from_pretrained_rejects_a_foreign_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.yaml"):
        Multi2Cap.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path / "a")
    # same files, other architecture: the mismatch is named
    Multi2CapConfig.tiny(CAPTIONS, k=1, d_g=16).save(tmp_path / "a" / "config.yaml")
    with pytest.raises((ValueError, RuntimeError)):
        Multi2Cap.from_pretrained(tmp_path / "a")


def test_vision_feature_cache_returns_the_same_features(tmp_path) -> None:
    config = Multi2CapConfig.tiny(CAPTIONS)
    config.vision = config.vision.model_copy(update={"feature_cache": str(tmp_path / "cache")})
    model = Multi2Cap(config)
    images = make_batch(3)["images"]
    first = model.vision(images)
    files = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 3

    def no_encoding(images: torch.Tensor) -> None:
        raise AssertionError("cached images must not be encoded again")

    model.vision.encode = no_encoding
    second = model.vision(images[[2, 0]])
    torch.testing.assert_close(second.cls, first.cls[[2, 0]])
    torch.testing.assert_close(second.patches, first.patches[[2, 0]])
    assert sorted((tmp_path / "cache").rglob("*.safetensors")) == files


def test_checkpoint_of_a_pretrained_llm_keeps_only_lora_and_its_own_tokenizer(tmp_path) -> None:
    """With the decoder given by path (as a hub id would be), its weights and tokenizer are not
    copied into the checkpoint; LoRA weights are, and loading restores the same captions."""
    from multi2cap.model.llm import build_causal_lm, word_level_tokenizer

    tiny_config = Multi2CapConfig.tiny(CAPTIONS)
    build_causal_lm(tiny_config.llm).save_pretrained(tmp_path / "llm")
    word_level_tokenizer(tiny_config.llm.tokenizer).save_pretrained(tmp_path / "llm")
    llm = tiny_config.llm.model_copy(
        update={"source": str(tmp_path / "llm"), "family": None, "config": None, "tokenizer": None}
    )
    model = Multi2Cap(tiny_config.model_copy(update={"llm": llm}))
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model(make_batch(4, MIXED), "pretrain").loss.backward()
    optimizer.step()
    folder = model.save_pretrained(tmp_path / "ckpt")
    assert not (folder / "tokenizer").exists()
    assert not any(k.startswith("decoder.") for k in load_file(folder / BACKBONES_FILE))
    assert any(k.startswith("decoder.") for k in load_file(folder / TRAINABLE_FILE))
    waves = make_batch(4, MIXED)["audio"]
    model.eval()
    assert Multi2Cap.from_pretrained(folder).caption(waves, MIXED) == model.caption(waves, MIXED)


def test_gradient_checkpointing_keeps_loss_and_lora_gradients() -> None:
    model = tiny()
    batch = make_batch(4, MIXED)
    reference = model(batch, "finetune").loss
    model.enable_gradient_checkpointing()
    model.train()
    out = model(batch, "finetune")
    torch.testing.assert_close(out.loss, reference)
    assert "decoder.lora" in _groups(model, out.loss)


def test_ced_given_by_folder_is_rebuilt_from_it_not_copied(tmp_path) -> None:
    """A CED checkpoint folder (config.json + model.safetensors) as `audio.source`: the
    Multi2Cap checkpoint holds its LoRA weights only and reloads to the same captions."""
    import dataclasses
    import json

    from safetensors.torch import save_file

    from multi2cap.model.ced import CedConfig, CedEncoder

    config = Multi2CapConfig.tiny(CAPTIONS)
    ced_config = CedConfig(**config.audio.config)
    encoder_state = CedEncoder(ced_config).state_dict()
    (tmp_path / "ced").mkdir()
    save_file(encoder_state, str(tmp_path / "ced" / "model.safetensors"))
    (tmp_path / "ced" / "config.json").write_text(json.dumps(dataclasses.asdict(ced_config)))
    audio = config.audio.model_copy(update={"source": str(tmp_path / "ced"), "config": None})
    model = Multi2Cap(config.model_copy(update={"audio": audio}))
    torch.testing.assert_close(
        model.audio_encoder.patch_embed.state_dict(),
        {k.removeprefix("patch_embed."): v for k, v in encoder_state.items() if "patch_embed" in k},
    )
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model(make_batch(4, MIXED), "pretrain").loss.backward()
    optimizer.step()
    folder = model.save_pretrained(tmp_path / "ckpt")
    assert not any(k.startswith("audio_encoder.") for k in load_file(folder / BACKBONES_FILE))
    assert any(k.startswith("audio_encoder.") for k in load_file(folder / TRAINABLE_FILE))
    waves = make_batch(4, MIXED)["audio"]
    model.eval()
    assert Multi2Cap.from_pretrained(folder).caption(waves, MIXED) == model.caption(waves, MIXED)


def test_long_audio_is_captioned_whole_and_independently_of_the_batch() -> None:
    model = tiny()
    long_wave = torch.sin(torch.arange(25 * 16000) * 0.05) * 0.3  # 25 s: three CED chunks
    short_wave = make_batch(1)["audio"][0]
    _, mask = model.encode_audio(long_wave.unsqueeze(0), torch.tensor([25 * 16000]))
    frames = 25 * 16000 // 160 + 1  # 2501 frames in chunks of 1012, 16 frames per token
    assert mask.sum().item() == 1012 // 16 * 2 + (frames - 2 * 1012) // 16 == 155
    together = model.caption([short_wave, long_wave], num_beams=1, batch_size=2)
    assert together == [model.caption(short_wave)[0], model.caption(long_wave)[0]]


@pytest.mark.parametrize(
    ("overrides", "stage", "images"),
    [
        ({}, "pretrain", True),
        ({"pretrain_adapter_input": "g_hat"}, "pretrain", True),
        ({}, "finetune", False),
        ({"freeze_vfr_in_finetune": False}, "finetune", False),
        ({"grounding": False}, "pretrain", False),
    ],
)
def test_every_trainable_parameter_is_used_so_ddp_needs_no_unused_search(
    overrides: dict, stage: str, images: bool
) -> None:
    model = tiny(**overrides)
    model.set_stage(stage)
    model(make_batch(2, images=images), stage).loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_missing_backbones_name_the_config_field_and_the_fix(tmp_path) -> None:
    from multi2cap.assets import AssetNotFoundError

    config = Multi2CapConfig.tiny(CAPTIONS)
    missing = str(tmp_path / "no-such-model")
    llm = config.llm.model_copy(update={"source": missing, "config": None, "tokenizer": None})
    # A local folder: the fix is a folder (`hf download /a/local/path` would make no sense).
    with pytest.raises(AssetNotFoundError, match=r"local folder .*llm\.source.*--backbone llm=DIR"):
        Multi2Cap(config.model_copy(update={"llm": llm}))
    with pytest.raises(AssetNotFoundError) as info:
        Multi2Cap(config.model_copy(update={"llm": llm}))
    assert "hf download" not in str(info.value)
    # A hub id that is not cached (offline): download it once.
    hub_llm = llm.model_copy(update={"source": "multi2cap-tests/no-such-llm"})
    with pytest.raises(AssetNotFoundError, match=r"llm\.source.*hf download multi2cap-tests"):
        Multi2Cap(config.model_copy(update={"llm": hub_llm}))
    vision = config.vision.model_copy(update={"source": missing, "config": None})
    with pytest.raises(AssetNotFoundError, match=r"vision\.source"):
        Multi2Cap(config.model_copy(update={"vision": vision}))


def test_shard_units_are_the_backbones_blocks(tmp_path) -> None:
    model = tiny()
    kinds = [type(unit).__name__ for unit in model.shard_units()]
    depth = model.config.llm.config["num_hidden_layers"]
    assert kinds.count("CedBlock") == len(model.audio_encoder.blocks)
    assert kinds.count("LlamaDecoderLayer") == depth
    assert kinds.count("CLIPEncoderLayer") == model.vision.model.config.num_hidden_layers
    assert set(kinds) == {"CedBlock", "LlamaDecoderLayer", "CLIPEncoderLayer"}
    # With a feature cache some processes may skip CLIP: its layers stay in the root unit.
    config = Multi2CapConfig.tiny(CAPTIONS)
    config.vision = config.vision.model_copy(update={"feature_cache": str(tmp_path / "cache")})
    cached = Multi2Cap(config)
    assert "CLIPEncoderLayer" not in {type(unit).__name__ for unit in cached.shard_units()}


def test_adapter_pool_averages_each_clips_own_valid_tokens() -> None:
    from multi2cap.model.adapter import pool_tokens

    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).view(2, 7, 3)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    pooled, pooled_mask = pool_tokens(tokens, mask, 3)
    assert pooled.shape == (2, 3, 3)
    assert pooled_mask.tolist() == [[True, True, True], [True, True, False]]
    assert torch.equal(pooled[0, 0], tokens[0, :3].mean(0))
    assert torch.equal(pooled[0, 2], tokens[0, 6])  # the short last group: its one token
    assert torch.equal(pooled[1, 1], tokens[1, 3])  # only the valid token of the group counts
    # Padding with other values changes nothing.
    noisy = tokens.clone()
    noisy[1, 4:] = 1e6
    assert torch.equal(pool_tokens(noisy, mask, 3)[0][1, :2], pooled[1, :2])


def test_adapter_pool_shortens_the_prefix_and_keeps_batched_captions() -> None:
    model = tiny(adapter_pool=2)
    batch = make_batch(4, MIXED)
    full = tiny()
    pooled_prefix, _ = model.audio_prefix(batch["audio"], batch["audio_lengths"])
    full_prefix, _ = full.audio_prefix(batch["audio"], batch["audio_lengths"])
    k = model.config.k
    assert pooled_prefix.shape[1] - k == math.ceil((full_prefix.shape[1] - k) / 2)
    waves = [batch["audio"][i, :n] for i, n in enumerate(MIXED)]
    assert model.caption(waves, batch_size=4) == [model.caption(w)[0] for w in waves]
