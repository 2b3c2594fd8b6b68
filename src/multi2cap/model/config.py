"""`Multi2CapConfig`: everything needed to rebuild a Multi2Cap model, as YAML.

Backbones are addressed by hub id or local path (`source`), or built with random weights from an
inline config (`config`), which is how tests, the demo and benchmarks of real-size shapes work
without downloads. A checkpoint folder stores this config as `config.yaml`; weights that cannot be
rebuilt from it (trainable modules, LoRA, randomly initialised backbones) sit next to it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from multi2cap.fsnames import printable
from multi2cap.io import atomic_write_text
from multi2cap.provenance import WRITTEN_BY_KEY, check_written_by, provenance

log = logging.getLogger("multi2cap.model")

AdapterInput = Literal["g", "g_hat", "mix"]
#: How the AV-grounding makes its K tokens (docs/model.md, "Readings of the paper"): `space`,
#: the frame's patches query the audio and the patch grid is pooled to sqrt(K) x sqrt(K);
#: `time`, the audio steps query the patches and are pooled into K time segments.
GroundingPool = Literal["space", "time"]
GROUNDING_POOLS: tuple[GroundingPool, ...] = get_args(GroundingPool)
#: How L_vfr reduces ||g - g_hat||^2 (`optim.vfr_reduction`, `multi2cap.model.vfr.vfr_loss`):
#: `sum`, Eq. 3's squared norm per clip (mean over clips); `mean`, over the K x d_g elements too.
VfrReduction = Literal["sum", "mean"]
VFR_REDUCTIONS: tuple[VfrReduction, ...] = get_args(VfrReduction)
LlmDtype = Literal["auto", "float32", "bfloat16", "float16"]
LlmFamily = Literal["llama", "qwen2", "qwen3", "mistral"]
VClsReading = Literal["post_layernorm", "pre_layernorm"]
#: How the decoder's input is laid out around the prefix (`multi2cap.model.prompt`): `plain`
#: text, or the tokenizer's `chat` template (prompt in the user turn, caption as the answer).
PromptFormat = Literal["plain", "chat"]
PROMPT_FORMATS: tuple[PromptFormat, ...] = get_args(PromptFormat)

DEFAULT_PROMPT = "Describe the sound in detail. Audio: <audio> Caption:"
AUDIO_PLACEHOLDER = "<audio>"


#: A checkpoint folder's files (layout: `model/checkpoint.py`), named once for the code that
#: writes, loads, downloads and describes checkpoints.
CONFIG_FILE = "config.yaml"
TRAINABLE_FILE = "trainable.safetensors"
BACKBONES_FILE = "backbones.safetensors"
TOKENIZER_DIR = "tokenizer"


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be used as it is (a `config.yaml` that is no YAML or no
    Multi2Cap config, truncated or garbage `*.safetensors`): `path` names it, the message says
    what was found. The CLI exits 2 with it (bad input, README)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{printable(path)}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        return (type(self), (self.path, self.problem))


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML parse error in one line: what was wrong and where (1-based line and column)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def validation_problem(error: ValidationError, shown: int = 3) -> str:
    """The first `shown` problems of a pydantic error in one line, each with its field."""
    parts = []
    for item in error.errors()[:shown]:
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        parts.append(f"{field}: {item['msg']}")
    more = len(error.errors()) - shown
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


#: The two training stages of the paper: pre-training with frames, audio-only fine-tuning.
Stage = Literal["pretrain", "finetune"]
STAGES: tuple[Stage, ...] = get_args(Stage)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSpec(_Strict):
    """LoRA on a backbone's linear layers (peft). `targets` are module-name suffixes."""

    enabled: bool = True
    r: int = Field(8, ge=1)
    alpha: float = 32.0
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    targets: list[str] | None = None


