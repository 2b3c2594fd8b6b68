"""CED audio encoder (Dinkel et al., ICASSP 2024), our own module, weight-compatible with the hub.

CED is a ViT over a 64-bin log-mel spectrogram. The pipeline this module implements:

1. `CedLogMel` (16 kHz wave -> `(64, frames)` dB, 100 frames/s), computed **per example** on
   its own valid samples, so padding in a batch never leaks into a clip's features;
2. `init_bn`: a `BatchNorm2d` over the 64 mel bins, the input normaliser with AudioSet
   statistics (see `CedConfig.update_bn_stats`);
3. split along time into chunks of at most `target_length` (1012) frames, each chunk cut into
   16x16 patches (4 frequency rows x `frames // 16` time columns; trailing frames that do not fill
   a column are dropped, as the convolution of the original does);
4. time + frequency positional embeddings, tokens in **frequency-major** order
   (`(f t) d`, the order the checkpoints were trained with), `depth` pre-norm transformer blocks
   with a key padding mask, a final LayerNorm;
5. the 4 frequency rows of each time column averaged into one time token (the CED author's advice
   for frame-level features), and the chunks of each example joined again along time.

A 10-s clip (1001 frames) gives 62 time tokens (6.2 tokens/s); a 25-s clip (2501 frames) gives 63 + 63 + 29.

Why chunks are encoded with a padding mask: every chunk is encoded exactly as the original
encodes a clip of that length on its own (a short last chunk is not padded with zeros that the
other tokens attend to). This also makes the output of an example independent of the rest of the
batch, which the public HF port gets wrong for inputs longer than 10.1 s (it reshapes the chunks
of different examples into each other).

Attention has separate projections: the hub's fused `attn.qkv` Linear is split into
`q_proj`/`k_proj`/`v_proj` when a checkpoint is converted, so peft can target `q_proj`,`v_proj`
as LOAE and LAVCap do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from multi2cap.assets import AssetNotFoundError
from multi2cap.media.melspec import CedLogMel
from multi2cap.model.backbones import is_local_path

# Hub presets: `mispeech/ced-{tiny,mini,small,base}` (all depth 12, mlp_ratio 4).
_PRESETS: dict[str, tuple[int, int]] = {
    "ced-tiny": (192, 3),
    "ced-mini": (256, 4),
    "ced-small": (384, 6),
    "ced-base": (768, 12),
}


@dataclass
class CedConfig:
    """Architecture of a CED encoder.

    `target_length` is the chunk length in mel frames (1012 = 10.1 s at 100 frames/s); it fixes
    the number of time positional embeddings (`target_length // patch_size` = 63).
    `update_bn_stats=False` (default) keeps `init_bn` on its running statistics even in
    `train()` mode: it is the AudioSet input normaliser, and batch statistics would drift it
    while the encoder is frozen or LoRA-tuned (and would mix examples and padding). Set it to True
    only to re-estimate the statistics, e.g. when training from scratch.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    n_mels: int = 64
    patch_size: int = 16
    target_length: int = 1012
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    update_bn_stats: bool = False

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.n_mels % self.patch_size or self.target_length < self.patch_size:
            raise ValueError(
                f"n_mels ({self.n_mels}) must be a multiple of patch_size ({self.patch_size}) "
                f"and target_length ({self.target_length}) at least one patch"
            )

    @classmethod
    def tiny(cls) -> CedConfig:
        """`mispeech/ced-tiny`: 5.5 M parameters, width 192."""
        return cls(embed_dim=192, num_heads=3)

    @classmethod
    def mini(cls) -> CedConfig:
        """`mispeech/ced-mini`: 9.6 M parameters, width 256."""
        return cls(embed_dim=256, num_heads=4)

    @classmethod
    def small(cls) -> CedConfig:
        """`mispeech/ced-small`: 22 M parameters, width 384."""
        return cls(embed_dim=384, num_heads=6)

    @classmethod
    def base(cls) -> CedConfig:
        """`mispeech/ced-base`: 86 M parameters, width 768."""
        return cls(embed_dim=768, num_heads=12)

    @classmethod
    def from_hub_config(cls, hub: Mapping[str, Any]) -> CedConfig:
        """Build from a hub `config.json` dict (model_type `ced`).

        As in the hub's own config class, a known `name` (`ced-tiny` ...) decides `embed_dim` and
        `num_heads`. Options of the classifier or of training (outputdim, pooling, dropout rates)
        do not concern the encoder and are ignored.
        """
        patch_stride = hub.get("patch_stride", hub.get("patch_size", 16))
        if patch_stride != hub.get("patch_size", 16):
            raise ValueError(
                f"CED config with patch_stride {patch_stride} != patch_size: overlapping patches "
                "are not supported"
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in hub.items() if k in known}
        preset = _PRESETS.get(str(hub.get("name")))
        if preset is not None:
            kwargs["embed_dim"], kwargs["num_heads"] = preset
        return cls(**kwargs)


class CedAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections and a key padding mask."""

    def __init__(self, config: CedConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.num_heads = config.num_heads
        self.q_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, hidden: Tensor, attn_mask: Tensor | None) -> Tensor:
        """`hidden` (N, L, D); `attn_mask` (N, 1, 1, L) bool, True = key takes part, or None."""
        n, length, dim = hidden.shape

        def heads(x: Tensor) -> Tensor:
            return x.view(n, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

        q, k, v = heads(self.q_proj(hidden)), heads(self.k_proj(hidden)), heads(self.v_proj(hidden))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class CedMlp(nn.Module):
    def __init__(self, config: CedConfig) -> None:
        super().__init__()
        hidden = int(config.embed_dim * config.mlp_ratio)
        self.fc1 = nn.Linear(config.embed_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, config.embed_dim)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(hidden)))


class CedBlock(nn.Module):
    """Pre-norm transformer block (keys `norm1, attn, norm2, mlp` as in the checkpoints)."""

    def __init__(self, config: CedConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.attn = CedAttention(config)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.mlp = CedMlp(config)

    def forward(self, hidden: Tensor, attn_mask: Tensor | None) -> Tensor:
        hidden = hidden + self.attn(self.norm1(hidden), attn_mask)
        return hidden + self.mlp(self.norm2(hidden))


class CedPatchEmbed(nn.Module):
    """Non-overlapping `patch_size` x `patch_size` patches of the (mel, time) plane."""

    def __init__(self, config: CedConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            1, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, mel: Tensor) -> Tensor:
        """`(N, 1, n_mels, frames)` -> `(N, D, n_mels // P, frames // P)`."""
        return self.proj(mel)


class CedEncoder(nn.Module):
    """CED as an audio encoder: waveforms -> time tokens `(B, T', D)` with a validity mask.

    Parameter names follow the hub checkpoints with the `encoder.` prefix removed and
    `attn.qkv` split into `attn.q_proj/k_proj/v_proj` (see `convert_hub_state_dict`).
    """

    def __init__(self, config: CedConfig) -> None:
        super().__init__()
        self.config = config
        dim, patch = config.embed_dim, config.patch_size
        self.front_end = CedLogMel(n_mels=config.n_mels)
        self.init_bn = nn.BatchNorm2d(config.n_mels, momentum=0.01)
        self.patch_embed = CedPatchEmbed(config)
        self.time_pos_embed = nn.Parameter(
            torch.randn(1, dim, 1, config.target_length // patch) * 0.02
        )
        self.freq_pos_embed = nn.Parameter(torch.randn(1, dim, config.n_mels // patch, 1) * 0.02)
        self.blocks = nn.ModuleList(CedBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.apply(_init_weights)

    @property
    def output_dim(self) -> int:
        """Width D of the output tokens."""
        return self.config.embed_dim

    @property
    def min_samples(self) -> int:
        """Waveforms shorter than this (one patch of frames, 0.15 s) are zero-padded to it."""
        return (self.config.patch_size - 1) * self.front_end.hop_length

    def train(self, mode: bool = True) -> CedEncoder:
        super().train(mode)
        if not self.config.update_bn_stats:
            self.init_bn.eval()
        return self

    def set_gradient_checkpointing(self, enabled: bool = True) -> CedEncoder:
        """Recompute block activations in backward (training only): less memory, one more forward."""
        self.gradient_checkpointing = enabled
        return self

    def freeze(self) -> CedEncoder:
        """No parameter trains and the module stays in eval mode (dropout-free anyway)."""
        self.requires_grad_(False)
        return self.eval()

    def log_mel(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """`(B, n)` waves -> `(B, n_mels, frames)` dB and `(B,)` frame counts.

        Each example is transformed on its own valid samples: the centred STFT reflects at the
        example's true end and the top_db floor uses the example's own peak, so the features do
        not depend on the padding or on the other examples. Clips shorter than `min_samples`
        are zero-padded to it. Frames past an example's end are zeros (never attended to).
        """
        if waves.dim() != 2 or lengths.shape != waves.shape[:1]:
            raise ValueError(
                f"expected waves (B, n) and lengths (B,), got {tuple(waves.shape)} and "
                f"{tuple(lengths.shape)}"
            )
        lengths = lengths.to(waves.device)
        # Examples of equal length share one front-end call (the usual case: fixed 10-s clips).
        in_range = torch.arange(waves.shape[1], device=waves.device) < lengths.unsqueeze(1)
        waves = F.pad(waves * in_range, (0, max(0, self.min_samples - waves.shape[1])))
        valid = lengths.clamp(max=waves.shape[1]).clamp(min=self.min_samples)
        hop = self.front_end.hop_length
        frame_lengths = valid // hop + 1
        mel = waves.new_zeros(
            waves.shape[0], self.config.n_mels, int(frame_lengths.max()), dtype=torch.float32
        )
        for length in valid.unique().tolist():
            rows = (valid == length).nonzero().squeeze(1)
            mel[rows, :, : length // hop + 1] = self.front_end(waves[rows, :length])
        return mel, frame_lengths

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode 16-kHz waveforms.

        Args:
            waves: `(B, n_samples)` float, zero-padded after each example's end.
            lengths: `(B,)` valid samples per example.

        Returns:
            tokens `(B, T', D)` (T' = max over the batch of the example's time tokens, 62 per
            10 s) and mask `(B, T')` bool, True where the token is valid.
        """
        mel, frame_lengths = self.log_mel(waves, lengths)
        return self.forward_mel(mel, frame_lengths)

    def forward_mel(self, mel: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode log-mel spectrograms `(B, n_mels, frames)` in dB with `(B,)` valid frames.

        Every example is cut into chunks of at most `target_length` frames, all chunks of the
        batch are encoded together, and each example's chunks are joined again in time order.
        All chunks but an example's last are full, so chunk k's tokens start at token
        `k * target_length // patch_size` of its example. A trailing chunk with no full column is
        dropped; an example with fewer than `patch_size` frames is zero-padded (after
        normalisation) to one patch, so every example yields at least one token.
        """
        cfg = self.config
        patch, rows = cfg.patch_size, cfg.n_mels // cfg.patch_size
        chunk_frames, chunk_columns = cfg.target_length, cfg.target_length // cfg.patch_size
        if mel.dim() != 3 or mel.shape[1] != cfg.n_mels:
            raise ValueError(f"expected mel (B, {cfg.n_mels}, frames), got {tuple(mel.shape)}")
        n_examples, n_frames = mel.shape[0], mel.shape[-1]
        frames = frame_lengths.to(mel.device).clamp(max=n_frames)
        x = mel.to(self.init_bn.weight.dtype).unsqueeze(2)  # (B, n_mels, 1, frames)
        x = self.init_bn(x).squeeze(2)  # BatchNorm2d over the mel bins
        x = x.masked_fill(torch.arange(n_frames, device=x.device) >= frames[:, None, None], 0.0)

        # Plan: tokens per example, chunks per example, columns of the widest chunk.
        full, last_columns = frames // chunk_frames, frames % chunk_frames // patch
        n_tokens = (full * chunk_columns + last_columns).clamp(min=1)
        n_chunks = (full + (last_columns > 0).long()).clamp(min=1)
        max_chunks = int(n_chunks.max())
        columns = chunk_columns if max_chunks > 1 else int(n_tokens.max())

        # (B, n_mels, frames) -> (B * max_chunks, n_mels, columns * patch), keeping real chunks.
        span = max_chunks * chunk_frames
        x = F.pad(x[..., :span], (0, max(0, span - n_frames)))
        x = x.view(n_examples, cfg.n_mels, max_chunks, chunk_frames)[..., : columns * patch]
        x = x.transpose(1, 2).reshape(n_examples * max_chunks, cfg.n_mels, columns * patch)
        chunk_index = torch.arange(max_chunks, device=x.device)
        keep = (chunk_index < n_chunks[:, None]).flatten()
        chunks = x[keep].unsqueeze(1)  # (N, 1, n_mels, columns * patch)
        valid_columns = (n_tokens[:, None] - chunk_index * chunk_columns).flatten()[keep]
        column_valid = torch.arange(columns, device=x.device) < valid_columns[:, None]

        hidden = self.patch_embed(chunks)  # (N, D, rows, columns)
        hidden = hidden + self.time_pos_embed[..., :columns] + self.freq_pos_embed
        hidden = hidden.flatten(2).transpose(1, 2)  # (N, rows * columns, D), frequency-major
        attn_mask = None
        if not bool(column_valid.all()):
            attn_mask = column_valid.repeat(1, rows)[:, None, None, :]  # (N, 1, 1, L) keys
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden = checkpoint(block, hidden, attn_mask, use_reentrant=False)
            else:
                hidden = block(hidden, attn_mask)
        hidden = self.norm(hidden)
        hidden = hidden.reshape(len(chunks), rows, columns, -1).mean(dim=1)  # (N, columns, D)

        # Chunk k of an example -> its tokens [k * columns, (k + 1) * columns).
        out = hidden.new_zeros(n_examples * max_chunks, columns, hidden.shape[-1])
        out[keep] = hidden
        length = int(n_tokens.max())
        tokens = out.view(n_examples, max_chunks * columns, -1)[:, :length]
        mask = torch.arange(length, device=x.device) < n_tokens[:, None]
        return tokens.masked_fill(~mask[..., None], 0.0), mask


def _init_weights(module: nn.Module) -> None:
    """Random initialisation of the original (truncated normal 0.02 Linear, unit LayerNorm)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --- hub checkpoints -----------------------------------------------------------------------------


def convert_hub_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a CED checkpoint's keys onto `CedEncoder`'s.

    Accepts the hub layout (`mispeech/ced-*` `model.safetensors`: `encoder.*` + classifier
    `outputlayer.*`) and the original Zenodo layout (`init_bn.1.*`, mel buffers `front_end.*`).
    Drops the classifier and the mel buffers, strips `encoder.`, and splits every fused
    `attn.qkv` weight/bias (rows ordered q, k, v) into `attn.q_proj/k_proj/v_proj`. Keys that are
    already in our layout pass through unchanged.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(("outputlayer.", "front_end.")):
            continue
        key = key.removeprefix("encoder.").replace("init_bn.1.", "init_bn.")
        if ".attn.qkv." in key:
            for name, part in zip(
                ("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True
            ):
                out[key.replace(".attn.qkv.", f".attn.{name}.")] = part.clone()
        else:
            out[key] = value
    return out


def _resolve_checkpoint_dir(id_or_path: str | Path) -> Path:
    """A local folder as is; otherwise a hub id through the local hub cache or the network."""
    path = Path(id_or_path).expanduser()
    if path.is_dir():
        return path
    how = (
        f"download it where there is a network (`hf download {id_or_path} config.json "
        f"model.safetensors --local-dir DIR`) and pass DIR instead of the id"
    )
    if is_local_path(str(id_or_path)):
        raise AssetNotFoundError(
            f"CED checkpoint {str(id_or_path)!r} is not a folder on this machine: give the "
            "folder of a CED checkpoint (config.json + model.safetensors); a checkpoint "
            "saved elsewhere takes `--backbone audio=DIR` (docs/model.md, Moving a checkpoint)"
        )
    if str(id_or_path).count("/") != 1:
        raise AssetNotFoundError(f"CED checkpoint {id_or_path!r} is not a folder: {how}")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            str(id_or_path), allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin"]
        )
    except Exception as err:  # offline, unknown repo, no permission: all end the same way
        raise AssetNotFoundError(
            f"CED checkpoint {id_or_path!r} is not a local folder and could not be fetched from "
            f"the Hugging Face Hub ({type(err).__name__}): {how}"
        ) from err
    return Path(folder)


def _read_weights(folder: Path) -> dict[str, Tensor]:
    safetensors_file = folder / "model.safetensors"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file))
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise AssetNotFoundError(
        f"no model.safetensors (or pytorch_model.bin) in CED checkpoint folder {folder}"
    )


