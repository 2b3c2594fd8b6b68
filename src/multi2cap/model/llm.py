"""The LLM decoder: any HF causal LM with LoRA, fed `prompt + prefix + caption` as embeddings.

Sequence layout per sample (no padding inside a sample):
`[left ids] [prefix tokens] [right ids] [caption ids] [end ids]`, where the ids around the prefix
and after the caption come from `multi2cap.model.prompt` (`llm.prompt_format`): in `plain`
format the prompt split at `<audio>` (BOS if the tokenizer adds one) and EOS; in `chat` format
the tokenizer's chat template, the caption as the assistant's answer and its end-of-turn
token(s). Labels cover the caption and the end ids. Training pads on the right, generation on
the left; attention masks and labels come from lengths, never from the pad id (Llama 3 / Qwen /
SmolLM2 use EOS as pad, and masking by pad id would hide the EOS target so the model never
learns to stop).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from peft import LoraConfig, inject_adapter_in_model
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from multi2cap.model.config import SPECIAL_TOKENS, LlmDtype, LlmSpec, TokenizerSpec
from multi2cap.model.hub import hub_asset
from multi2cap.model.prompt import PromptLayout, prompt_layout

IGNORE_INDEX = -100
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def word_level_tokenizer(spec: TokenizerSpec) -> PreTrainedTokenizerFast:
    """In-memory word-level tokenizer (see `TokenizerSpec`); adds `<s>` like Llama's does."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in spec.words:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def _cuda_has_bf16() -> bool:
    """Whether a CUDA device with bfloat16 support is present (the `auto` dtype's only probe)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_llm_dtype(name: LlmDtype, device: str | torch.device | None = None) -> torch.dtype:
    """The decoder's weight dtype for `llm.dtype` on `device`, the device the model runs on
    (None: torch's default device, where it is built: the CPU unless a `with torch.device(..)`
    block says otherwise). `auto`: bfloat16 on a bf16-capable CUDA device (half the memory of
    a 3-8B decoder, autocast runs in bf16 there anyway), float32 elsewhere (CPU bf16 matmuls
    are slow and gain nothing), so `multi2cap caption --device cpu` loads fp32 on a GPU machine
    too. Resolved when the model is built, so one checkpoint (which keeps `auto`) loads in
    bf16 for a GPU and in fp32 for a CPU."""
    if name == "auto":
        target = torch.device(device) if device is not None else torch.get_default_device()
        return torch.bfloat16 if target.type == "cuda" and _cuda_has_bf16() else torch.float32
    return _DTYPES[name]


def build_causal_lm(spec: LlmSpec, device: str | torch.device | None = None) -> PreTrainedModel:
    """Pretrained weights from `spec.source`, or random weights from the inline config, in the
    dtype `llm.dtype` gives for `device` (`resolve_llm_dtype`)."""
    dtype = resolve_llm_dtype(spec.dtype, device)
    if spec.source is not None:
        with hub_asset("LLM", "llm.source", spec.source):
            return AutoModelForCausalLM.from_pretrained(spec.source, dtype=dtype)
    assert spec.family is not None and spec.config is not None
    config = AutoConfig.for_model(spec.family, **spec.config)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def build_tokenizer(spec: LlmSpec, tokenizer_dir: Path | None = None) -> PreTrainedTokenizerBase:
    """A saved tokenizer folder wins; then the backbone's own; then the in-memory spec."""
    if tokenizer_dir is not None:
        return AutoTokenizer.from_pretrained(tokenizer_dir)
    if spec.source is not None:
        with hub_asset("tokenizer of the LLM", "llm.source", spec.source):
            return AutoTokenizer.from_pretrained(spec.source)
    assert spec.tokenizer is not None
    return word_level_tokenizer(spec.tokenizer)


