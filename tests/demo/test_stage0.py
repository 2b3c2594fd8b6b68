"""Stage 0: backbones trained on their own modality and saved as folders the model loads by path."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from multi2cap.demo import stage0
from multi2cap.model.ced import CedConfig, CedEncoder, load_ced, save_ced


def test_save_ced_writes_a_folder_load_ced_reads_back_exactly(tmp_path):
    torch.manual_seed(0)
    encoder = CedEncoder(CedConfig(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0))
    with torch.no_grad():
        encoder.init_bn.running_mean.fill_(-20.0)
        encoder.init_bn.running_var.fill_(150.0)
    folder = save_ced(encoder.eval(), tmp_path / "ced")
    loaded = load_ced(folder)
    assert loaded.config == encoder.config
    waves = torch.randn(2, 16_000) * 0.1
    lengths = torch.tensor([16_000, 12_000])
    expected, mask = encoder(waves, lengths)
    got, got_mask = loaded(waves, lengths)
    assert torch.equal(mask, got_mask) and torch.allclose(expected, got)


def test_save_ced_refuses_an_encoder_with_lora(tmp_path):
    from multi2cap.model.ced import apply_lora

    encoder = apply_lora(CedEncoder(CedConfig(embed_dim=32, depth=1, num_heads=2)), r=2)
    with pytest.raises(ValueError, match="LoRA"):
        save_ced(encoder, tmp_path / "ced")


@pytest.fixture(scope="module")
def two_sources(tuxpaint_dir, tmp_path_factory):
    """1-s clips holding a dog, a cow, both or neither (real recordings), with their labels."""
    from multi2cap.media.audio import load_audio

    out = tmp_path_factory.mktemp("clips")
    dog = load_audio(tuxpaint_dir / "animals/mammals/dogs/dog.ogg")[:16_000]
    cow = load_audio(tuxpaint_dir / "animals/mammals/bovines/cow.ogg")[:16_000]
    rng = np.random.default_rng(0)
    paths, targets = [], []
    for i in range(48):
        has = (i % 4) in (1, 3), (i % 4) in (2, 3)
        wave = rng.standard_normal(16_000).astype(np.float32) * 1e-3
        for present, source in zip(has, (dog, cow), strict=True):
            if present:
                wave[: len(source)] += 0.5 * source / np.abs(source).max()
        path = out / f"clip_{i:02d}.wav"
        soundfile.write(path, wave, 16_000)
        paths.append(str(path))
        targets.append([float(h) for h in has])
    return stage0.TaggingSet(paths, torch.tensor(targets), ["dog", "cow"])


def test_the_audio_tagger_learns_and_its_folder_loads_as_a_ced_backbone(two_sources, tmp_path):
    config = stage0.Stage0Config(
        audio_width=32, audio_depth=1, audio_heads=2, audio_epochs=16, audio_batch=8
    )
    out = tmp_path / "audio"
    done = stage0.pretrain_audio(two_sources, config, out)
    assert stage0.finished(out) == done and done["steps"] == 16 * 6
    rows = (out / stage0.LOG_FILE).read_text().splitlines()
    assert rows[0] == "step,total,loss" and len(rows) == 1 + done["steps"]
    probs = stage0.audio_tagger_predictions(out, two_sources.paths)
    accuracy = ((probs > 0.5).float() == two_sources.targets).float().mean()
    assert accuracy > 0.9, probs
    # The folder is an ordinary CED backbone: the model loads it by path, frozen, with LoRA.
    from multi2cap.model.config import AudioEncoderSpec
    from multi2cap.model.multi2cap import build_audio_encoder

    encoder = build_audio_encoder(AudioEncoderSpec(source=str(out)))
    assert encoder.config.embed_dim == 32
    assert all(("lora_" in n) == p.requires_grad for n, p in encoder.named_parameters())
    # The input normaliser holds the training clips' statistics, not BatchNorm's defaults.
    assert encoder.init_bn.running_mean.abs().sum() > 0


def test_vision_and_language_backbones_load_by_path_into_multi2cap(tmp_path):
    from multi2cap.model.config import LlmSpec, Multi2CapConfig, VisionEncoderSpec
    from multi2cap.model.multi2cap import Multi2Cap

    rng = np.random.default_rng(0)
    frames, targets = [], []
    for i in range(16):
        colour = (255, 0, 0) if i % 2 else (0, 0, 255)
        path = tmp_path / f"frame_{i}.png"
        pixels = np.full((60, 80, 3), colour, np.uint8) + rng.integers(0, 20, (60, 80, 3), np.uint8)
        Image.fromarray(pixels).save(path)
        frames.append(str(path))
        targets.append([float(i % 2), float(1 - i % 2)])
    config = stage0.Stage0Config(
        vision_image_size=32,
        vision_width=32,
        vision_epochs=2,
        vision_batch=8,
        llm_epochs=3,
        llm_batch=4,
    )
    stage0.pretrain_vision(
        stage0.TaggingSet(frames, torch.tensor(targets), ["r", "b"]), config, tmp_path / "vision"
    )
    texts = ["A dog barks.", "A cow moos.", "A dog barks and a cow moos."] * 4
    prompt = "Describe the sound. Audio: <audio> Caption:"
    done = stage0.pretrain_llm(stage0.LmCorpus(texts), prompt, config, tmp_path / "llm")
    first, last = (
        float(r.split(",")[2])
        for r in (tmp_path / "llm" / stage0.LOG_FILE).read_text().splitlines()[1::8]
    )
    assert last < first
    assert done["vocab"] == len(
        {
            "describe",
            "the",
            "sound",
            ".",
            "audio",
            ":",
            "caption",
            "a",
            "dog",
            "barks",
            "cow",
            "moos",
            "and",
        }
    )

    model_config = Multi2CapConfig.tiny(prompt=prompt).model_copy(
        update={
            "vision": VisionEncoderSpec(source=str(tmp_path / "vision")),
            "llm": LlmSpec(source=str(tmp_path / "llm")),
        }
    )
    model = Multi2Cap(model_config)
    # The tokenizer is the folder's own: the word-level vocabulary of the training text.
    ids = model.decoder.tokenizer("a dog barks", add_special_tokens=True)["input_ids"]
    assert ids[0] == model.decoder.tokenizer.bos_token_id and 3 not in ids  # no <unk>
    assert model.vision.image_size == 32
    saved = model.save_pretrained(tmp_path / "checkpoint")
    # Backbones loaded by path are not copied into the checkpoint (only the audio one, inline here).
    from safetensors.torch import load_file

    inline = load_file(saved / "backbones.safetensors")
    assert not any(k.startswith(("vision.", "decoder.model.")) for k in inline)
    again = Multi2Cap.from_pretrained(saved)
    assert again.caption([np.zeros(16_000, np.float32)], max_new_tokens=3)


def test_a_tag_transcript_names_a_sounding_source_per_time_token():
    on = torch.zeros(2, 6, 3, dtype=torch.bool)
    on[0, 1:3, 0] = True  # source 0 in tokens 1-2
    on[0, 2:5, 2] = True  # source 2 in tokens 2-4, overlapping source 0 in token 2
    generator = torch.Generator().manual_seed(0)
    tags = stage0.tag_transcripts(on, generator, noise=0.0)
    assert tags.shape == (2, 6)
    assert tags[0].tolist()[:2] == [3, 0] and tags[0].tolist()[3:] == [2, 2, 3]
    assert tags[1].tolist() == [3] * 6  # nothing sounds: the quiet tag throughout
    overlap = {int(stage0.tag_transcripts(on, generator, 0.0)[0, 2]) for _ in range(40)}
    assert overlap == {0, 2}  # either overlapping source, drawn afresh each time
    noisy = torch.cat([stage0.tag_transcripts(on, generator, 0.5) for _ in range(50)])
    assert int(noisy.min()) >= 0 and int(noisy.max()) <= 3
    assert (noisy[1::2] != 3).float().mean() > 0.2  # noise reaches quiet tokens too


def test_the_language_model_writes_about_what_its_audio_slot_names(tmp_path):
    """The stage-0 LM is conditioned on its clip's tag transcript: the same prompt with a dog
    in the slot gives a dog caption, with a cow a cow caption (a plain caption LM cannot)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    captions = ["A dog barks.", "A cow moos.", "A dog barks and a cow moos."]
    strong = torch.zeros(3, 8, 2)
    strong[0, 1:4, 0] = strong[1, 2:6, 1] = 1.0
    strong[2, 0:3, 0] = strong[2, 4:8, 1] = 1.0
    corpus = stage0.LmCorpus(
        captions=captions * 16, keys=["dog", "cow"], token_targets=strong, clip_of=[0, 1, 2] * 16
    )
    config = stage0.Stage0Config(llm_width=32, llm_epochs=12, llm_batch=8, llm_tag_noise=0.0)
    prompt = "Describe the sound. Audio: <audio> Caption:"
    stage0.pretrain_llm(corpus, prompt, config, tmp_path / "llm")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "llm")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "llm").eval()
    assert stage0.QUIET_TAG in tokenizer.get_vocab()

    def caption(slot: list[str]) -> str:
        text = "Describe the sound. Audio: " + " ".join(slot) + " Caption:"
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    quiet = stage0.QUIET_TAG
    # A rerun reuses the folder only under the same settings of this trainer.
    import dataclasses
    import json

    out = tmp_path / "llm"
    assert stage0.finished(out, config, "llm") is not None
    assert stage0.finished(out, dataclasses.replace(config, audio_epochs=1), "llm") is not None
    assert stage0.finished(out, dataclasses.replace(config, llm_epochs=13), "llm") is None
    assert stage0.finished(out, dataclasses.replace(config, seed=1), "llm") is None
    older = json.loads((out / stage0.DONE_FILE).read_text())
    del older["settings"]  # a folder written by the first demo design (0.2.0)
    (out / stage0.DONE_FILE).write_text(json.dumps(older))
    assert stage0.finished(out, config, "llm") is None and stage0.finished(out) == older
    assert caption([quiet, "dog", "dog", "dog", quiet, quiet, quiet, quiet]) == "a dog barks ."
    assert caption([quiet, quiet, "cow", "cow", "cow", "cow", quiet, quiet]) == "a cow moos ."
    assert "cow" in caption(["dog", "dog", "dog", quiet, "cow", "cow", "cow", "cow"])
