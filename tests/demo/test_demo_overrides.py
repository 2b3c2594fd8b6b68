"""`multi2cap demo --set KEY=VALUE`: either reading of the grounding and of Eq. 3 without code
edits, checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from multi2cap.demo import preference
from multi2cap.demo.config import DemoConfig, system_recipe
from multi2cap.demo.training import Backbones, demo_model, demo_recipe
from multi2cap.model.config import Multi2CapConfig
from multi2cap.train.config import TrainConfig

SETS = ["model.grounding.pool=time", "optim.vfr_reduction=mean"]


def _recipe(config: DemoConfig, stage: str, tmp_path: Path) -> dict:
    backbones = Backbones(tmp_path / "audio", tmp_path / "vision", tmp_path / "llm")
    manifests = {k: tmp_path / f"{k}.jsonl" for k in ("pretrain", "finetune", "val")}
    model = demo_model(backbones, True) if stage == "pretrain" else None
    init = None if stage == "pretrain" else tmp_path / "pre" / "final"
    return demo_recipe(config, 0, stage, manifests, model, init, tmp_path / stage)


def test_overrides_reach_the_grounded_recipes(tmp_path: Path) -> None:
    config = DemoConfig(workdir=tmp_path, quick=True, overrides=SETS)
    pre = TrainConfig.model_validate(system_recipe(_recipe(config, "pretrain", tmp_path), SETS))
    assert pre.optim.vfr_reduction == "mean"
    assert Multi2CapConfig.model_validate(pre.model).grounding.pool == "time"
    # Fine-tuning continues from the pre-trained checkpoint: no model.* there (its
    # architecture is fixed), the optimisation settings apply.
    fine = system_recipe(_recipe(config, "finetune", tmp_path), SETS)
    assert "model" not in fine and fine["optim"]["vfr_reduction"] == "mean"
    # The preference stage (`--preference`) starts from the fine-tuned checkpoint: the same.
    manifests = {k: tmp_path / f"{k}.jsonl" for k in ("pretrain", "finetune", "val")}
    base = _recipe(config, "finetune", tmp_path)
    tuned = system_recipe(
        preference.preference_recipe(
            0, manifests, tmp_path / "fine", tmp_path / "p", base, quick=True
        ),
        SETS,
    )
    assert "model" not in tuned
    assert TrainConfig.model_validate(tuned).optim.vfr_reduction == "mean"
    # Without overrides the recipes are the paper's readings: space pooling, Eq. 3's sum.
    plain = TrainConfig.model_validate(_recipe(DemoConfig(workdir=tmp_path), "pretrain", tmp_path))
    assert plain.optim.vfr_reduction == "sum"
    assert Multi2CapConfig.model_validate(plain.model).grounding.pool == "space"


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("model.grounding.pool=spatial", "pool"),
        ("optim.vfr_reduction=median", "vfr_reduction"),
        ("model.k=2", "perfect square"),
        ("optim.lrr=1", "lrr"),
        ("grounding", "key=value"),
    ],
)
def test_bad_overrides_are_refused_before_any_work(bad: str, named: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=named):
        DemoConfig(workdir=tmp_path / "w", overrides=[bad])
    from multi2cap.cli.main import app

    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "w"), "--set", bad])
    assert result.exit_code == 2, result.output
    assert named in result.output and not (tmp_path / "w").exists()
