"""Audio encoders from transformers (`model.audio.kind: hf`): Whisper, CLAP (HTS-AT), AST,
wav2vec2 / HuBERT, each behind the interface of `CedEncoder`.

`HfAudioEncoder.forward(waves (B, n) 16 kHz, lengths (B,)) -> (tokens (B, T', D), mask (B, T'))`,
so Multi2Cap's grounding, VFR, adapter, probes and checkpoints use any of them unchanged. Each
family runs the checkpoint's own feature extractor (`AutoFeatureExtractor`) on every chunk of
every example separately, and encodes the chunks of a batch together:

1. each example is cut into chunks of at most `window_samples` (the encoder's native window,
   table below); every chunk is encoded as a clip of its own, so an example's tokens never
   depend on the other examples or on the padding (batched == one-by-one, tested per family);
2. the chunk's time tokens are kept up to the audio's end, the chunks of an example are
   joined in time order, optionally average-pooled by `pool` consecutive tokens;
3. the backbone stays in eval mode (its dropout, layer drop and SpecAugment are off: it is
   frozen); only LoRA on its attention projections trains (`apply_lora`), in float32 even
   when the backbone is loaded in bfloat16/float16.

| family (`model_type`) | window | features | tokens | rate (pool 1) |
| --- | --- | --- | --- | --- |
| `whisper` | 30 s | 80/128-bin log-mel, 100 frames/s | conv stride 2, **trimmed** | 50 /s (20 ms) |
| `audio-spectrogram-transformer` | 10.24 s | 128-bin kaldi fbank | 16x16 patches, stride 10, freq-mean | 10 /s |
| `clap`, `clap_audio_model` | 10 s | 64-bin log-mel at 48 kHz | HTS-AT final stage, freq-mean | 3.2 /s |
| `wav2vec2`, `hubert`, `wavlm`, `data2vec-audio` | 15.625 s | normalised waveform | conv stride 320 | 50 /s |

**Whisper, trimmed.** Whisper is trained on 30-s windows (3000 mel frames; shorter audio padded
with silence), and transformers' `WhisperEncoder.forward` refuses anything else. We instead
feed each chunk's own frames: `ceil((n // 160) / 2)` tokens from the first `2 T` frames of the
feature extractor's 30-s output (the frames Whisper itself computes for that audio), through
`conv1`/`conv2`, plus **the first T rows of the positional embedding**
(`embed_positions.weight[:T]`), then the layers with a key padding mask. That is what
CTranslate2 and faster-whisper do with a shorter input (tested against CTranslate2's encode);
the tokens differ from a full 30-s encoding only in that they no longer attend to the silent
tail. A 10-s clip gives 500 tokens instead of 1500.

**AST, CLAP** encode every chunk at their fixed input size (the feature extractor pads AST with
its padding value and CLAP by repeating the clip, as they were trained); only the time columns
that start inside the audio are kept (`ceil` of the audio's share of the window). **wav2vec2 /
HuBERT** have no fixed window: chunks are at most 250,000 samples (their pre-training crop); the
conv feature encoder runs per example (its GroupNorm normalises over time, so padding would
change it), the transformer runs batched with a padding mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multi2cap.media.audio import resample
from multi2cap.model.config import AudioEncoderSpec
from multi2cap.model.hub import hub_asset

SAMPLE_RATE = 16000
WHISPER = ("whisper",)
AST = ("audio-spectrogram-transformer",)
CLAP = ("clap", "clap_audio_model")
WAV2VEC2 = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
SUPPORTED = WHISPER + AST + CLAP + WAV2VEC2
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HfAudioEncoder(nn.Module):
    """A transformers audio encoder as a Multi2Cap audio encoder (see the module docstring).

    `model` is the audio module alone (`WhisperEncoder`, `ASTModel`, `ClapAudioModel`,
    `Wav2Vec2Model`/`HubertModel`...), `feature_extractor` its transformers feature extractor.
    Subclasses implement `_encode_chunks` for one family.
    """

    kind: str = "hf"
    default_targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __init__(
        self,
        model: nn.Module,
        feature_extractor: Any,
        *,
        chunk_seconds: float | None = None,
        pool: int = 1,
    ) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.model = model
        self.feature_extractor = feature_extractor
        self.pool = pool
        native = self.native_window_samples()
        self.window_samples = native if chunk_seconds is None else round(chunk_seconds * 16000)
        if not 0 < self.window_samples <= native:
            raise ValueError(
                f"chunk_seconds must be in (0, {native / SAMPLE_RATE:g}] for this "
                f"{self.model_type} encoder, got {chunk_seconds}"
            )

    # -------------------------------------------------------------- properties
    @property
    def model_type(self) -> str:
        return str(self.model.config.model_type)

    @property
    def output_dim(self) -> int:
        """Width D of the output tokens."""
        config = self.model.config
        return int(getattr(config, "d_model", None) or config.hidden_size)

    @property
    def blocks(self) -> nn.ModuleList:
        """The backbone's transformer blocks (FSDP shard units)."""
        return self.model.layers

    @property
    def dtype(self) -> torch.dtype:
        return next(p for n, p in self.model.named_parameters() if "lora_" not in n).dtype

    def native_window_samples(self) -> int:
        """Longest chunk, in 16-kHz samples, the encoder takes in one piece."""
        raise NotImplementedError

    def chunk_tokens(self, samples: int) -> int:
        """Time tokens of one chunk of `samples` samples (before `pool`), at least 1."""
        raise NotImplementedError

    def tokens_per_second(self) -> float:
        """Token rate of long audio after pooling (full windows)."""
        return self.chunk_tokens(self.window_samples) / self.pool / self.window_samples * 16000

    def num_tokens(self, samples: int) -> int:
        """T' of an example of `samples` samples (chunks, then pooling)."""
        full, rest = divmod(max(int(samples), 1), self.window_samples)
        n = full * self.chunk_tokens(self.window_samples) + (self.chunk_tokens(rest) if rest else 0)
        return math.ceil(n / self.pool)

    # -------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> HfAudioEncoder:
        """Only LoRA dropout follows `mode`; the frozen backbone stays in eval mode."""
        super().train(mode)
        for name, module in self.model.named_modules():
            if "lora_dropout" not in name:
                module.training = False
        return self

    def freeze(self) -> HfAudioEncoder:
        self.requires_grad_(False)
        return self.eval()

    def set_gradient_checkpointing(self, enabled: bool = True) -> HfAudioEncoder:
        """Recompute the backbone's layers in backward while training (non-reentrant)."""
        if enabled:
            self.model.gradient_checkpointing_enable({"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()
        return self

    # -------------------------------------------------------------- forward
    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode `(B, n)` 16-kHz waves with `(B,)` valid samples -> tokens `(B, T', D)` float32,
        mask `(B, T')` True where valid (`T'` = `num_tokens` of the longest example)."""
        if waves.dim() != 2 or lengths.shape != waves.shape[:1]:
            raise ValueError(
                f"expected waves (B, n) and lengths (B,), got {tuple(waves.shape)} and "
                f"{tuple(lengths.shape)}"
            )
        lengths = lengths.to(waves.device).clamp(min=1, max=waves.shape[1])
        chunks: list[Tensor] = []
        owners: list[int] = []
        for b, n in enumerate(lengths.tolist()):
            for start in range(0, n, self.window_samples):
                chunks.append(waves[b, start : min(n, start + self.window_samples)].float())
                owners.append(b)
        encoded = self._encode_chunks(chunks)  # one (T_i, D) tensor per chunk
        per_example: list[list[Tensor]] = [[] for _ in range(waves.shape[0])]
        for owner, tokens in zip(owners, encoded, strict=True):
            per_example[owner].append(tokens)
        sequences = [_pool(torch.cat(parts), self.pool) for parts in per_example]
        counts = torch.tensor([len(s) for s in sequences], device=waves.device)
        tokens = nn.utils.rnn.pad_sequence(sequences, batch_first=True).float()
        mask = torch.arange(tokens.shape[1], device=waves.device) < counts[:, None]
        return tokens, mask

    def _encode_chunks(self, chunks: Sequence[Tensor]) -> list[Tensor]:
        """One `(chunk_tokens(len), D)` tensor per 1-D 16-kHz chunk, encoded as a batch."""
        raise NotImplementedError

    def _features(self, chunks: Sequence[Tensor], **kwargs: Any) -> dict[str, Tensor]:
        """The feature extractor on each chunk alone (so nothing depends on the batch),
        stacked; resampled first when the extractor wants another rate (CLAP: 48 kHz)."""
        fe = self.feature_extractor
        outputs = []
        for chunk in chunks:
            wave = chunk.detach().cpu().numpy().astype(np.float32)
            if fe.sampling_rate != SAMPLE_RATE:
                wave = resample(wave, SAMPLE_RATE, fe.sampling_rate)
            outputs.append(fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt", **kwargs))
        device = next(self.model.parameters()).device
        return {
            key: torch.cat([o[key] for o in outputs]).to(device)
            for key in outputs[0]
            if isinstance(outputs[0][key], Tensor)
        }


def _pool(tokens: Tensor, pool: int) -> Tensor:
    """Average `pool` consecutive tokens (the last group may be shorter): `(T, D) -> (ceil(T/p), D)`."""
    if pool == 1:
        return tokens
    n = tokens.shape[0]
    padded = F.pad(tokens, (0, 0, 0, -n % pool)).view(-1, pool, tokens.shape[1])
    counts = (torch.arange(padded.shape[0] * pool, device=tokens.device) < n).view(-1, pool)
    return padded.sum(1) / counts.sum(1, keepdim=True).to(tokens.dtype)


def _key_padding_bias(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """`(N, L)` bool -> `(N, 1, 1, L)` additive attention bias (0 valid, dtype min padding)."""
    bias = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
    return bias.masked_fill(~valid, torch.finfo(dtype).min)[:, None, None, :]


class WhisperAudioEncoder(HfAudioEncoder):
    """Whisper's encoder on trimmed input (module docstring): 50 tokens/s, 30-s windows."""

    kind = "whisper"

    @property
    def _hop(self) -> int:
        return int(self.feature_extractor.hop_length)

    def native_window_samples(self) -> int:
        positions = int(self.model.config.max_source_positions)
        return positions * 2 * self._hop * SAMPLE_RATE // int(self.feature_extractor.sampling_rate)

    def chunk_tokens(self, samples: int) -> int:
        return max(1, math.ceil((samples // self._hop) / 2))

    def _encode_chunks(self, chunks: Sequence[Tensor]) -> list[Tensor]:
        encoder = self.model
        n_tokens = [self.chunk_tokens(len(c)) for c in chunks]
        longest = max(n_tokens)
        # Zero padding to 3 frames past the 2 T used (not to 30 s: 3x less STFT for 10-s clips)
        # gives the same frames: the centred STFT's reflection at the end mirrors only zeros, and
        # the silent frames left out never hold the maximum that sets the 80-dB floor.
        span = min(self.native_window_samples(), self._hop * (2 * longest + 3))
        mel = self._features(chunks, padding="max_length", max_length=span, truncation=True)
        mel = mel["input_features"][..., : 2 * longest].to(self.dtype)  # (N, mels, 2 T)
        counts = torch.tensor(n_tokens, device=mel.device)
        frame_valid = torch.arange(mel.shape[-1], device=mel.device) < 2 * counts[:, None]
        mel = mel * frame_valid[:, None, :]
        hidden = F.gelu(encoder.conv1(mel))
        hidden = F.gelu(encoder.conv2(hidden)).transpose(1, 2)  # (N, T, D)
        hidden = hidden + encoder.embed_positions.weight[:longest]
        valid = torch.arange(longest, device=mel.device) < counts[:, None]
        bias = _key_padding_bias(valid, hidden.dtype)
        for layer in encoder.layers:
            hidden = layer(hidden, bias)
        hidden = encoder.layer_norm(hidden)
        return [hidden[i, :n] for i, n in enumerate(n_tokens)]


class AstAudioEncoder(HfAudioEncoder):
    """Audio Spectrogram Transformer: fixed 1024-frame input, patch grid averaged over freq."""

    kind = "ast"

    @property
    def _grid(self) -> tuple[int, int]:
        c = self.model.config
        return (
            (c.num_mel_bins - c.patch_size) // c.frequency_stride + 1,
            (c.max_length - c.patch_size) // c.time_stride + 1,
        )

    def native_window_samples(self) -> int:
        return int(self.model.config.max_length) * 160  # kaldi fbank: 10-ms frame shift

    def chunk_tokens(self, samples: int) -> int:
        frames = max(1, (samples - 400) // 160 + 1)  # 25-ms windows, snip_edges
        columns = math.ceil(frames / self.model.config.time_stride)
        return min(max(columns, 1), self._grid[1])

    def _encode_chunks(self, chunks: Sequence[Tensor]) -> list[Tensor]:
        # Chunks shorter than one 25-ms fbank window are zero-padded to it.
        chunks = [F.pad(c, (0, max(0, 400 - len(c)))) for c in chunks]
        values = self._features(chunks)["input_values"].to(self.dtype)
        hidden = self.model(input_values=values).last_hidden_state[:, 2:]  # drop CLS, distill
        rows, columns = self._grid
        hidden = hidden.reshape(len(chunks), rows, columns, -1).mean(1)  # frequency-major
        return [hidden[i, : self.chunk_tokens(len(c))] for i, c in enumerate(chunks)]


class ClapAudioEncoder(HfAudioEncoder):
    """CLAP's audio tower (HTS-AT, a Swin transformer on a 48-kHz log-mel): fixed 10-s input;
    the final stage's (freq 2 x time 32) map averaged over frequency."""

    kind = "clap"
    default_targets = ("query", "value")

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.audio_encoder.layers

    @property
    def output_dim(self) -> int:
        c = self.model.config
        return int(c.patch_embeds_hidden_size * 2 ** (len(c.depths) - 1))

    def native_window_samples(self) -> int:
        return (
            int(self.feature_extractor.nb_max_samples)
            * SAMPLE_RATE
            // int(self.feature_extractor.sampling_rate)
        )

    def _time_tokens(self) -> int:
        c = self.model.config
        freq_ratio = c.spec_size // c.num_mel_bins
        side = c.spec_size // c.patch_stride[0] // 2 ** (len(c.depths) - 1)
        return side * freq_ratio

    def chunk_tokens(self, samples: int) -> int:
        native = self.native_window_samples()
        return min(self._time_tokens(), max(1, math.ceil(samples * self._time_tokens() / native)))

    def _encode_chunks(self, chunks: Sequence[Tensor]) -> list[Tensor]:
        # The input layout follows the model, not the extractor's saved default: "fusion" stacks
        # 4 mel views (for fused models only); "rand_trunc" gives 1 and never crops here (chunks
        # fit the window), so both are deterministic.
        fusion = bool(self.model.config.enable_fusion)
        inputs = self._features(chunks, truncation="fusion" if fusion else "rand_trunc")
        out = self.model(
            input_features=inputs["input_features"].to(self.dtype), is_longer=inputs["is_longer"]
        )
        hidden = out.last_hidden_state.mean(2).transpose(1, 2)  # (N, C, F, T) -> (N, T, C)
        return [hidden[i, : self.chunk_tokens(len(c))] for i, c in enumerate(chunks)]


class Wav2Vec2AudioEncoder(HfAudioEncoder):
    """wav2vec2 / HuBERT / WavLM / data2vec-audio: normalised waveform -> 50 tokens/s."""

    kind = "wav2vec2"

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def native_window_samples(self) -> int:
        return 250_000  # the pre-training crop (fairseq `max_sample_size`), 15.625 s

    def chunk_tokens(self, samples: int) -> int:
        n = self.model._get_feat_extract_output_lengths(torch.tensor(max(samples, 400)))
        return max(1, int(n))

    def _encode_chunks(self, chunks: Sequence[Tensor]) -> list[Tensor]:
        model = self.model
        # Chunks shorter than the conv stack's receptive field (400 samples) are zero-padded.
        chunks = [F.pad(c, (0, max(0, 400 - len(c)))) for c in chunks]
        features = [self._features([c])["input_values"].to(self.dtype) for c in chunks]
        # The conv feature encoder per example (GroupNorm over time would see the padding).
        extracted = [model.feature_extractor(f)[0].transpose(0, 1) for f in features]
        n_tokens = [len(e) for e in extracted]
        hidden = nn.utils.rnn.pad_sequence(extracted, batch_first=True)
        projected = model.feature_projection(hidden)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        valid = (
            torch.arange(hidden.shape[1], device=hidden.device)
            < torch.tensor(n_tokens, device=hidden.device)[:, None]
        )
        hidden = model.encoder(hidden, attention_mask=valid).last_hidden_state
        return [hidden[i, :n] for i, n in enumerate(n_tokens)]


_FAMILY_CLASSES: dict[str, type[HfAudioEncoder]] = {
    **dict.fromkeys(WHISPER, WhisperAudioEncoder),
    **dict.fromkeys(AST, AstAudioEncoder),
    **dict.fromkeys(CLAP, ClapAudioEncoder),
    **dict.fromkeys(WAV2VEC2, Wav2Vec2AudioEncoder),
}


# --------------------------------------------------------------------------- building


def _audio_part(model: nn.Module) -> nn.Module:
    """The audio encoder inside a full model (Whisper's decoder and CLAP's text tower dropped)."""
    model_type = model.config.model_type
    if model_type == "whisper" and hasattr(model, "get_encoder"):
        return model.get_encoder()
    if model_type == "clap":
        return model.audio_model
    if model_type in WAV2VEC2 and getattr(model.config, "add_adapter", False):
        raise ValueError(f"{model_type} checkpoints with an output adapter are not supported")
    return model


def _default_feature_extractor(config: Any) -> Any:
    """The family's feature extractor with the settings of its reference checkpoints, for
    encoders built from an inline config."""
    import transformers as tf

    model_type = config.model_type
    if model_type in WHISPER:
        return tf.WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    if model_type in AST:
        return tf.ASTFeatureExtractor(
            num_mel_bins=config.num_mel_bins, max_length=config.max_length
        )
    if model_type in CLAP:
        return tf.ClapFeatureExtractor(
            feature_size=config.num_mel_bins,
            truncation="fusion" if config.enable_fusion else "rand_trunc",
        )
    return tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)


def _model_class(model_type: str) -> Any:
    import transformers as tf

    if model_type == "clap_audio_model":
        return tf.ClapAudioModel
    if model_type == "audio-spectrogram-transformer":
        return tf.ASTModel
    return tf.AutoModel


def build_hf_audio_encoder(
    source: str | None = None,
    config: dict[str, Any] | None = None,
    *,
    chunk_seconds: float | None = None,
    pool: int = 1,
    dtype: str = "float32",
) -> HfAudioEncoder:
    """An encoder from a hub id / local folder (`source`, pretrained, with its
    `preprocessor_config.json`), or with random weights from inline config fields (`config`,
    with `model_type`, e.g. `{"model_type": "whisper", "d_model": 64, ...}`). Not frozen yet."""
    import transformers as tf

    torch_dtype = DTYPES[dtype]
    if config is not None:
        fields = dict(config)
        model_type = fields.pop("model_type", None)
        if model_type not in SUPPORTED:
            raise ValueError(
                f"audio.config.model_type must be one of {SUPPORTED}, got {model_type!r}"
            )
        if model_type == "clap_audio_model":
            hf_config = tf.ClapAudioConfig(**fields)
        else:
            hf_config = tf.AutoConfig.for_model(model_type, **fields)
        if model_type == "whisper":
            model: nn.Module = tf.WhisperModel(hf_config).get_encoder()
        else:
            cls = _model_class(model_type)
            model = _audio_part(
                cls.from_config(hf_config) if cls is tf.AutoModel else cls(hf_config)
            )
        model = model.to(torch_dtype)
        feature_extractor = _default_feature_extractor(model.config)
    else:
        if source is None:
            raise ValueError("give `source` or `config`")
        with hub_asset("audio encoder", "audio.source", source):
            hf_config = tf.AutoConfig.from_pretrained(source)
            model_type = hf_config.model_type
            if model_type not in SUPPORTED:
                raise ValueError(
                    f"audio.source {source!r} is a {model_type!r} model; supported: {SUPPORTED}"
                )
            if model_type == "whisper":
                model = tf.WhisperModel.from_pretrained(source, dtype=torch_dtype).get_encoder()
            else:
                cls = _model_class(model_type)
                model = _audio_part(cls.from_pretrained(source, dtype=torch_dtype))
            feature_extractor = tf.AutoFeatureExtractor.from_pretrained(source)
    encoder_cls = _FAMILY_CLASSES[model.config.model_type]
    return encoder_cls(model, feature_extractor, chunk_seconds=chunk_seconds, pool=pool).eval()


def apply_lora(
    encoder: HfAudioEncoder,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
) -> HfAudioEncoder:
    """peft LoRA on the backbone's attention projections (`targets`: Linear names; default
    `q_proj, v_proj`, CLAP `query, value`); everything else frozen. LoRA weights are float32
    whatever the backbone's dtype (peft casts their input and output)."""
    from peft import LoraConfig, inject_adapter_in_model

    names = list(targets or encoder.default_targets)
    encoder.requires_grad_(False)
    lora = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=rf".*\.({'|'.join(names)})$"
    )
    try:
        inject_adapter_in_model(lora, encoder.model)
    except ValueError as err:
        raise ValueError(
            f"audio.lora.targets {names} match no Linear of this {encoder.model_type} encoder "
            f"(defaults: {list(encoder.default_targets)}): {err}"
        ) from err
    for name, param in encoder.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()
            param.requires_grad_(True)
    return encoder.train(encoder.training)


def build_hf_encoder(spec: AudioEncoderSpec) -> HfAudioEncoder:
    """`model.audio` with `kind: hf` -> a frozen encoder, with LoRA when `spec.lora.enabled`."""
    options = spec.hf
    encoder = build_hf_audio_encoder(
        spec.source,
        spec.config,
        chunk_seconds=options.chunk_seconds,
        pool=options.pool,
        dtype=options.dtype,
    ).freeze()
    if spec.lora.enabled:
        apply_lora(encoder, spec.lora.r, spec.lora.alpha, spec.lora.dropout, spec.lora.targets)
    return encoder
