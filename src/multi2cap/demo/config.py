"""What the demo runs (`DemoConfig`) and which metrics it reports: below `run.py`, `training.py`
and `report.py`, which all read them (so none of them imports another for its settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from multi2cap.demo.stage0 import Stage0Config

EVAL_METRICS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor", "cider_d", "vocab"]
"""The offline metrics every system of the demo is scored with (no asset beyond Java)."""


@dataclass
class DemoConfig:
    """What the demo runs. `quick` shrinks the scene set (under 3 minutes on 2 cores); `seeds`
    trains stage 0 and both systems on seeds `seed .. seed + seeds - 1` over the same scenes."""

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
    stage0: Stage0Config = field(default_factory=Stage0Config)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        small = self.quick
        self.n_train = self.n_train or (160 if small else 2000)
        self.n_val = self.n_val or (24 if small else 200)
        self.n_test = self.n_test or (40 if small else 200)
        self.pretrain_epochs = self.pretrain_epochs or 2
        self.finetune_epochs = self.finetune_epochs or 4
        if self.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {self.seeds}")
        if self.model and not self.base_url:
            raise ValueError("--model needs --base-url (an OpenAI-compatible endpoint)")
