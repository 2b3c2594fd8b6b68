"""The demo's multi-seed summary and results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multi2cap.demo.report import seed_summary, seeds_markdown, write_results_json
from multi2cap.demo.training import ModelRun, SeedOutcome


def _outcome(seed: int, grounded: dict[str, float], baseline: dict[str, float]) -> SeedOutcome:
    runs = []
    for name, scores in (("multi2cap", grounded), ("audio_only_baseline", baseline)):
        run = ModelRun(name, Path("p"), Path("f"), Path("c"))
        run.scores = {"bleu_1": 0.5, "source_f1_faint": 0.1, **scores}
        runs.append(run)
    return SeedOutcome(seed, runs, {"source_f1": 0.8, "source_f1_faint": 0.6}, 10.0)


OUTCOMES = [
    _outcome(0, {"cider_d": 0.60, "source_f1": 0.8}, {"cider_d": 0.50, "source_f1": 0.7}),
    _outcome(1, {"cider_d": 0.40, "source_f1": 0.6}, {"cider_d": 0.50, "source_f1": 0.7}),
    _outcome(2, {"cider_d": 0.50, "source_f1": 0.7}, {"cider_d": 0.35, "source_f1": 0.7}),
]


def test_seed_summary_reports_mean_std_and_the_per_seed_difference_either_way():
    summary = seed_summary(OUTCOMES)
    cider = summary["cider_d"]
    assert cider["multi2cap"]["mean"] == pytest.approx(0.5)
    assert cider["multi2cap"]["std"] == pytest.approx(0.1)  # sample std of .6 .4 .5
    assert cider["difference"]["per_seed"] == pytest.approx([0.1, -0.1, 0.15])
    assert cider["difference"]["mean"] == pytest.approx(0.05)
    assert summary["source_f1"]["audio_only_baseline"]["std"] == pytest.approx(0.0)
    table = seeds_markdown(OUTCOMES)
    assert "| CD | 50.0 +- 10.0 |" in table and "+10.0, -10.0, +15.0" in table


def test_results_json_has_the_issue_schema_in_raw_scale(tmp_path):
    path = write_results_json(
        tmp_path / "results.json", OUTCOMES, {"n": 200, "rows": {}}, {"probes": 1.0}, 99.0
    )
    results = json.loads(path.read_text())
    assert results["systems"]["multi2cap"]["cider_d"] == 0.60  # the first seed, raw scale
    assert results["systems"]["audio_only_baseline"]["source_f1"] == 0.7
    assert results["probe"]["n"] == 200 and results["wall_s"]["total"] == 99.0
    assert results["stage0_audio_tagger"]["source_f1"] == 0.8
    assert results["seeds"]["seeds"] == [0, 1, 2]
    assert results["seeds"]["summary"]["cider_d"]["difference"]["mean"] == pytest.approx(0.05)


def test_one_seed_writes_no_seed_summary(tmp_path):
    path = write_results_json(tmp_path / "r.json", OUTCOMES[:1], {}, {}, 1.0)
    assert "seeds" not in json.loads(path.read_text())


def test_a_stage_the_trainer_stopped_early_is_not_marked_done(tmp_path):
    from multi2cap.demo.training import finished_stage
    from multi2cap.train.engine import TrainResult

    def result(stop_reason):
        return TrainResult(tmp_path, tmp_path / "final", None, None, None, 7, 0, stop_reason)

    assert finished_stage(result(None), "multi2cap")["final"] == str(tmp_path / "final")
    with pytest.raises(RuntimeError, match=r"stopped early \(signal SIGTERM\) at step 7"):
        finished_stage(result("signal SIGTERM"), "multi2cap")


def test_a_cached_training_stage_is_reused_only_for_the_same_recipe_and_backbones(tmp_path):
    """A rerun of a newer demo, or one on retrained backbones, trains the stage again instead
    of reporting the old checkpoint (the stage's key changes)."""
    import json

    from multi2cap.demo import stage0
    from multi2cap.demo.training import Backbones, stage_key

    backbones = Backbones(audio=tmp_path / "a", vision=tmp_path / "v", llm=tmp_path / "l")
    config = stage0.Stage0Config()
    for folder, part in ((backbones.audio, "audio"), (backbones.vision, "vision")):
        folder.mkdir()
        settings = stage0.settings(config, part)
        (folder / stage0.DONE_FILE).write_text(json.dumps({"wall_s": 1.0, "settings": settings}))
    backbones.llm.mkdir()
    llm_done = backbones.llm / stage0.DONE_FILE
    llm_done.write_text(json.dumps({"wall_s": 1.0, "settings": stage0.settings(config, "llm")}))
    recipe = {"stage": "pretrain", "optim": {"epochs": 2}}
    key = stage_key(recipe, backbones, "")
    # Wall times are no part of it; the recipe, the backbones' settings and the chain are.
    llm_done.write_text(json.dumps({"wall_s": 9.0, "settings": stage0.settings(config, "llm")}))
    assert stage_key(recipe, backbones, "") == key
    assert stage_key({**recipe, "optim": {"epochs": 4}}, backbones, "") != key
    assert stage_key(recipe, backbones, "another pre-training") != key
    retrained = stage0.settings(stage0.Stage0Config(llm_epochs=1), "llm")
    llm_done.write_text(json.dumps({"wall_s": 1.0, "settings": retrained}))
    assert stage_key(recipe, backbones, "") != key


def test_the_terminal_table_fits_80_columns_with_whole_system_names():
    import io

    from rich.console import Console

    from multi2cap.demo.report import print_results
    from multi2cap.demo.scenes import Scene

    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    outcome = OUTCOMES[0]
    for run in outcome.runs:
        run.captions = {}
        run.scores.update({"bleu_4": 0.3, "rouge_l": 0.5, "meteor": 0.2, "vocab": 40.0})
    outcomes = [outcome, *OUTCOMES[1:]]
    for other in outcomes[1:]:
        for run, first in zip(other.runs, outcome.runs, strict=True):
            run.captions, run.scores = {}, {**first.scores, **run.scores}
    scenes = [Scene("test_1", "test", "dog", [], [])]
    print_results(console, None, scenes, outcomes, Path("r"))  # with the seeds table
    text = out.getvalue()
    assert "multi2cap" in text and "audio_only_baseline" in text and "…" not in text
    cider = next(line for line in text.splitlines() if "│ CD" in line)
    assert "60.0" in cider and "50.0" in cider  # the row holds both systems' CIDEr-D
    assert max(len(line) for line in text.splitlines()) <= 80