@dataclass(frozen=True)
class Sampling:
    """Ancestral sampling settings for `CaptionDecoder.generate` (candidates for re-ranking).

    `temperature` divides the logits, `top_p` keeps the smallest set of tokens whose
    probability reaches it (1.0 = all). `seed` seeds torch's generator for the call (the
    global generator is restored after it), so a call with the same batch gives the same
    samples; the draws of one prefix depend on the other prefixes of its batch."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"sampling needs temperature > 0 and 0 < top_p <= 1, found "
                f"temperature={self.temperature}, top_p={self.top_p}"
            )


@contextmanager
def _seeded(sampling: Sampling | None) -> Iterator[None]:
    """torch's generators seeded with `sampling.seed` inside the block, restored after; nothing
    changes without sampling."""
    if sampling is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(sampling.seed)
        yield


@dataclass
class DecoderInputs:
    """`embeds (B, L, D)`, `attention_mask (B, L)` long, `labels (B, L)` or None."""

    embeds: Tensor
    attention_mask: Tensor
    labels: Tensor | None


class CaptionDecoder(nn.Module):
    """A causal LM (frozen, LoRA-tuned when enabled) with the prompt/prefix/caption assembly.
    `device`: the device it will run on, for `llm.dtype: auto` (`resolve_llm_dtype`)."""

    def __init__(
        self,
        spec: LlmSpec,
        prompt: str,
        max_caption_tokens: int,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.model = build_causal_lm(spec, device)
        self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(spec)
        self.layout: PromptLayout = prompt_layout(
            self.tokenizer,
            prompt,
            spec.prompt_format,
            spec.system_prompt,
            name=repr(spec.source or spec.family),
        )
        self.max_caption_tokens = max_caption_tokens
        self.model.requires_grad_(False)
        if spec.lora.enabled:
            targets = spec.lora.targets or ["q_proj", "k_proj", "v_proj", "o_proj"]
            lora = LoraConfig(
                r=spec.lora.r,
                lora_alpha=spec.lora.alpha,
                lora_dropout=spec.lora.dropout,
                target_modules=targets,
            )
            inject_adapter_in_model(lora, self.model)
            for name, param in self.model.named_parameters():
                param.requires_grad_("lora_" in name)
        for buffer in ("left", "right", "end"):
            ids = torch.tensor(getattr(self.layout, buffer), dtype=torch.long)
            self.register_buffer(f"{buffer}_ids", ids, persistent=False)

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def embed_dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def lora_state_keys(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters() if "lora_" in name]

    def caption_ids(self, captions: list[str]) -> list[Tensor]:
        """Caption token ids + the end ids (EOS, or the chat template's end of turn), truncated
        to `max_caption_tokens` in all (the end ids always kept)."""
        end = self.layout.end
        keep = max(self.max_caption_tokens - len(end), 0)
        encoded = self.tokenizer(captions, add_special_tokens=False)["input_ids"]
        return [torch.tensor([*ids[:keep], *end], dtype=torch.long) for ids in encoded]

    def assemble(
        self, prefix: Tensor, prefix_mask: Tensor, captions: list[str] | None = None
    ) -> DecoderInputs:
        """Embeddings for the LLM. `prefix (B, P, D)`, `prefix_mask (B, P)` True=valid with the
        valid tokens first. With captions: right padding + labels; without: left padding."""
        embed = self.model.get_input_embeddings()
        device = prefix.device
        prefix = prefix.to(self.embed_dtype)
        left = embed(self.left_ids.to(device))
        right = embed(self.right_ids.to(device))
        caps = self.caption_ids(captions) if captions is not None else None
        pieces: list[Tensor] = []
        label_rows: list[Tensor] = []
        for b, n_valid in enumerate(prefix_mask.sum(dim=1).tolist()):
            parts = [left, prefix[b, :n_valid], right]
            context = left.shape[0] + n_valid + right.shape[0]
            if caps is not None:
                ids = caps[b].to(device)
                parts.append(embed(ids))
                ignore = torch.full((context,), IGNORE_INDEX, dtype=torch.long, device=device)
                label_rows.append(torch.cat([ignore, ids]))
            pieces.append(torch.cat(parts))
        lengths = [p.shape[0] for p in pieces]
        width = max(lengths)
        batch = len(pieces)
        embeds = prefix.new_zeros(batch, width, prefix.shape[-1])
        mask = torch.zeros(batch, width, dtype=torch.long, device=device)
        labels = (
            torch.full((batch, width), IGNORE_INDEX, dtype=torch.long, device=device)
            if caps is not None
            else None
        )
        for b, (piece, n) in enumerate(zip(pieces, lengths, strict=True)):
            span = slice(0, n) if caps is not None else slice(width - n, width)
            embeds[b, span] = piece
            mask[b, span] = 1
            if labels is not None:
                labels[b, span] = label_rows[b]
        return DecoderInputs(embeds, mask, labels)

    def loss(self, prefix: Tensor, prefix_mask: Tensor, captions: list[str]) -> Tensor:
        """Token-mean cross-entropy of caption + end ids given prompt and prefix (L_cap)."""
        inputs = self.assemble(prefix, prefix_mask, captions)
        out = self.model(
            inputs_embeds=inputs.embeds,
            attention_mask=inputs.attention_mask,
            labels=inputs.labels,
            use_cache=False,
        )
        return out.loss

    def sequence_logprobs(
        self, prefix: Tensor, prefix_mask: Tensor, captions: list[str]
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced log-probability of each caption given prompt and prefix: the sum over
        its tokens and EOS (the tokens L_cap trains, truncated alike) of log p(token | before),
        float32 `(B,)`, and their counts `(B,)` long. What DPO compares between the policy and
        the reference model; log-softmax is taken on the caption positions only."""
        inputs = self.assemble(prefix, prefix_mask, captions)
        assert inputs.labels is not None
        logits = self.model(
            inputs_embeds=inputs.embeds, attention_mask=inputs.attention_mask, use_cache=False
        ).logits
        targets = inputs.labels[:, 1:]
        rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
        picked = torch.log_softmax(logits[:, :-1][rows, cols].float(), dim=-1)
        token_logp = picked.gather(1, targets[rows, cols].unsqueeze(1)).squeeze(1)
        batch = targets.shape[0]
        total = token_logp.new_zeros(batch).index_add(0, rows, token_logp)
        counts = torch.bincount(rows, minlength=batch)
        return total, counts

    @torch.no_grad()
    def generate(
        self,
        prefix: Tensor,
        prefix_mask: Tensor,
        *,
        num_beams: int,
        max_new_tokens: int,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        num_return_sequences: int = 1,
        sampling: Sampling | None = None,
    ) -> list[str]:
        """Greedy (`num_beams=1`) or beam-search captions for a batch of prefixes.

        `num_return_sequences` (<= `num_beams`) captions per prefix come back grouped by prefix,
        each group best beam first: `B * num_return_sequences` strings. With `sampling`, the
        captions are drawn instead (`num_beams` is then ignored; see `Sampling`).

        Decoding uses exactly these settings: the backbone's own `generation_config` (sampling,
        repetition penalty, extra stop ids of chat checkpoints) is set aside during the call.
        Generation stops at the token captions were trained to end with: the tokenizer's EOS, or
        in chat format the template's end-of-turn token (and EOS).
        When FSDP shards the LLM's layers, every process keeps stepping until all have finished
        (`synced_gpus`), because each step gathers the layers' weights from all of them.
        `no_repeat_ngram_size` constrains the generated tokens only, not the prompt.
        The first generated token cannot be EOS, pad or another special token (decoding drops
        them), so no caption comes back empty (`NoEmptyStart`)."""
        inputs = self.assemble(prefix, prefix_mask)
        pad = self.tokenizer.pad_token_id
        if sampling is None and not 1 <= num_return_sequences <= num_beams:
            raise ValueError(
                f"num_return_sequences must be 1..num_beams ({num_beams}), "
                f"found {num_return_sequences}"
            )
        search: dict[str, Any] = (
            dict(do_sample=False, num_beams=num_beams, length_penalty=length_penalty)
            if sampling is None
            else dict(
                do_sample=True,
                num_beams=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=0,  # top_p alone decides (GenerationConfig's default top_k is 50)
            )
        )
        stop = self.layout.stop
        settings = GenerationConfig(
            **search,
            num_return_sequences=num_return_sequences,
            max_new_tokens=max_new_tokens,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=1.0,
            eos_token_id=stop if len(stop) > 1 else stop[0],
            pad_token_id=pad if pad is not None else stop[0],
        )
        backbone_settings = self.model.generation_config
        self.model.generation_config = settings
        try:
            with warnings.catch_warnings(), _seeded(sampling):
                # The n-gram block applying to generated tokens only is what we want.
                warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size`")
                out = self.model.generate(
                    inputs_embeds=inputs.embeds,
                    attention_mask=inputs.attention_mask,
                    generation_config=settings,
                    logits_processor=LogitsProcessorList([NoEmptyStart(self._special_ids())]),
                    synced_gpus=_sharded_across_processes(self.model),
                )
        finally:
            self.model.generation_config = backbone_settings
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def _special_ids(self) -> list[int]:
        """EOS, pad and every other special id of the tokenizer (what decoding skips)."""
        ids = {*self.tokenizer.all_special_ids, self.tokenizer.eos_token_id}
        if self.tokenizer.pad_token_id is not None:
            ids.add(self.tokenizer.pad_token_id)
        return sorted(ids)


class NoEmptyStart(LogitsProcessor):
    """Masks `banned` token ids at the first decoding step of a `generate` call (one instance
    per call: the first call it sees is that step, whatever the prompt length).

    A caption starting with EOS is empty, and one starting with pad or another special token
    decodes to nothing either (decoding skips them). Early in training EOS, a label of every
    caption, is often the most likely first token. `min_new_tokens=1` would ban EOS alone."""

    def __init__(self, banned: list[int]) -> None:
        self.banned = banned
        self.first = True

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if not self.first:
            return scores
        self.first = False
        scores = scores.clone()
        scores[:, self.banned] = -float("inf")
        return scores


def _sharded_across_processes(module: nn.Module) -> bool:
    """True when some parameter is an FSDP shard of a multi-process group (its forward then
    gathers from the other processes)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    return any(isinstance(p, DTensor) for p in module.parameters())
