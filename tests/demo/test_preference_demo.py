"""`multi2cap demo --preference`: the preference stage's recipe is a valid `stage: preference`
recipe built from the fine-tuning one, and the before / after figures (mean +- std over seeds,
per-seed differences) reach report.md's table and results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multi2cap.demo import preference
from multi2cap.demo.config import DemoConfig
from multi2cap.demo.report import write_results_json
from multi2cap.demo.training import ModelRun, SeedOutcome, demo_recipe, system_stages
from multi2cap.train.config import TrainConfig


def test_the_preference_recipe_tunes_the_finetuned_checkpoint(tmp_path: Path) -> None:
    manifests = {name: tmp_path / f"{name}.jsonl" for name in ("finetune", "val", "pretrain")}
    for quick, clips in ((True, None), (False, preference.CLIPS)):
        config = DemoConfig(workdir=tmp_path, quick=quick, preference=True)
        base = demo_recipe(config, 3, "finetune", manifests, None, None, tmp_path / "f")
        recipe = preference.preference_recipe(
            3, manifests, tmp_path / "final", tmp_path / "p", base, quick=quick
        )
        parsed = TrainConfig.model_validate(recipe)
        assert parsed.stage == "preference" and parsed.seed == 3
        assert parsed.init_from == str(tmp_path / "final")
        assert parsed.data.train_manifest == str(manifests["finetune"])
        assert parsed.data.val_manifest == base["data"]["val_manifest"]
        assert parsed.preference.candidates.max_clips == clips
        assert parsed.preference.train == ["llm_lora"] and parsed.preference.beta == 0.05
        assert parsed.runtime.output_dir == str(tmp_path / "p") and parsed.runtime.cpu
        assert parsed.eval.every_epochs == 1  # validated before and after
        assert system_stages(config) == ("pretrain", "finetune", "preference")
    assert system_stages(DemoConfig(workdir=tmp_path)) == ("pretrain", "finetune")


def _outcome(seed: int, before: float, after: float | None) -> SeedOutcome:
    runs = []
    for name in ("multi2cap", "audio_only_baseline"):
        run = ModelRun(name, Path("p"), Path("f"), Path("c"))
        run.scores = {"cider_d": before, "source_f1": 0.5, "source_f1_faint": 0.2}
        if after is not None:
            run.preference_scores = {"cider_d": after, "source_f1": 0.6, "source_f1_faint": 0.2}
        runs.append(run)
    return SeedOutcome(seed, runs, {"source_f1": 0.8, "source_f1_faint": 0.6}, 10.0)


def test_before_after_over_seeds_reaches_the_report_and_results(tmp_path: Path) -> None:
    outcomes = [_outcome(0, 0.5, 0.6), _outcome(1, 0.4, 0.3), _outcome(2, 0.6, 0.8)]
    summary = preference.before_after(outcomes)
    cider = summary["multi2cap"]["cider_d"]
    assert cider["before"]["mean"] == pytest.approx(0.5)
    assert cider["after"]["per_seed"] == [0.6, 0.3, 0.8]
    assert cider["difference"]["per_seed"] == pytest.approx([0.1, -0.1, 0.2])
    assert cider["difference"]["mean"] == pytest.approx(0.2 / 3)
    assert summary["audio_only_baseline"]["source_f1"]["difference"]["mean"] == pytest.approx(0.1)
    table = preference.before_after_markdown(outcomes)
    assert "| multi2cap | CIDEr-D | 50.0 +- 10.0 | 56.7 +- 25.2 | +6.7 +- 15.3 |" in table
    assert "+10.0, -10.0, +20.0" in table

    results = json.loads(write_results_json(tmp_path / "r.json", outcomes, {}, {}, 1.0).read_text())
    assert results["preference"]["multi2cap"]["cider_d"]["after"]["mean"] == pytest.approx(1.7 / 3)
    # Without --preference nothing of it is written.
    plain = [_outcome(0, 0.5, None)]
    assert preference.before_after(plain) == {}
    assert "preference" not in json.loads(
        write_results_json(tmp_path / "p.json", plain, {}, {}, 1.0).read_text()
    )