class HfAudioOptions(_Strict):
    """Options of a transformers audio encoder (`kind: hf`, `multi2cap.model.hf_audio`):
    `chunk_seconds` (default: the encoder's native window, e.g. 30 s for Whisper), `pool`
    (average this many consecutive time tokens), `dtype` of the frozen backbone (LoRA stays
    float32)."""

    chunk_seconds: float | None = Field(None, gt=0.0)
    pool: int = Field(1, ge=1)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class AudioEncoderSpec(_Strict):
    """Audio encoder. `kind: ced` (default): a CED preset name (`tiny|mini|small|base` =
    `mispeech/ced-<name>`), a hub id or a local folder with pretrained weights; or `config`,
    inline `CedConfig` fields for random weights (`{"preset": "base"}` gives the real shape with
    random weights). `kind: hf`: a transformers audio model (Whisper, CLAP, AST, wav2vec2,
    HuBERT) by hub id or folder, or an inline config with `model_type`; options in `hf`."""

    kind: Literal["ced", "hf"] = "ced"
    source: str | None = "base"
    config: dict[str, Any] | None = None
    lora: LoraSpec = Field(default_factory=LoraSpec)
    hf: HfAudioOptions = Field(default_factory=HfAudioOptions)

    @model_validator(mode="before")
    @classmethod
    def _hf_config_needs_no_source(cls, data: Any) -> Any:
        """`kind: hf` with an inline `config`: the CED default `source` does not apply."""
        if isinstance(data, dict) and data.get("kind") == "hf" and "source" not in data:
            return {**data, "source": None} if data.get("config") is not None else data
        return data

    @model_validator(mode="after")
    def _one_source(self) -> AudioEncoderSpec:
        if (self.source is None) == (self.config is None):
            raise ValueError("audio encoder: give exactly one of `source` and `config`")
        if self.kind == "hf" and self.source == "base":
            raise ValueError("audio.kind hf: set `source` to a hub id or folder (or `config`)")
        return self


class VisionEncoderSpec(_Strict):
    """Frozen CLIP vision tower: hub id / local path, or inline `CLIPVisionConfig` fields.

    `feature_cache`: folder of per-image CLIP outputs (safetensors named by a hash of the pixels
    and the encoder), so frames seen again are not re-encoded. Only exact pixel tensors hit, so it
    pays off for fixed pre-extracted frames (no random crop).

    `width`: the tower's hidden width (V's last dimension), written by `save_pretrained`, so
    that a checkpoint sizes its grounding without reading anything of the tower (audio-only
    captioning works where the CLIP files are absent). None: read from the tower's config.

    `v_cls`: which CLS vector is V_cls (L_align's visual target, the probes' gallery keys):
    `post_layernorm` (default), CLIP's pooled output, the vector CLIP's own image embedding
    projects; or `pre_layernorm`, the raw first token of the last hidden state (what
    checkpoints saved before the choice existed used). docs/model.md gives the evidence."""

    source: str | None = "openai/clip-vit-large-patch14"
    config: dict[str, Any] | None = None
    feature_cache: str | None = None
    width: int | None = Field(None, ge=1)
    v_cls: VClsReading = "post_layernorm"

    @model_validator(mode="after")
    def _one_source(self) -> VisionEncoderSpec:
        if (self.source is None) == (self.config is None):
            raise ValueError("vision encoder: give exactly one of `source` and `config`")
        return self


class TokenizerSpec(_Strict):
    """An in-memory word-level tokenizer (lower-cased, split on whitespace and punctuation), for
    LLMs built from an inline config. Ids: 0 `<pad>`, 1 `<s>`, 2 `</s>`, 3 `<unk>`, then `words`."""

    words: list[str]


