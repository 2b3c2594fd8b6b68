"""Multi2Cap (paper section 4): CED + AV-Grounding + VFR + Ground Adapter + LLM decoder.

Pre-training (`stage="pretrain"`, needs images): L = L_cap + alpha L_align + beta L_vfr, the
adapter fed with g (or g_hat / a mix, `pretrain_adapter_input`). Fine-tuning and inference
(`stage="finetune"`, audio only): L = L_cap with g_hat from the VFR. With `grounding: false` the
model is the audio-only baseline: prefix = audio tokens, L = L_cap in both stages. The grounding
and the VFR follow `grounding.pool` (`space` or `time`, `multi2cap.model.grounding`).

The checkpoint folder (`save_pretrained` / `from_pretrained`) is `multi2cap.model.checkpoint`;
the trainer's per-step loss shares (`StepShare`, `AlignCache`) are `multi2cap.model.step_share`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule
from transformers import CLIPVisionConfig, PreTrainedTokenizerBase

from multi2cap.media.audio import SAMPLE_RATE
from multi2cap.model.adapter import GroundAdapter
from multi2cap.model.audio_input import AudioInput, as_waves
from multi2cap.model.ced import CedConfig, CedEncoder, apply_lora, load_ced
from multi2cap.model.checkpoint import can_train, load_checkpoint, save_checkpoint
from multi2cap.model.config import (
    STAGES,
    AudioEncoderSpec,
    Multi2CapConfig,
    Stage,
    VfrReduction,
    VisionEncoderSpec,
)
from multi2cap.model.grounding import AlignmentLoss, AVGrounding, masked_mean
from multi2cap.model.hf_audio import HfAudioEncoder, build_hf_encoder
from multi2cap.model.hub import hub_asset
from multi2cap.model.llm import CaptionDecoder, Sampling
from multi2cap.model.step_share import AlignCache, StepShare
from multi2cap.model.vfr import VisualFeatureReconstructor, vfr_loss
from multi2cap.model.vision import VisionEncoder

if TYPE_CHECKING:
    from multi2cap.data.dataset import CaptionBatch

CED_PRESETS = ("tiny", "mini", "small", "base")


@dataclass
class Multi2CapOutput:
    """Scalar losses; `loss_align`/`loss_vfr` are None where the stage or model has none."""

    loss: Tensor
    loss_cap: Tensor
    loss_align: Tensor | None
    loss_vfr: Tensor | None


@dataclass
class ProbeEmbeddings:
    """Embeddings for the grounding probes (no grad).

    `g`, `g_hat` `(B, K, d_g)`; `a_mean (B, d_a)` masked mean of the audio tokens; `v_cls (B, d_v)`;
    `attention` the grounding cross-attention, head-averaged: `(B, T', P)` audio step over patch
    under `grounding.pool: time`, `(B, P, T')` patch over audio step under `space`;
    `audio_mask (B, T')`; `*_shared` the same vectors in the L_align space (`(B, K, E)` / `(B, E)`,
    not normalised), where g, g_hat, a_mean and v_cls are comparable by cosine similarity.
    """

    g: Tensor
    g_hat: Tensor
    a_mean: Tensor
    v_cls: Tensor
    attention: Tensor
    audio_mask: Tensor
    g_shared: Tensor
    g_hat_shared: Tensor
    a_mean_shared: Tensor
    v_cls_shared: Tensor


def build_audio_encoder(spec: AudioEncoderSpec) -> CedEncoder | HfAudioEncoder:
    """CED from a preset name / hub id / folder, or random from inline fields (`preset` picks
    the base shape), frozen, with LoRA when enabled; `kind: hf` builds a transformers encoder
    (`multi2cap.model.hf_audio`) the same way."""
    if spec.kind == "hf":
        return build_hf_encoder(spec)
    if spec.config is not None:
        fields = dict(spec.config)
        preset = fields.pop("preset", None)
        if preset is not None and preset not in CED_PRESETS:
            raise ValueError(f"audio.config.preset must be one of {CED_PRESETS}, got {preset!r}")
        base = getattr(CedConfig, preset)() if preset else CedConfig()
        encoder = CedEncoder(dataclasses.replace(base, **fields))
    else:
        assert spec.source is not None
        source = f"mispeech/ced-{spec.source}" if spec.source in CED_PRESETS else spec.source
        encoder = load_ced(source)
    encoder.freeze()
    if spec.lora.enabled:
        targets = spec.lora.targets or ["q_proj", "v_proj"]
        apply_lora(encoder, spec.lora.r, spec.lora.alpha, spec.lora.dropout, targets)
    return encoder


def vision_width(spec: VisionEncoderSpec) -> int:
    """Hidden width of the CLIP vision tower: `spec.width` when the config records it (every
    checkpoint saved since it was added), else read from the tower's config (no weights)."""
    if spec.width is not None:
        return spec.width
    if spec.config is not None:
        return int(CLIPVisionConfig(**spec.config).hidden_size)
    assert spec.source is not None
    what = "CLIP vision config (to size the grounding; checkpoints saved without `vision.width`)"
    with hub_asset(what, "vision.source", spec.source):
        return int(CLIPVisionConfig.from_pretrained(spec.source).hidden_size)


