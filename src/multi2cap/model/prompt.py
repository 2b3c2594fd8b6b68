"""The decoder's text around the prefix and the caption (`model.llm.prompt_format`).

Each sample is laid out as `[left ids] [prefix] [right ids] [caption ids] [end ids]`, with the
labels on the caption and the end ids only (`multi2cap.model.llm.CaptionDecoder.assemble`).
This module decides the four id lists from the tokenizer, the prompt and the format:

- `plain`: `left` is the prompt before `<audio>` with the tokenizer's special tokens (BOS for
  Llama/Mistral, none for Qwen), `right` the rest without; `end` is the tokenizer's EOS.
  Decoding stops at EOS. (The layout of every checkpoint written before `chat` existed.)
- `chat`: the tokenizer's chat template renders `[system (optional)] user: prompt, assistant:
  caption`; the audio slot sits where `<audio>` stands in the user turn (at its end when the
  prompt has none). `left` is the rendered text up to the slot, `right` from the slot to the
  start of the assistant's answer (the user turn's end and the assistant header), `end` the
  template's text after the answer with trailing whitespace cut (`<|im_end|>` for ChatML,
  `<|eot_id|>` for Llama 3). Every piece is tokenised without added special tokens: the
  template writes BOS itself where the model expects it, so no BOS is doubled. Decoding stops
  at the special tokens of `end` (and at EOS).

Why split the rendered text rather than tokenise the chat in one go: the prefix is a run of
embeddings, not text, so the ids on either side of it must be known separately; the pieces are
tokenised exactly as training and decoding see them, so the two never differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from multi2cap.model.config import AUDIO_PLACEHOLDER, PromptFormat

# Markers rendered into the template in place of the audio slot and the caption, then split on.
# Control characters and no spaces: no template trims, escapes or merges them.
_AUDIO_MARK = "\x00AUDIO\x00"
_CAPTION_MARK = "\x00CAPTION\x00"


class PromptFormatError(ValueError):
    """The tokenizer cannot lay out the prompt in the requested format (no chat template, or a
    template whose answer is not closed by a special token to stop at)."""


@dataclass(frozen=True)
class PromptLayout:
    """Token ids around each sample's prefix and caption (see the module docstring).

    `left`, `right`: the context before and after the prefix; `end`: appended to every caption,
    label targets like the caption; `stop`: ids that end decoding (the special ids of `end`,
    and EOS)."""

    left: list[int]
    right: list[int]
    end: list[int]
    stop: list[int]


def prompt_layout(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    prompt_format: PromptFormat = "plain",
    system_prompt: str | None = None,
    *,
    name: str = "the LLM",
) -> PromptLayout:
    """The `PromptLayout` of `prompt` (with at most one `<audio>`) for `tokenizer`.
    `name` is the backbone as errors should call it (its `llm.source`)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise PromptFormatError(f"tokenizer of {name} has no EOS token")
    if prompt_format == "plain":
        left, _, right = prompt.partition(AUDIO_PLACEHOLDER)
        return PromptLayout(
            left=_ids(tokenizer, left.strip(), special=True),
            right=_ids(tokenizer, right.strip(), special=False),
            end=[eos],
            stop=[eos],
        )
    if prompt_format != "chat":
        raise PromptFormatError(f"llm.prompt_format must be plain or chat, found {prompt_format!r}")
    return _chat_layout(tokenizer, prompt, system_prompt, name)


def _chat_layout(
    tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None, name: str
) -> PromptLayout:
    if not getattr(tokenizer, "chat_template", None):
        raise PromptFormatError(
            f"llm.prompt_format is chat, but the tokenizer of {name} has no chat template "
            "(a base model rather than an instruct one?): use llm.prompt_format: plain"
        )
    if AUDIO_PLACEHOLDER in prompt:
        user = prompt.replace(AUDIO_PLACEHOLDER, _AUDIO_MARK)
    else:
        user = f"{prompt.rstrip()} {_AUDIO_MARK}".lstrip()
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": _CAPTION_MARK}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as err:  # jinja raises its own errors (e.g. a template without system role)
        raise PromptFormatError(
            f"the chat template of {name} could not render the prompt: {type(err).__name__}: {err}"
        ) from err
    assert isinstance(text, str)
    if text.count(_AUDIO_MARK) != 1 or text.count(_CAPTION_MARK) != 1:
        raise PromptFormatError(
            f"the chat template of {name} does not render the user turn and the answer verbatim "
            "(the audio slot or the caption was dropped or repeated): use llm.prompt_format: plain"
        )
    before_audio, after_audio = text.split(_AUDIO_MARK)
    between, after_caption = after_audio.split(_CAPTION_MARK)
    end_text = after_caption.rstrip()
    end = _ids(tokenizer, end_text, special=False)
    specials = set(tokenizer.all_special_ids)
    stop = [i for i in end if i in specials]
    if not stop:
        raise PromptFormatError(
            f"the chat template of {name} closes the answer with {end_text!r}, which holds no "
            "special token for decoding to stop at: use llm.prompt_format: plain"
        )
    return PromptLayout(
        # The space before the slot would be a token of its own: the prefix stands in its place.
        left=_ids(tokenizer, before_audio.rstrip(" "), special=False),
        right=_ids(tokenizer, between, special=False),
        end=end,
        stop=sorted({*stop, int(tokenizer.eos_token_id)}),
    )


def _ids(tokenizer: PreTrainedTokenizerBase, text: str, *, special: bool) -> list[int]:
    """Token ids of `text`; with `special`, the tokenizer's own added tokens (BOS) even for an
    empty text."""
    if not text and not special:
        return []
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])
