"""`train(config)`: the loop of the recipe's stage. The paper's two stages run in
`multi2cap.train.engine`; `stage: preference` (DPO after fine-tuning) in
`multi2cap.train.preference`, which reuses the engine's parts."""

from __future__ import annotations

from multi2cap.train import engine
from multi2cap.train.config import TrainConfig
from multi2cap.train.engine import TrainResult


def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Run (or with `resume`, continue from the newest checkpoint in the output folder) a
    recipe of any stage."""
    if config.stage == "preference":
        from multi2cap.train.preference import train_preference

        return train_preference(config, resume=resume)
    return engine.train(config, resume=resume)