class LlmSpec(_Strict):
    """Causal LM decoder: hub id / local path (its own tokenizer), or an inline config of one of
    the families below with random weights and a `tokenizer` spec.

    `dtype` is the frozen decoder's weight dtype; `auto` (default) is bfloat16 when the model
    runs on a CUDA device with bf16 support and float32 otherwise (`llm.resolve_llm_dtype`).
    Trainable weights (LoRA included) are float32 whatever it is.

    `prompt_format` (`multi2cap.model.prompt`): `plain` (default, what every checkpoint before
    it used) puts BOS, the prompt text, the prefix and the caption + EOS one after the other;
    `chat` wraps them in the tokenizer's chat template, the way an instruct model was tuned: the
    prompt with the audio slot in the user turn, the caption as the assistant's answer, closed by
    the template's end-of-turn token(s), which decoding stops at. `system_prompt` (chat only):
    a system turn with this text; None leaves the template's own default (SmolLM2's and Qwen's
    templates add one, Llama 3's none)."""

    source: str | None = "meta-llama/Llama-3.2-3B"
    family: LlmFamily | None = None
    config: dict[str, Any] | None = None
    tokenizer: TokenizerSpec | None = None
    dtype: LlmDtype = "auto"
    lora: LoraSpec = Field(
        default_factory=lambda: LoraSpec(targets=["q_proj", "k_proj", "v_proj", "o_proj"])
    )
    prompt_format: PromptFormat = "plain"
    system_prompt: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LlmSpec:
        if (self.source is None) == (self.config is None):
            raise ValueError("llm: give exactly one of `source` and `config`")
        if self.config is not None and (self.family is None or self.tokenizer is None):
            raise ValueError("llm: an inline `config` needs `family` and `tokenizer`")
        if self.system_prompt is not None and self.prompt_format != "chat":
            raise ValueError(
                "llm.system_prompt is only used with llm.prompt_format: chat "
                f"(found prompt_format {self.prompt_format!r})"
            )
        return self


class GroundingSpec(_Strict):
    """The AV-grounding and its VFR. `enabled: false` is the audio-only baseline (no CLIP, no g,
    no L_align, no L_vfr). `pool` picks the reading of section 4.2 (`GroundingPool`); `space` is
    the paper's ("spatially grounded", K = 1, 4, 16, 64, ~256 = square grids of CLIP's patch
    map). A YAML boolean (`grounding: true`) is read as `enabled`. The object is truthy when
    enabled, so `if config.grounding:` reads as it did when the field was a boolean."""

    enabled: bool = True
    pool: GroundingPool = "space"

    def __bool__(self) -> bool:
        return self.enabled


class GenerationSpec(_Strict):
    """Decoding defaults for `Multi2Cap.caption` (beam search when `num_beams` > 1).

    `max_new_tokens` defaults to the model's `max_caption_tokens` (set by `Multi2CapConfig`
    when a config leaves it out): decoding can then emit any caption training kept, EOS
    included, in the decoder's own tokens (before, 50, below the 96 that training keeps).
    Decoding stops at EOS, so the budget costs nothing on captions that end sooner."""

    num_beams: int = Field(4, ge=1)
    max_new_tokens: int = Field(96, ge=1)
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = Field(0, ge=0)


