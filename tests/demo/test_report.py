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


def _report_from_results(tmp_path: Path, results: dict, quick: bool) -> tuple[str, str]:
    """report.md and the terminal summary, written from a `results.json`-shaped dict (no demo
    run): one seed, its systems' scores and the stage-0 tagger's."""
    import io

    from rich.console import Console

    from multi2cap.data.manifest import ManifestRecord, write_manifest
    from multi2cap.demo.config import DemoConfig
    from multi2cap.demo.report import print_results, write_report
    from multi2cap.demo.scenes import Scene

    runs = []
    for name, scores in results["systems"].items():
        run = ModelRun(name, tmp_path / "p", tmp_path / "f", tmp_path / "c")
        run.scores, run.captions = dict(scores), {"test_1": "a dog barks"}
        run.history = [
            {"kind": "train", "stage": stage, "step": step, "loss": 2.0 / step}
            for stage in ("pretrain", "finetune")
            for step in (1, 2)
        ]
        runs.append(run)
    outcomes = [SeedOutcome(0, runs, results["stage0_audio_tagger"], 1.0)]
    record = ManifestRecord("test_1", "demo", "test", str(tmp_path / "a.wav"), ["a dog barks"])
    manifests = {
        "pretrain": write_manifest([record], tmp_path / "pretrain.jsonl"),
        "test": write_manifest([record], tmp_path / "test.jsonl"),
    }
    scenes = [Scene("test_1", "test", "dog", [], ["a dog barks"])]
    config = DemoConfig(workdir=tmp_path / "out", quick=quick)
    config.workdir.mkdir()
    report = write_report(config, scenes, manifests, outcomes, 60.0, {"all": 60.0}, "(probes)")
    out = io.StringIO()
    print_results(Console(file=out, width=100, color_system=None), config, scenes, outcomes, report)
    return report.read_text(), out.getvalue()


# The issue's case: `demo --quick`, a tagger that learnt nothing, and "+17.8 BLEU-1".
QUICK_RESULTS = {
    "systems": {
        "multi2cap": {"bleu_1": 0.412, "cider_d": 0.05, "source_f1": 0.0, "vocab": 9.0},
        "audio_only_baseline": {"bleu_1": 0.234, "cider_d": 0.04, "source_f1": 0.0, "vocab": 7},
    },
    "stage0_audio_tagger": {"source_f1": 0.0, "source_f1_faint": 0.0},
}


def test_a_quick_report_says_smoke_test_and_shows_no_difference_from_a_blank_tagger(tmp_path):
    report, terminal = _report_from_results(tmp_path, QUICK_RESULTS, quick=True)
    for text in (report, " ".join(terminal.split())):
        assert "Smoke test (--quick)" in text and "say nothing about the method" in text
        assert "No difference between the systems is reported" in text
        assert "+17.8" not in text and "17.8" not in text
    assert "| difference" not in report
    assert "| multi2cap | 41.2 |" in report  # each system's scores are still there


def test_a_full_run_with_a_tagger_that_learnt_shows_the_difference(tmp_path):
    learnt = {**QUICK_RESULTS, "stage0_audio_tagger": {"source_f1": 0.4, "source_f1_faint": 0.2}}
    report, terminal = _report_from_results(tmp_path, learnt, quick=False)
    assert "| difference (multi2cap - audio_only_baseline) | 17.8 |" in report
    assert "Smoke test" not in report + terminal and "No difference" not in report + terminal