def load_ced(id_or_path: str | Path, device: str | torch.device | None = None) -> CedEncoder:
    """Load a `mispeech/ced-*` checkpoint (hub id or local folder) into a `CedEncoder`.

    The folder needs `config.json` (the hub's, model_type `ced`) and `model.safetensors`
    (or `pytorch_model.bin`, read with `weights_only=True`). A hub id is looked up in the local
    hub cache first and only downloaded when the user has a network; otherwise
    `AssetNotFoundError` says how to supply the folder. The encoder comes back in eval mode.
    """
    folder = _resolve_checkpoint_dir(id_or_path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise AssetNotFoundError(f"no config.json in CED checkpoint folder {folder}")
    config = CedConfig.from_hub_config(json.loads(config_file.read_text()))
    encoder = CedEncoder(config)
    state = convert_hub_state_dict(_read_weights(folder))
    try:
        result = encoder.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor shape differs from the config's
        raise ValueError(f"CED checkpoint {folder} does not match its config.json: {err}") from err
    missing = [k for k in result.missing_keys if k != "init_bn.num_batches_tracked"]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"CED checkpoint {folder} does not match its config.json: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return encoder.to(device).eval() if device is not None else encoder.eval()


def save_ced(encoder: CedEncoder, folder: str | Path) -> Path:
    """Write a (LoRA-free) encoder as a folder that `load_ced` reads: `config.json` (model_type
    `ced` and the `CedConfig` fields) and `model.safetensors` in our key layout, which
    `convert_hub_state_dict` passes through unchanged."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    state = encoder.state_dict()
    if any("lora_" in key for key in state):
        raise ValueError("save_ced writes a plain encoder; merge or drop the LoRA weights first")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "ced", **asdict(encoder.config)}
    (target / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(
        {k: v.detach().contiguous() for k, v in state.items()}, str(target / "model.safetensors")
    )
    return target


# --- LoRA ----------------------------------------------------------------------------------------

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "proj", "fc1", "fc2")


def apply_lora(
    encoder: CedEncoder,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = ("q_proj", "v_proj"),
) -> CedEncoder:
    """Inject peft LoRA adapters into the attention projections; everything else is frozen.

    `targets` names Linear layers inside the blocks (`q_proj`, `k_proj`, `v_proj`, `proj`,
    `fc1`, `fc2`). The module keeps its class; LoRA parameters are the ones whose name contains
    `lora_` (`peft.get_peft_model_state_dict(encoder)` reads them back). `init_bn` keeps its
    running statistics unless `config.update_bn_stats`.
    """
    from peft import LoraConfig, inject_adapter_in_model

    unknown = set(targets) - set(LORA_TARGETS)
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be among {LORA_TARGETS}, got {list(targets)}")
    encoder.requires_grad_(False)
    lora = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=rf"blocks\.\d+\.(attn|mlp)\.({'|'.join(targets)})",
    )
    inject_adapter_in_model(lora, encoder)
    for name, param in encoder.named_parameters():
        param.requires_grad_("lora_" in name)
    return encoder