class Multi2CapConfig(_Strict):
    """The whole model. Widths: `d_g` grounding width, `align_dim` InfoNCE shared space.

    `grounding` is a `GroundingSpec` (`grounding: false` is the audio-only baseline: no CLIP, no
    g, no L_align, no L_vfr; `grounding.pool` the reading of the grounding, `space` or `time`).
    `pretrain_adapter_input` picks what feeds the Ground Adapter in pre-training: `g` (paper),
    `g_hat`, or `mix` (each sample takes g_hat with probability `mix_prob`). `adapter_pool`
    average-pools the audio tokens of the decoder's prefix in time (1, the paper: none; see
    `multi2cap.model.adapter`).
    """

    audio: AudioEncoderSpec = Field(default_factory=AudioEncoderSpec)
    vision: VisionEncoderSpec = Field(default_factory=VisionEncoderSpec)
    llm: LlmSpec = Field(default_factory=LlmSpec)
    grounding: GroundingSpec = Field(default_factory=GroundingSpec)
    k: int = Field(4, ge=1)
    d_g: int = Field(1024, ge=1)
    grounding_heads: int = Field(8, ge=1)
    align_dim: int = Field(512, ge=1)
    align_temperature: float = Field(0.07, gt=0.0)
    vfr_hidden: int = Field(2048, ge=1)
    alpha: float = Field(0.02, ge=0.0)
    beta: float = Field(0.05, ge=0.0)
    pretrain_adapter_input: AdapterInput = "g"
    adapter_pool: int = Field(1, ge=1)
    mix_prob: float = Field(0.5, ge=0.0, le=1.0)
    freeze_vfr_in_finetune: bool = True
    prompt: str = DEFAULT_PROMPT
    max_caption_tokens: int = Field(96, ge=1)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)

    @model_validator(mode="before")
    @classmethod
    def _grounding_flag(cls, data: Any) -> Any:
        """`grounding: true|false` (every config before `grounding.pool`) = `enabled`."""
        if isinstance(data, dict) and isinstance(data.get("grounding"), bool):
            return {**data, "grounding": {"enabled": data["grounding"]}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _decode_what_training_keeps(cls, data: Any) -> Any:
        """A `generation.max_new_tokens` left out follows `max_caption_tokens`."""
        if not isinstance(data, dict) or "max_caption_tokens" not in data:
            return data
        generation = data.get("generation")
        if isinstance(generation, GenerationSpec):
            if "max_new_tokens" in generation.model_fields_set:
                return data
            generation = generation.model_dump(exclude_unset=True)
        generation = dict(generation or {})
        generation.setdefault("max_new_tokens", data["max_caption_tokens"])
        return {**data, "generation": generation}

    @model_validator(mode="after")
    def _check(self) -> Multi2CapConfig:
        if self.grounding.enabled and self.grounding.pool == "space" and not is_square(self.k):
            raise ValueError(
                f"k ({self.k}) must be a perfect square under grounding.pool: space (the patch "
                "grid is pooled to sqrt(K) x sqrt(K) tokens): use 1, 4, 16, 64, 256, ... or "
                "grounding.pool: time"
            )
        if self.d_g % self.grounding_heads:
            raise ValueError(
                f"d_g ({self.d_g}) must be divisible by grounding_heads ({self.grounding_heads})"
            )
        if self.prompt.count(AUDIO_PLACEHOLDER) > 1:
            raise ValueError(f"prompt may contain {AUDIO_PLACEHOLDER} at most once")
        return self

    # ---------------------------------------------------------------- YAML
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        """Write the config with a `written_by` block (`multi2cap.provenance`) after its fields."""
        tree = {**self.model_dump(mode="json"), WRITTEN_BY_KEY: provenance()}
        atomic_write_text(Path(path), yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<config>") -> Multi2CapConfig:
        """Parse a saved config; its `written_by` block is checked (a newer major version warns)
        and dropped, since it describes the file, not the model. A field the file predates gets
        the reading its model was trained with, not today's default (`_saved_before`)."""
        tree = yaml.safe_load(text) or {}
        if isinstance(tree, dict):
            check_written_by(tree.pop(WRITTEN_BY_KEY, None), source)
            tree = _saved_before(tree, source)
        return cls.model_validate(tree)

    @classmethod
    def load(cls, path: str | Path) -> Multi2CapConfig:
        """The config in file `path`; `CheckpointFileError` naming it when it is not UTF-8,
        not YAML, or not a valid Multi2Cap config."""
        try:
            return cls.from_yaml(Path(path).read_text(encoding="utf-8"), source=str(path))
        except UnicodeDecodeError as err:
            raise CheckpointFileError(path, f"not UTF-8 text ({err.reason})") from err
        except yaml.YAMLError as err:
            raise CheckpointFileError(path, f"not valid YAML: {yaml_problem(err)}") from err
        except ValidationError as err:
            problem = f"not a valid Multi2Cap config: {validation_problem(err)}"
            raise CheckpointFileError(path, problem) from err

    # ---------------------------------------------------------------- tiny
    @classmethod
    def tiny(
        cls,
        texts: Iterable[str] = (),
        *,
        grounding: bool | GroundingSpec | dict[str, Any] = True,
        k: int = 4,
        llm_family: LlmFamily = "llama",
        prompt: str = DEFAULT_PROMPT,
        **overrides: Any,
    ) -> Multi2CapConfig:
        """A CPU-sized model with random backbones (CED tiny-shaped but 2 layers of width 32,
        CLIP 32 px, a 2-layer decoder of width 64) and a word-level tokenizer whose vocabulary
        covers `texts` and the prompt. For tests, the demo and quick experiments. CLIP's 4 x 4
        patch grid admits K = 1, 4 or 16 under `grounding.pool: space`."""
        words = word_vocabulary([prompt.replace(AUDIO_PLACEHOLDER, " "), *texts])
        llm_config = dict(
            vocab_size=len(words) + len(SPECIAL_TOKENS),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            # Wide enough initial weights that the frozen random LM head can express confident
            # predictions (std 0.02 caps every logit near 1 and L_cap near log(vocab)).
            initializer_range=0.3,
        )
        if llm_family == "qwen3":
            llm_config["head_dim"] = 16
        fields: dict[str, Any] = dict(
            audio=AudioEncoderSpec(
                source=None,
                config=dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
                lora=LoraSpec(r=4, alpha=8.0, dropout=0.0),
            ),
            vision=VisionEncoderSpec(
                source=None,
                config=dict(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    image_size=32,
                    patch_size=8,
                ),
            ),
            llm=LlmSpec(
                source=None,
                family=llm_family,
                config=llm_config,
                tokenizer=TokenizerSpec(words=words),
                lora=LoraSpec(
                    r=16, alpha=32.0, dropout=0.0, targets=["q_proj", "k_proj", "v_proj", "o_proj"]
                ),
            ),
            grounding=grounding,
            k=k,
            d_g=32,
            grounding_heads=4,
            align_dim=16,
            vfr_hidden=64,
            prompt=prompt,
            max_caption_tokens=32,
            generation=GenerationSpec(num_beams=1, max_new_tokens=24),
        )
        fields.update(overrides)
        return cls(**fields)


_told_saved_before: set[tuple[str, str]] = set()


def _saved_before(tree: dict[str, Any], source: str) -> dict[str, Any]:
    """Fill the fields a saved config predates with the readings its model was trained with
    (today's defaults differ), saying so once per file and field. Only fields whose section the
    file has are filled (a saved config has every section; a section left out of a hand-written
    one gets the defaults):

    - no `vision.v_cls`: V_cls was read before CLIP's post-LayerNorm (`pre_layernorm`);
    - `grounding` a boolean or without `pool`: the grounding pooled over time (`pool: time`).

    Neither matters to an audio-only model (`grounding` disabled): filled, but not said."""
    grounding = tree.get("grounding")
    if isinstance(grounding, bool):
        grounding = {"enabled": grounding}
    said = bool(grounding.get("enabled", True)) if isinstance(grounding, dict) else True
    filled: list[tuple[str, str]] = []
    vision = tree.get("vision")
    if isinstance(vision, dict) and "v_cls" not in vision:
        tree = {**tree, "vision": {**vision, "v_cls": "pre_layernorm"}}
        filled.append(
            (
                "vision.v_cls",
                "V_cls is read before CLIP's post-LayerNorm, as that model was trained "
                "(vision.v_cls: pre_layernorm)",
            )
        )
    if isinstance(grounding, dict) and "pool" not in grounding:
        tree = {**tree, "grounding": {**grounding, "pool": "time"}}
        filled.append(
            ("grounding.pool", "loaded as `grounding.pool: time`, the reading it was trained with")
        )
    for field, reading in filled:
        if said and (source, field) not in _told_saved_before:
            _told_saved_before.add((source, field))
            log.warning("%s has no %s (saved before it existed): %s", source, field, reading)
    return tree


SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
_WORD_RE = re.compile(r"\w+|[^\w\s]+")


def is_square(n: int) -> bool:
    """Whether `n` >= 1 is a perfect square (the K of `grounding.pool: space`)."""
    return n >= 1 and math.isqrt(n) ** 2 == n


def word_vocabulary(texts: Iterable[str]) -> list[str]:
    """Sorted distinct words of `texts` as the word-level tokenizer splits them (lower-cased,
    `\\w+` runs and punctuation runs, the same rule as `tokenizers`' Whitespace pre-tokenizer)."""
    words = {w for text in texts for w in _WORD_RE.findall(text.lower())}
    return sorted(words - set(SPECIAL_TOKENS))