class Multi2Cap(nn.Module):
    """The captioning model. See the module docstring for stages, `multi2cap.model.checkpoint`
    for the checkpoint layout.

    `load_vision=False` skips the CLIP tower (not needed for fine-tuning or captioning); the
    model can then not pre-train or probe. Call `set_stage` before building an optimizer or
    wrapping the model for DDP/FSDP: it decides which parameters train. `device` is the device
    the model will run on, against which `llm.dtype: auto` resolves (None: the default device
    it is built on); the model is built on the default device, move it with `.to`.
    """

    def __init__(
        self,
        config: Multi2CapConfig,
        *,
        load_vision: bool = True,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.audio_encoder = build_audio_encoder(config.audio)
        d_a = self.audio_encoder.output_dim
        self.decoder = CaptionDecoder(
            config.llm, config.prompt, config.max_caption_tokens, tokenizer=tokenizer, device=device
        )
        d_g = config.d_g if config.grounding.enabled else None
        self.adapter = GroundAdapter(d_a, self.decoder.hidden_size, d_g, pool=config.adapter_pool)
        self.vision: VisionEncoder | None = None
        self.grounding: AVGrounding | None = None
        self.align: AlignmentLoss | None = None
        self.vfr: VisualFeatureReconstructor | None = None
        # Inline-config CLIP weights read from a checkpoint while the tower is not loaded; kept so
        # that saving again does not lose them (set and read by `multi2cap.model.checkpoint`).
        self._vision_state: dict[str, Tensor] = {}
        if config.grounding.enabled:
            d_v = vision_width(config.vision)
            pool = config.grounding.pool
            self.grounding = AVGrounding(
                d_a, d_v, config.d_g, config.grounding_heads, config.k, pool=pool
            )
            self.align = AlignmentLoss(
                config.d_g, d_a, d_v, config.align_dim, config.align_temperature
            )
            self.vfr = VisualFeatureReconstructor(
                d_a, config.vfr_hidden, config.d_g, k=config.k, pool=pool
            )
            if load_vision:
                self.vision = VisionEncoder(config.vision)
                if self.vision.output_dim != d_v:
                    raise ValueError(
                        f"vision.width is {d_v} but the CLIP tower {config.vision.source!r} "
                        f"has width {self.vision.output_dim}"
                    )
                if pool == "space":
                    rows, cols = self.vision.grid
                    self.grounding.check_grid((rows, cols), rows * cols)
        self._trainable_to_fp32()
        self.stage: Stage = "pretrain"
        self.set_stage("pretrain")

    # ------------------------------------------------------------------ parameters
    @property
    def device(self) -> torch.device:
        return next(self.adapter.parameters()).device

    def _trainable_to_fp32(self) -> None:
        """Every parameter that can train is float32, whatever the backbones' dtype.

        peft creates LoRA weights in their base layer's dtype; in bf16 (8 significant bits) an
        AdamW step of lr 1e-5 rounds away for most entries (`benchmarks/bench_lora_precision.py`).
        peft's LoRA forward casts its input to the LoRA dtype and the sum back to the base
        layer's, so the frozen bf16 layers around it see bf16 as before; under autocast the
        matmuls still run in bf16, only the master weights and optimizer state are fp32."""
        for name, param in self.named_parameters():
            if can_train(name) and param.dtype != torch.float32:
                param.data = param.data.float()

    def set_stage(self, stage: Stage) -> None:
        """Set `requires_grad` for a stage: LoRA (encoder, LLM) and the adapter always train;
        grounding and the alignment projections only in pre-training; the VFR in pre-training,
        and in fine-tuning unless `freeze_vfr_in_finetune`. Backbones never train."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.requires_grad_(False)
        for module in (self.audio_encoder, self.decoder):
            for name, param in module.named_parameters():
                if "lora_" in name:
                    param.requires_grad_(True)
        self.adapter.requires_grad_(True)
        if self.grounding is not None and self.align is not None and self.vfr is not None:
            self.grounding.requires_grad_(stage == "pretrain")
            self.align.requires_grad_(stage == "pretrain")
            self.vfr.requires_grad_(stage == "pretrain" or not self.config.freeze_vfr_in_finetune)
        self.stage = stage

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that train in the current stage (see `set_stage`)."""
        return [p for p in self.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the LLM's activations in backward (non-reentrant, works with LoRA)."""
        llm = self.decoder.model
        kwargs = {"use_reentrant": False}
        if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5.x renamed it
            llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def shard_units(self) -> list[nn.Module]:
        """The blocks that FSDP shards one by one: CED's transformer blocks, the LLM's decoder
        layers and, unless a feature cache is set, CLIP's encoder layers (the backbones' own
        `_no_split_modules`). Everything else (embeddings, heads, adapter, grounding, VFR) is
        one root unit. With a feature cache, CLIP runs only on the processes whose frames missed
        the cache, so its layers must not hold collectives: they join the root unit."""
        llm_blocks = set(getattr(self.decoder.model, "_no_split_modules", None) or ())
        units: list[nn.Module] = list(self.audio_encoder.blocks)
        units += [m for m in self.decoder.model.modules() if type(m).__name__ in llm_blocks]
        if self.vision is not None and self.vision.cache_dir is None:
            clip_blocks = set(getattr(self.vision.model, "_no_split_modules", None) or ())
            units += [
                m
                for m in self.vision.model.modules()
                if type(m).__name__ in clip_blocks and type(m).__name__.endswith("EncoderLayer")
            ]
        return units

    # ------------------------------------------------------------------ forward
    def encode_audio(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """CED tokens `(B, T', d_a)` and mask `(B, T')`; no graph when the encoder is frozen."""
        needs_grad = torch.is_grad_enabled() and any(
            p.requires_grad for p in self.audio_encoder.parameters()
        )
        with torch.set_grad_enabled(needs_grad):
            return self.audio_encoder(audio.to(self.device), lengths.to(self.device))

    def audio_prefix(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The decoder's prefix `(B, P, D)` and mask from audio alone (g_hat from the VFR, as
        fine-tuning and captioning use it): what the captions are conditioned on."""
        tokens, mask = self.encode_audio(audio, lengths)
        ground = None
        if self.vfr is not None:
            ground = self.vfr(tokens, mask)
        return self.adapter(tokens, mask, ground)

    def caption_tokens(self, captions: Sequence[str]) -> int:
        """Tokens L_cap averages over for `captions` (caption + EOS, truncated as in training)."""
        return sum(len(ids) for ids in self.decoder.caption_ids(list(captions)))

    def forward(
        self,
        batch: CaptionBatch,
        stage: Stage,
        share: StepShare | None = None,
        *,
        vfr_reduction: VfrReduction = "sum",
    ) -> Multi2CapOutput:
        """Losses for a collated batch (`audio`, `audio_lengths`, `captions`, and `images` in
        pre-training with grounding). Switches `set_stage` when `stage` differs. Means over this
        batch, or with `share` this batch's part of an effective batch (see `StepShare`).
        `vfr_reduction`: L_vfr per clip as Eq. 3's squared norm (`sum`) or its mean over the
        K x d_g elements (`mean`), see `vfr_loss` (the trainer's `optim.vfr_reduction`)."""
        if stage != self.stage:
            self.set_stage(stage)
        tokens, mask = self.encode_audio(batch["audio"], batch["audio_lengths"])
        captions = list(batch["captions"])
        if self.vfr is None:
            prefix, prefix_mask = self.adapter(tokens, mask, None)
            loss_cap = self._loss_cap(prefix, prefix_mask, captions, share)
            return Multi2CapOutput(loss_cap, loss_cap, None, None)
        g_hat = self.vfr(tokens, mask)
        if stage == "finetune":
            prefix, prefix_mask = self.adapter(tokens, mask, g_hat)
            loss_cap = self._loss_cap(prefix, prefix_mask, captions, share)
            return Multi2CapOutput(loss_cap, loss_cap, None, None)

        g, a_mean, v_cls = self._grounding_inputs(batch, tokens, mask)
        assert self.align is not None
        cache = share.align_cache if share is not None else None
        if cache is not None:  # the effective batch's L_align through its cached gradient
            surrogate = self.align.surrogate(
                self.align.embed(g, a_mean, v_cls),
                cache.grad_rows,
                cache.grad_scale,
                share.replicas,
            )
            loss_align = surrogate - surrogate.detach() + cache.loss
        else:
            rows = share.align_rows if share is not None else None
            loss_align = self.align(g, a_mean, v_cls, rows=rows)
        loss_vfr = vfr_loss(g_hat, g, vfr_reduction)
        if share is not None:
            loss_vfr = loss_vfr * (g.shape[0] * share.replicas / share.clips)
        source = self.config.pretrain_adapter_input
        if source == "g":
            ground = g
        elif source == "g_hat":
            ground = g_hat
        else:
            pick_hat = torch.rand(g.shape[0], 1, 1, device=g.device) < self.config.mix_prob
            ground = torch.where(pick_hat, g_hat, g)
        prefix, prefix_mask = self.adapter(tokens, mask, ground)
        loss_cap = self._loss_cap(prefix, prefix_mask, captions, share)
        loss = loss_cap + self.config.alpha * loss_align + self.config.beta * loss_vfr
        return Multi2CapOutput(loss, loss_cap, loss_align, loss_vfr)

    def _loss_cap(
        self, prefix: Tensor, prefix_mask: Tensor, captions: list[str], share: StepShare | None
    ) -> Tensor:
        """L_cap: the token mean over this batch, or with `share` this batch's token sum over
        the effective batch's token count, times the replicas (see `StepShare`)."""
        loss_cap = self.decoder.loss(prefix, prefix_mask, captions)
        if share is None:
            return loss_cap
        return loss_cap * (self.caption_tokens(captions) * share.replicas / share.caption_tokens)

    def _grounding_inputs(
        self, batch: CaptionBatch, tokens: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """g `(B, K, d_g)` (from the batch's `images`), A_mean `(B, d_a)` and V_cls `(B, d_v)`."""
        assert self.grounding is not None
        images = batch.get("images")
        if images is None:
            raise ValueError("pre-training with grounding needs `images` in the batch")
        if self.vision is None:
            raise RuntimeError("the CLIP tower is not loaded (load_vision=False): cannot pre-train")
        visual = self.vision(images.to(self.device))
        g = self.grounding(tokens, mask, visual.patches, grid=self.vision.grid).g
        return g, masked_mean(tokens, mask), visual.cls

    @torch.no_grad()
    def alignment_rows(self, batch: CaptionBatch) -> Tensor:
        """The L_align rows of a pre-training batch (`AlignmentLoss.embed`, `(B, (K + 2) E)`),
        without graph: the first pass of the trainer's gradient cache. It runs the same
        modules in the same order as `forward` up to L_align, so with the random generators
        restored the second pass (`forward` with an `AlignCache`) recomputes the same rows."""
        if self.align is None:
            raise ValueError("the audio-only baseline has no L_align")
        with _whole_root(self):
            tokens, mask = self.encode_audio(batch["audio"], batch["audio_lengths"])
            g, a_mean, v_cls = self._grounding_inputs(batch, tokens, mask)
            return self.align.embed(g, a_mean, v_cls)

    @torch.no_grad()
    def validate(
        self,
        batch: CaptionBatch,
        ground: Literal["g", "g_hat"],
        *,
        num_beams: int,
        max_new_tokens: int,
    ) -> tuple[Tensor, list[str]]:
        """Teacher-forced L_cap (token mean) and decoded captions of a batch through one
        grounding path: `g` from the batch's `images` (the adapter's input in pre-training with
        `pretrain_adapter_input: g`) or `g_hat` (audio only, as in fine-tuning and inference).
        No collective beyond FSDP's own gathers, so processes may run different batch counts
        when the model is not sharded."""
        if self.vfr is None:
            raise ValueError("the audio-only baseline has no grounding path")
        gen = self.config.generation
        with _eval_mode(self), _whole_root(self):
            tokens, mask = self.encode_audio(batch["audio"], batch["audio_lengths"])
            if ground == "g":
                ground_tokens = self._grounding_inputs(batch, tokens, mask)[0]
            else:
                ground_tokens = self.vfr(tokens, mask)
            prefix, prefix_mask = self.adapter(tokens, mask, ground_tokens)
            loss = self.decoder.loss(prefix, prefix_mask, list(batch["captions"]))
            texts = self.decoder.generate(
                prefix,
                prefix_mask,
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                length_penalty=gen.length_penalty,
                no_repeat_ngram_size=gen.no_repeat_ngram_size,
            )
        return loss, texts

    def alignment_cache(self, rows: Tensor, valid: Tensor) -> AlignCache:
        """L_align over `rows` (every process's `alignment_rows` of an effective batch, padded
        rows `valid` False) with its gradients: `AlignmentLoss.cached_gradients`, here so that
        under FSDP the temperature is read whole."""
        if self.align is None:
            raise ValueError("the audio-only baseline has no L_align")
        with _whole_root(self):
            return AlignCache(*self.align.cached_gradients(rows, valid))

    @torch.no_grad()
    def probe_embeddings(self, batch: CaptionBatch) -> ProbeEmbeddings:
        """g, g_hat, A_mean, V_cls and the grounding attention for a batch with images."""
        if self.grounding is None or self.align is None or self.vfr is None:
            raise ValueError("the audio-only baseline has no grounding tokens to probe")
        if self.vision is None or batch.get("images") is None:
            raise ValueError("probing needs the CLIP tower (load_vision=True) and `images`")
        with _eval_mode(self), _whole_root(self):
            tokens, mask = self.encode_audio(batch["audio"], batch["audio_lengths"])
            visual = self.vision(batch["images"].to(self.device))
            grounded = self.grounding(
                tokens, mask, visual.patches, grid=self.vision.grid, need_weights=True
            )
            assert grounded.attention is not None
            g_hat = self.vfr(tokens, mask)
            a_mean = masked_mean(tokens, mask)
            g_s, a_s, v_s = self.align.project(grounded.g, a_mean, visual.cls)
            return ProbeEmbeddings(
                g=grounded.g,
                g_hat=g_hat,
                a_mean=a_mean,
                v_cls=visual.cls,
                attention=grounded.attention,
                audio_mask=mask,
                g_shared=g_s,
                g_hat_shared=self.align.g_proj(g_hat),
                a_mean_shared=a_s,
                v_cls_shared=v_s,
            )

    # ------------------------------------------------------------------ captioning
    @torch.no_grad()
    def caption(
        self,
        waves_or_paths: AudioInput | Sequence[AudioInput],
        lengths: Sequence[int] | Tensor | None = None,
        *,
        sampling_rate: int | None = None,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        length_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        batch_size: int = 8,
    ) -> list[str]:
        """Captions from audio alone, one per input, in input order.

        Inputs: a file path, a 1-D waveform, a sequence of either, or a `(B, n)` batch with
        `lengths` in samples. Waveforms are at `sampling_rate` Hz and resampled to the model's
        16 kHz (`multi2cap.media.audio.resample`); without `sampling_rate` they are read as
        16 kHz with a warning, since a 44.1-kHz array read as 16 kHz gives wrong captions
        without any error. Files are read with `multi2cap.media.audio.load_audio` at their own
        rate. Any length works (CED encodes long audio in chunks). Decoding options default to
        `config.generation`; inputs are batched by length to limit padding.
        """
        waves = as_waves(waves_or_paths, lengths, sampling_rate)
        candidates = self.caption_candidates(
            waves,
            sampling_rate=SAMPLE_RATE,  # `as_waves` resampled them
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            batch_size=batch_size,
        )
        return [group[0] for group in candidates]

    @torch.no_grad()
    def caption_candidates(
        self,
        waves_or_paths: AudioInput | Sequence[AudioInput],
        lengths: Sequence[int] | Tensor | None = None,
        *,
        sampling_rate: int | None = None,
        num_return_sequences: int = 1,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        length_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        sampled: int = 0,
        sampling: Sampling | None = None,
        batch_size: int = 8,
    ) -> list[list[str]]:
        """Several captions per input (inputs, `sampling_rate` and options as in `caption`), in
        input order.

        Each group holds the `num_return_sequences` best hypotheses of **one** beam search
        (`num_beams` >= `num_return_sequences`; best first, so `group[0]` is `caption`'s
        caption), then `sampled` captions drawn with `sampling` (default `Sampling()`) from the
        same prefixes. Duplicates are kept: the caller decides what a duplicate means."""
        waves = as_waves(waves_or_paths, lengths, sampling_rate)
        gen = self.config.generation
        options = dict(
            num_beams=num_beams if num_beams is not None else gen.num_beams,
            max_new_tokens=max_new_tokens if max_new_tokens is not None else gen.max_new_tokens,
            length_penalty=length_penalty if length_penalty is not None else gen.length_penalty,
            no_repeat_ngram_size=(
                no_repeat_ngram_size
                if no_repeat_ngram_size is not None
                else gen.no_repeat_ngram_size
            ),
        )
        order = sorted(range(len(waves)), key=lambda i: -waves[i].shape[0])
        results: dict[int, list[str]] = {}
        with _eval_mode(self), _whole_root(self):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                chunk = [waves[i] for i in idx]
                audio = nn.utils.rnn.pad_sequence(chunk, batch_first=True)
                lens = torch.tensor([w.shape[0] for w in chunk])
                prefix, prefix_mask = self.audio_prefix(audio, lens)
                beams = self.decoder.generate(
                    prefix, prefix_mask, **options, num_return_sequences=num_return_sequences
                )
                n = num_return_sequences
                for j, i in enumerate(idx):
                    results[i] = beams[j * n : (j + 1) * n]
                if sampled > 0:
                    drawn = self.decoder.generate(
                        prefix,
                        prefix_mask,
                        **options,
                        num_return_sequences=sampled,
                        sampling=sampling or Sampling(),
                    )
                    for j, i in enumerate(idx):
                        results[i] += drawn[j * sampled : (j + 1) * sampled]
        return [results[i] for i in range(len(waves))]

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(
        self, folder: str | os.PathLike[str], *, is_main_process: bool = True
    ) -> Path:
        """Write the checkpoint folder atomically (a temporary sibling renamed into place).

        A model sharded with FSDP is saved by calling this on every process (the weights are
        gathered) with `is_main_process` True on one of them, which alone writes."""
        return save_checkpoint(self, folder, is_main_process=is_main_process)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        *,
        load_vision: bool = False,
        device: str | torch.device | None = None,
        backbones: Mapping[str, str | os.PathLike[str]] | None = None,
        move: bool = True,
    ) -> Multi2Cap:
        """Rebuild a model saved by `save_pretrained` (backbones by id/path from the config).

        `backbones` points a role (`audio`, `vision`, `llm`) at a folder or hub id of its
        backbone on this machine, for a checkpoint saved elsewhere: `{"llm": "/models/llm"}`.
        Without it, `$MULTI2CAP_BACKBONES` is searched by folder name for a stored path that is
        absent here (`multi2cap.model.backbones`). The CLIP tower is only loaded with
        `load_vision=True` (pre-training, probes). `device`: where the model runs; `llm.dtype:
        auto` resolves against it, and the model is moved there unless `move=False` (the trainer
        places the model itself, after FSDP sharding)."""
        return load_checkpoint(
            cls, folder, load_vision=load_vision, device=device, backbones=backbones, move=move
        )


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; the previous train/eval mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@contextmanager
def _whole_root(module: nn.Module) -> Iterator[None]:
    """Under FSDP, gather the root unit's parameters for code that does not enter through
    `forward` (captioning, probes); the sharded blocks gather their own when called. Every
    process must run the same calls (see `CaptionDecoder.generate` for decoding)."""
    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()
