"""`TrainConfig`: one YAML recipe plus `key=value` command-line overrides.

A recipe fixes everything a run needs (stage, model, data, optimisation, augmentation, validation
and run-time settings) so that `multi2cap train --config X.yaml` is reproducible from the file and
the override list alone. The resolved config is written next to the checkpoints.

Overrides use dotted paths into the YAML tree (`optim.lr=1e-4`, `model.k=8`,
`data.train_manifest=/data/clotho/train.jsonl`); values are parsed as YAML, with numbers in
scientific notation (`5e-5`, which YAML 1.1 reads as a string) read as floats.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from multi2cap.data.dataset import EpochUnit
from multi2cap.io import atomic_write_text
from multi2cap.metrics import higher_is_better
from multi2cap.model.backbones import BackboneRole
from multi2cap.model.config import VfrReduction
from multi2cap.provenance import WRITTEN_BY_KEY, provenance
from multi2cap.recipes import find_recipe, recipe_names
from multi2cap.train.preference_config import PreferenceConfig

#: What a recipe trains: the paper's two stages (`multi2cap.model.config.Stage`), and preference
#: tuning of a fine-tuned model (DPO on its own candidates, `multi2cap.train.preference`).
TrainStage = Literal["pretrain", "finetune", "preference"]


class ConfigError(ValueError):
    """A recipe or an override that cannot be used; the message names the file and the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Manifests and how clips are read. Paths are resolved against the recipe's folder."""

    train_manifest: str | None = None
    val_manifest: str | None = None
    clip_seconds: float = Field(10.0, gt=0, description="audio crop/pad length in seconds")
    image_size: int | None = Field(
        None, gt=0, description="CLIP input side in pixels; None: the vision encoder's own"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per device")
    epoch_unit: EpochUnit = Field(
        "caption",
        description="what an epoch covers: caption (every (clip, caption) row once, the rows "
        "the paper's Table 1 counts) or clip (every clip once, with one of its captions drawn "
        "at random)",
    )


class AugmentConfig(_Section):
    """The paper's four waveform augmentations (Appendix A.1): AddWhiteNoise, Shifting,
    Stretching (pitch kept) and Flipping (polarity), each applied to a clip with its probability,
    in a random order (`multi2cap.media.augment.RandomAugment`)."""

    enabled: bool = True
    p_white_noise: float = Field(0.5, ge=0, le=1)
    p_shift: float = Field(0.5, ge=0, le=1)
    p_stretch: float = Field(0.5, ge=0, le=1)
    p_flip: float = Field(0.5, ge=0, le=1)
    snr_db: tuple[float, float] = Field((10.0, 40.0), description="white-noise SNR range, dB")
    shift_max_fraction: float = Field(0.2, ge=0, le=1, description="of the clip, either way")
    stretch_factor: tuple[float, float] = Field((0.8, 1.25), description="duration multiplier")


class OptimConfig(_Section):
    """AdamW with linear warm-up then cosine decay, stepped once per optimizer step.

    `batch_size` is the effective batch (summed over devices and accumulation steps);
    `micro_batch_size` is what one device holds in one forward pass. The gradient-accumulation
    factor is `batch_size / (micro_batch_size * num_devices)` and must be an integer.
    """

    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    batch_size: int = Field(320, gt=0)
    micro_batch_size: int = Field(8, gt=0)
    epochs: int = Field(15, gt=0)
    warmup_epochs: float = Field(2.0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    max_grad_norm: float | None = Field(None, gt=0, description="None: no clipping (the paper)")
    align_batch: Literal["effective", "micro"] = Field(
        "effective",
        description="L_align's contrastive batch under accumulation: the whole effective batch "
        "of all devices (gradient cache, one extra no-graph encoder pass) or each micro-batch of "
        "all devices",
    )
    vfr_reduction: VfrReduction = Field(
        "sum",
        description="L_vfr per clip: sum = Eq. 3's squared norm ||g - g_hat||^2 over the K x d_g "
        "elements (the paper's), mean = the mean over those elements (F.mse_loss, K x d_g times "
        "smaller at the same beta); both averaged over clips (docs/training.md)",
    )


class EvalConfig(_Section):
    """Validation after every `every_epochs` epochs on at most `max_items` validation clips.

    `best_metric` is an `EvalResult.corpus` key (`cider_d`, `spider`, `fense`, ...) or `val_loss`
    (teacher-forced caption loss, always available); `best_mode` "auto" takes its direction from
    `multi2cap.metrics.HIGHER_IS_BETTER` (`fer` and `val_loss` are minimised). `metrics` is what
    `multi2cap.metrics.evaluate` accepts ("offline" = the metrics that need no network).
    """

    every_epochs: int = Field(1, ge=0, description="0 disables validation")
    max_items: int = Field(200, gt=0)
    batch_size: int = Field(16, gt=0)
    metrics: str | list[str] = "offline"
    best_metric: str = "cider_d"
    best_mode: Literal["max", "min", "auto"] = "auto"
    num_beams: int = Field(3, gt=0)
    max_new_tokens: int | None = Field(
        None,
        gt=0,
        description="decoding budget in the decoder's tokens; None: the model's "
        "generation.max_new_tokens (by default its max_caption_tokens, what training keeps)",
    )
    select_path: Literal["trained", "audio_only"] = Field(
        "trained",
        description="pre-training: select the best checkpoint on the path it trains (g from the "
        "frame, plain score names) or on the audio-only g_hat path (audio_only_* scores); "
        "fine-tuning has one path",
    )

    @model_validator(mode="after")
    def _direction_known(self) -> EvalConfig:
        if self.best_mode == "auto":
            try:
                higher_is_better(self.best_metric)
            except KeyError as error:
                raise ValueError(
                    f"eval.best_mode 'auto' does not know which way {self.best_metric!r} points: "
                    "set eval.best_mode to max or min"
                ) from error
        return self

    @property
    def maximise(self) -> bool:
        """From `multi2cap.metrics.HIGHER_IS_BETTER` unless `best_mode` says max or min."""
        if self.best_mode == "auto":
            return higher_is_better(self.best_metric)
        return self.best_mode == "max"


class RuntimeConfig(_Section):
    """Where the run writes, how often, and on what hardware.

    `precision` "auto" is bf16 autocast on CUDA and fp32 elsewhere. `strategy` matters only when
    several processes run (`torchrun` / `accelerate launch`); see docs/training.md for when FSDP
    pays off. `cpu_threads` 1 is much
    faster for tiny models on a shared machine (torch's thread pool otherwise spin-waits on busy
    cores). `stop_at_step` ends the run
    (with a checkpoint) after that many optimizer steps without changing the schedule, so a job cut
    into time slices (SLURM) resumes onto the same trajectory.
    """

    output_dir: str = "runs/default"
    precision: Literal["auto", "bf16", "fp16", "no"] = "auto"
    cpu: bool = False
    cpu_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads for this run; None: torch's default"
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="with several processes: ddp (every process holds the whole model) or fsdp "
        "(FSDP2: parameters, gradients and optimizer states sharded over the processes)",
    )
    gradient_checkpointing: bool = False
    checkpoint_every_steps: int = Field(0, ge=0, description="0: only at epoch end")
    keep_last_checkpoints: int = Field(2, ge=1)
    stop_at_step: int | None = Field(None, gt=0)
    log_every_steps: int = Field(10, gt=0)
    progress: bool = True
    tensorboard: bool = True


class TrainConfig(_Section):
    """A complete training recipe. `model` is the `Multi2CapConfig` section (fields of that class,
    plus `preset: tiny` to start from `Multi2CapConfig.tiny()`); `init_from` is a checkpoint folder
    whose weights start fine-tuning (its model config is used, `model` entries override it);
    `init_backbones` points its backbones at folders of this machine when it was saved elsewhere;
    `preference` configures `stage: preference` (ignored by the other stages)."""

    stage: TrainStage = "pretrain"
    seed: int = 0
    init_from: str | None = None
    init_backbones: dict[BackboneRole, str] = Field(
        default_factory=dict,
        description="where the backbones of `init_from` (and of a resumed run's checkpoints) "
        "are on this machine, for a checkpoint saved elsewhere: {role: folder or hub id}, role "
        "audio, vision or llm (see Multi2Cap.from_pretrained's `backbones`)",
    )
    warn_without_init_from: bool = Field(
        True,
        description="warn when fine-tuning a model with grounding that no init_from "
        "pre-trained: its VFR is random, so g_hat carries no visual knowledge (false for smoke "
        "tests that fine-tune a fresh model on purpose)",
    )
    model: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.optim.batch_size % self.optim.micro_batch_size:
            raise ValueError(
                f"optim.batch_size ({self.optim.batch_size}) must be a multiple of "
                f"optim.micro_batch_size ({self.optim.micro_batch_size})"
            )
        return self

    def accumulation_steps(self, num_processes: int) -> int:
        """Micro-batches per optimizer step on each device for `num_processes` devices."""
        per_step = self.optim.micro_batch_size * num_processes
        if self.optim.batch_size % per_step:
            raise ConfigError(
                f"optim.batch_size ({self.optim.batch_size}) is not a multiple of "
                f"micro_batch_size x devices ({self.optim.micro_batch_size} x {num_processes})"
            )
        return self.optim.batch_size // per_step

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """The recipe as run (a run folder's `train_config.yaml`), with a `written_by` block
        (`multi2cap.provenance`); `load_train_config` reads it back as a recipe."""
        tree = {**self.model_dump(mode="json"), WRITTEN_BY_KEY: provenance()}
        atomic_write_text(Path(path), yaml.safe_dump(tree, sort_keys=False))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"optim.lr=1e-4"` -> (["optim", "lr"], 0.0001)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    return key.strip().split("."), _parse_value(raw.strip())


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _parse_value(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        return raw
    return _coerce_numbers(value)


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted `key=value` in a copy of the nested dict `tree` (sections are created).

    A boolean met where the path needs a section stands for that section's `enabled` flag
    (`model.grounding: true` + `model.grounding.pool=time` -> `{enabled: true, pool: time}`)."""
    result = _deep_copy(tree)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if isinstance(child, bool):
                child = node[part] = {"enabled": child}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


_PATH_FIELDS = (
    ("data", "train_manifest"),
    ("data", "val_manifest"),
    ("init_from",),
    ("runtime", "output_dir"),
)


def load_train_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> TrainConfig:
    """Read a recipe, apply overrides, validate.

    `path` is a YAML file or the name of a recipe shipped with the package (`pretrain_vggcaps`,
    see `multi2cap.recipes`). Relative paths in a recipe file (manifests, `init_from`,
    `init_backbones` folders, `runtime.output_dir`) are taken from the file's folder, so a recipe
    means the same wherever it is run from; those of a packaged recipe from the current directory
    (the user's project, not the installed package); paths given as overrides are relative to
    the current directory. `output_dir` (the CLI's `--out`) wins over `runtime.output_dir`.
    """
    tree: dict[str, Any] = {}
    source = "<overrides>"
    if path is not None:
        found = find_recipe(path)
        if found is None:
            raise ConfigError(
                f"recipe not found: {path} is no file, and no recipe shipped with multi2cap has "
                f"that name ({', '.join(recipe_names())})"
            )
        recipe, base = found
        source = str(recipe)
        try:
            loaded = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{recipe}: not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{recipe}: the top level must be a mapping of sections")
        loaded.pop(WRITTEN_BY_KEY, None)  # a run's train_config.yaml used as a recipe
        tree = _resolve_paths(loaded, base)
    tree = apply_overrides(tree, list(overrides or []))
    if output_dir is not None:
        tree.setdefault("runtime", {})["output_dir"] = str(output_dir)
    tree = _coerce_numbers(tree)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{source}: {problems}") from err


def _resolve_paths(tree: dict[str, Any], base: Path) -> dict[str, Any]:
    result = _deep_copy(tree)
    for field_path in _PATH_FIELDS:
        node: Any = result
        for part in field_path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(field_path[-1]), str):
            value = Path(node[field_path[-1]]).expanduser()
            node[field_path[-1]] = str(value if value.is_absolute() else base / value)
    init = result.get("init_backbones")
    if isinstance(init, dict):  # folders relative to the recipe; hub ids kept
        for role, source in init.items():
            if not isinstance(source, str) or Path(source).expanduser().is_absolute():
                continue
            if source.startswith(("./", "../")) or (base / source).exists():
                init[role] = str(base / source)
    return result


def _coerce_numbers(tree: Any) -> Any:
    """YAML 1.1 reads `5e-5` as a string; read such leaves as floats everywhere in the tree."""
    if isinstance(tree, dict):
        return {k: _coerce_numbers(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_coerce_numbers(v) for v in tree]
    if isinstance(tree, str) and _SCIENTIFIC.match(tree.strip()):
        return float(tree)
    return tree
