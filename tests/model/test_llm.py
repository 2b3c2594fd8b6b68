from __future__ import annotations

import pytest
import torch
from multi2cap_testkit import CAPTIONS

from multi2cap.model.config import LlmSpec, Multi2CapConfig, TokenizerSpec
from multi2cap.model.llm import IGNORE_INDEX, CaptionDecoder, word_level_tokenizer


def _decoder(family: str = "llama", prompt: str | None = None, **kw) -> CaptionDecoder:
    config = Multi2CapConfig.tiny(CAPTIONS, llm_family=family)
    return CaptionDecoder(config.llm, prompt or config.prompt, config.max_caption_tokens, **kw)


def _prefix(lengths: list[int], width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(lengths)
    prefix = torch.randn(len(lengths), longest, width, generator=torch.Generator().manual_seed(3))
    mask = torch.arange(longest).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return prefix, mask


def test_prompt_is_split_at_the_audio_placeholder() -> None:
    decoder = _decoder(prompt="describe the sound : <audio> caption :")
    tok = decoder.tokenizer
    assert tok.convert_ids_to_tokens(decoder.left_ids) == ["<s>", "describe", "the", "sound", ":"]
    assert tok.convert_ids_to_tokens(decoder.right_ids) == ["caption", ":"]
    no_placeholder = _decoder(prompt="caption :")
    assert tok.convert_ids_to_tokens(no_placeholder.left_ids) == ["<s>", "caption", ":"]
    assert no_placeholder.right_ids.numel() == 0


def test_training_inputs_are_right_padded_with_caption_only_labels() -> None:
    decoder = _decoder()
    prefix, mask = _prefix([5, 2])
    inputs = decoder.assemble(prefix, mask, ["a dog barks loudly", "a bell"])
    context = decoder.left_ids.numel() + decoder.right_ids.numel()
    eos = decoder.tokenizer.eos_token_id
    dog = decoder.tokenizer("a dog barks loudly", add_special_tokens=False)["input_ids"]
    bell = decoder.tokenizer("a bell", add_special_tokens=False)["input_ids"]
    n0, n1 = context + 5 + len(dog) + 1, context + 2 + len(bell) + 1
    assert inputs.attention_mask.sum(1).tolist() == [n0, n1]
    assert inputs.attention_mask[1, :n1].all() and not inputs.attention_mask[1, n1:].any()
    assert inputs.labels[0, context + 5 :].tolist() == [*dog, eos]
    assert inputs.labels[1, context + 2 : n1].tolist() == [*bell, eos]
    assert (inputs.labels[0, : context + 5] == IGNORE_INDEX).all()
    assert (inputs.labels[1, n1:] == IGNORE_INDEX).all()
    # the prefix's valid tokens sit right after the left prompt, padding tokens are dropped
    start = decoder.left_ids.numel()
    torch.testing.assert_close(inputs.embeds[1, start : start + 2], prefix[1, :2])


def test_generation_inputs_are_left_padded() -> None:
    decoder = _decoder()
    prefix, mask = _prefix([5, 2])
    inputs = decoder.assemble(prefix, mask)
    assert inputs.labels is None
    assert inputs.attention_mask[1, :3].sum() == 0 and inputs.attention_mask[1, 3:].all()
    assert inputs.attention_mask[0].all()


def test_eos_is_a_target_even_when_pad_is_eos() -> None:
    """Llama 3 / Qwen use EOS as pad: labels must come from lengths, not from the pad id."""
    config = Multi2CapConfig.tiny(CAPTIONS)
    tokenizer = word_level_tokenizer(config.llm.tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    decoder = CaptionDecoder(config.llm, config.prompt, 32, tokenizer=tokenizer)
    prefix, mask = _prefix([3, 3])
    labels = decoder.assemble(prefix, mask, ["a bell", "a dog barks loudly"]).labels
    eos = tokenizer.eos_token_id
    assert [(row == eos).sum().item() for row in labels] == [1, 1]


def test_captions_are_truncated_keeping_eos() -> None:
    config = Multi2CapConfig.tiny(CAPTIONS)
    decoder = CaptionDecoder(config.llm, config.prompt, max_caption_tokens=3)
    ids = decoder.caption_ids(["rain falls on a tin roof"])[0]
    assert ids.tolist()[-1] == decoder.tokenizer.eos_token_id and ids.numel() == 3


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_lora_only_trains_adapters_and_loss_is_finite(family: str) -> None:
    decoder = _decoder(family)
    trainable = [n for n, p in decoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    prefix, mask = _prefix([4, 1])
    prefix.requires_grad_(True)
    loss = decoder.loss(prefix, mask, ["a dog barks loudly", "a bell rings twice"])
    assert torch.isfinite(loss)
    loss.backward()
    assert prefix.grad is not None and prefix.grad[0].abs().sum() > 0
    assert prefix.grad[1, 1:].abs().sum() == 0  # padding positions are never read


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_generation_equals_one_by_one(num_beams: int) -> None:
    decoder = _decoder().eval()
    lengths = [6, 1, 3, 4]
    prefix, mask = _prefix(lengths)
    options = dict(num_beams=num_beams, max_new_tokens=8, no_repeat_ngram_size=2)
    batched = decoder.generate(prefix, mask, **options)
    single = [
        decoder.generate(prefix[i : i + 1, :n], mask[i : i + 1, :n], **options)[0]
        for i, n in enumerate(lengths)
    ]
    assert batched == single
    assert len(set(batched)) > 1  # different prefixes, different outputs


def test_no_repeat_ngram_size_is_applied() -> None:
    decoder = _decoder().eval()
    prefix, mask = _prefix([3])
    text = decoder.generate(prefix, mask, num_beams=1, max_new_tokens=20, no_repeat_ngram_size=1)[0]
    words = text.split()
    assert len(words) == len(set(words))


def test_inline_llm_needs_a_tokenizer_spec() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        LlmSpec(source=None, family="llama", config={"hidden_size": 8})
    spec = LlmSpec(
        source=None, family="llama", config={"hidden_size": 8}, tokenizer=TokenizerSpec(words=["x"])
    )
    assert spec.tokenizer.words == ["x"]


def test_backbone_generation_defaults_do_not_leak_into_decoding() -> None:
    """Hub checkpoints ship sampling/penalty defaults; captions follow our settings only."""
    decoder = _decoder().eval()
    prefix, mask = _prefix([4, 2])
    options = dict(num_beams=2, max_new_tokens=8)
    clean = decoder.generate(prefix, mask, **options)
    hub_defaults = decoder.model.generation_config
    hub_defaults.do_sample, hub_defaults.temperature, hub_defaults.top_k = True, 5.0, 3
    hub_defaults.repetition_penalty, hub_defaults.min_new_tokens = 10.0, 7
    assert decoder.generate(prefix, mask, **options) == clean
    assert decoder.model.generation_config is hub_defaults  # put back after the call


@pytest.mark.parametrize("num_beams", [1, 3])
def test_no_empty_caption_from_a_decoder_that_wants_to_stop_at_once(num_beams: int) -> None:
    """A decoder whose strongest logits are EOS, then pad, then BOS: decoding from it would
    stop at once (""), or emit only tokens decoding drops. The first token must be a word; EOS
    may (and here does) follow right after."""
    decoder = _decoder().eval()
    tok = decoder.tokenizer
    bias = torch.zeros(len(tok))
    bias[[tok.eos_token_id, tok.pad_token_id, tok.bos_token_id]] = torch.tensor([60.0, 50.0, 40.0])
    decoder.model.lm_head.register_forward_hook(lambda _m, _i, out: out + bias)
    prefix, mask = _prefix([5, 2])
    captions = decoder.generate(prefix, mask, num_beams=num_beams, max_new_tokens=6)
    assert all(captions), captions
    assert all(len(c.split()) == 1 for c in captions), captions  # then EOS, as the bias wants
    assert all(w in decoder.spec.tokenizer.words for c in captions for w in c.split())
