"""Ablation runners end to end: tiny random models trained for one step on real Tux Paint clips
through the real trainer, evaluated with the real metrics, through `multi2cap analyze model`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from multi2cap.analysis import ablations as ab
from multi2cap.analysis import k_sweep as ks
from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.recipes import RECIPES_DIR
from stamp_manifests import write_stamp_manifest

CONFIGS = RECIPES_DIR
# 4 clips, one optimizer step per epoch, one epoch; validation off; short captions.
FAST = [
    "optim.batch_size=4",
    "optim.micro_batch_size=4",
    "optim.epochs=1",
    "augment.p_stretch=0.0",  # the phase vocoder is the slow part of loading
    "eval.every_epochs=0",
    "runtime.progress=false",
    "runtime.tensorboard=false",
]
METRICS = "bleu_4,cider_d"


@pytest.fixture(scope="module")
def manifest(tuxpaint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stamp_manifest(tuxpaint_dir, tmp_path_factory.mktemp("abl") / "clips.jsonl", 4)


def _app():
    from multi2cap.cli.analyze_model import register
    from multi2cap.cli.main import app

    register(app)
    return app


def _train_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"--set={o}" for o in [f"data.train_manifest={manifest}", *FAST]]
    return [
        *("--out", str(out), "--eval-manifest", str(manifest)),
        *("--recipe", str(CONFIGS / "tiny_pretrain.yaml"), "--metrics", METRICS),
        *("--max-new-tokens", "4", *sets, *extra),
    ]


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(_app(), ["analyze", "model", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def _tiny_checkpoint(folder: Path, k: int, pool: str = "space") -> Path:
    torch.manual_seed(0)
    texts = ["a frog calls", "the sound of a frog"]
    model = Multi2Cap(Multi2CapConfig.tiny(texts, k=k, grounding={"pool": pool}))
    return model.save_pretrained(folder)


def test_cost_counts_the_flops_of_each_extra_ground_token(manifest: Path, tmp_path: Path) -> None:
    """Under grounding.pool space, K=4 costs exactly three more tokens than K=1 in the grounding
    path: each token's VFR query scores and averages the T audio tokens, runs the VFR MLP and
    the adapter's grounding MLP; the AV-grounding (2-D pooling, not a matrix product) costs
    the same for every K."""
    settings = ks.CostSettings(manifest, seconds=1.0, warmup=0, runs=1, max_new_tokens=4)
    costs = {k: ks.measure_cost(_tiny_checkpoint(tmp_path / f"k{k}", k), settings) for k in (1, 4)}
    model = Multi2Cap(Multi2CapConfig.tiny(["a"]), load_vision=False)
    with torch.no_grad():
        tokens, _ = model.encode_audio(torch.zeros(1, 16000), torch.tensor([16000]))
    t = tokens.shape[1]
    d_a = d_g = 32
    hidden, d_llm = 64, 64
    per_token = 2 * t * d_a * 2 + 2 * (d_a * hidden + hidden * d_g)
    per_token += 2 * (d_g * d_llm + d_llm * d_llm)
    extra = (costs[4]["gflops_grounding"] - costs[1]["gflops_grounding"]) * 1e9
    assert extra == pytest.approx(3 * per_token, rel=1e-9)
    assert costs[4]["gflops_av_grounding"] == costs[1]["gflops_av_grounding"] > 0
    for cost in costs.values():
        total = cost["gflops_av_grounding"] + cost["gflops_vfr_adapter"]
        assert cost["gflops_grounding"] == pytest.approx(total, rel=1e-12)
    assert costs[4]["gflops_prefill"] > costs[1]["gflops_prefill"] > costs[1]["gflops_vfr_adapter"]
    for cost in costs.values():
        assert 0.0 <= cost["vcls_r1"] <= 100.0 and cost["latency_ms"] > 0
        assert cost["device"].startswith("cpu")


def test_k_sweep_cli_from_checkpoints_and_training(manifest: Path, tmp_path: Path) -> None:
    ckpts = [_tiny_checkpoint(tmp_path / f"k{k}", k) for k in (1, 4)]
    out = tmp_path / "given"
    common = ["--eval-manifest", str(manifest), "--probe-manifest", str(manifest)]
    common += ["--metrics", METRICS, "--max-new-tokens", "4", "--cost-seconds", "1"]
    common += ["--latency-runs", "1", "--warmup", "0"]
    _invoke(["k-sweep", "--out", str(out), *common, *(f"--checkpoint={c}" for c in ckpts)])
    rows = _rows(out / "k_sweep.csv")
    assert [(r["k"], r["pool"]) for r in rows] == [("1", "space"), ("4", "space")]
    assert float(rows[1]["gflops_grounding"]) > float(rows[0]["gflops_grounding"]) > 0
    assert all(r["cider_d"] != "" and float(r["latency_ms"]) > 0 for r in rows)
    md = (out / "k_sweep.md").read_text()
    assert "Paper values" in md and "GFLOPs per grounding token" in md and "0.0343" in md
    slopes = json.loads((out / "k_sweep_slopes.json").read_text())
    rise = float(rows[1]["gflops_grounding"]) - float(rows[0]["gflops_grounding"])
    assert slopes["measured"]["gflops_grounding"] == pytest.approx(rise / 3, rel=1e-6)

    # Training mode with fine-tuning: the cell's K and pooling reach the fine-tuned model via
    # init_from (the tiny recipe says nothing of the pooling: --pool time sets it).
    trained = tmp_path / "trained"
    args = _train_args(manifest, trained, "--k", "2", "--pool", "time")
    args += ["--probe-manifest", str(manifest)]
    args += ["--finetune-recipe", str(CONFIGS / "tiny_finetune.yaml"), "--cost-seconds", "1"]
    _invoke(["k-sweep", *args, "--latency-runs", "1", "--warmup", "0"])
    final = trained / "cells" / "k_2" / "finetune" / "final"
    saved = Multi2CapConfig.load(final / "config.yaml")
    assert (saved.k, saved.grounding.pool) == (2, "time")
    result = json.loads((trained / "cells" / "k_2" / "result.json").read_text())
    assert result["checkpoint"] == str(final)
    assert len((trained / "cells" / "k_2" / "captions.jsonl").read_text().splitlines()) == 4


def test_k_sweep_rejects_a_non_square_k_under_space(manifest: Path, tmp_path: Path) -> None:
    args = _train_args(manifest, tmp_path / "bad", "--k", "2", "--probe-manifest", str(manifest))
    result = CliRunner().invoke(_app(), ["analyze", "model", "k-sweep", *args])
    assert result.exit_code == 2, result.output
    assert "perfect square" in result.output and "Traceback" not in result.output


def test_grid_cli_resumes_and_skips_finished_cells(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    args = ["grid", *_train_args(manifest, out), "--alpha", "0.02", "--beta", "0.05"]
    args += ["--beta", "0.1", "--table-metric", "cider_d", "--table-metric", "bleu_4"]
    _invoke(args)
    cells = out / "cells"
    rows = _rows(out / "grid.csv")
    assert [(r["alpha"], r["beta"]) for r in rows] == [("0.02", "0.05"), ("0.02", "0.1")]
    first = json.loads((cells / "alpha_0.02_beta_0.1" / "result.json").read_text())
    md = (out / "grid.md").read_text()
    cider, bleu = (100 * first["metrics"][m] for m in ("cider_d", "bleu_4"))
    assert f"{cider:.1f} / {bleu:.1f}" in md
    assert Multi2CapConfig.load(Path(first["checkpoint"]) / "config.yaml").beta == 0.1

    # Interrupt the second cell after its last step checkpoint (no final model, no result);
    # the rerun skips the first cell and resumes the second instead of retraining it.
    done = cells / "alpha_0.02_beta_0.05" / "result.json"
    stamp = done.stat().st_mtime_ns
    second = cells / "alpha_0.02_beta_0.1"
    (second / "result.json").unlink()
    shutil.rmtree(second / "pretrain" / "final")
    output = _invoke(args)
    assert "finished earlier, skipped" in output and "resuming" in output
    assert done.stat().st_mtime_ns == stamp
    log_rows = (second / "pretrain" / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log_rows] == ["step", "1"]
    again = json.loads((second / "result.json").read_text())
    assert again["metrics"] == pytest.approx(first["metrics"])


def test_augment_cli(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "aug"
    _invoke(["augment", *_train_args(manifest, out)])
    rows = {r["metric"]: r for r in _rows(out / "augment.csv")}
    assert set(rows) == {"bleu_4", "cider_d"}
    assert all(r["without"] != "" and r["with"] != "" for r in rows.values())
    for name, enabled in (("no_augment", False), ("augment", True)):
        recipe = out / "cells" / name / "pretrain" / "train_config.yaml"
        assert yaml.safe_load(recipe.read_text())["augment"]["enabled"] is enabled
    assert "w/ augment" in (out / "augment.md").read_text()


def test_grounding_vs_baseline_cli(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "gvb"
    _invoke(["grounding-vs-baseline", *_train_args(manifest, out), "--seed", "0", "--seed", "1"])
    cells = out / "cells"
    assert not Multi2CapConfig.load(cells / "baseline_seed1/pretrain/final/config.yaml").grounding
    assert Multi2CapConfig.load(cells / "grounding_seed1/pretrain/final/config.yaml").grounding
    results = {
        p.parent.name: json.loads(p.read_text()) for p in sorted(cells.glob("*/result.json"))
    }
    rows = {r["metric"]: r for r in _rows(out / "grounding_vs_baseline.csv")}
    for metric in ("bleu_4", "cider_d"):
        diffs = [
            results[f"grounding_seed{s}"]["metrics"][metric]
            - results[f"baseline_seed{s}"]["metrics"][metric]
            for s in (0, 1)
        ]
        assert float(rows[metric]["diff_mean"]) == pytest.approx(np.mean(diffs))
        assert float(rows[metric]["diff_std"]) == pytest.approx(np.std(diffs, ddof=1))
        assert rows[metric]["seeds"] == "0;1"


def test_compare_arms_and_grid_table_values(tmp_path: Path) -> None:
    def cell(arm: str, seed: int, cider: float, spice: float | None) -> ab.CellResult:
        labels = {"arm": arm, "seed": seed, "alpha": 0.02, "beta": 0.05 * (seed + 1)}
        metrics = {"cider_d": cider, "spice": spice}
        return ab.CellResult(f"{arm}{seed}", labels, "ckpt", "ckpt", metrics)

    results = [
        cell("grounding", 0, 0.50, 0.15),
        cell("baseline", 0, 0.45, 0.14),
        cell("grounding", 1, 0.52, None),
        cell("baseline", 1, 0.40, 0.13),
        cell("grounding", 2, 0.40, 0.12),
        cell("baseline", 2, 0.43, 0.12),
    ]
    comparisons = {c.metric: c for c in ab.compare_arms(results)}
    cider = comparisons["cider_d"]
    assert cider.diff == pytest.approx([0.05, 0.12, -0.03])
    assert cider.diff_mean == pytest.approx(0.14 / 3)
    assert cider.diff_std == pytest.approx(np.std([0.05, 0.12, -0.03], ddof=1))
    assert cider.wins == 2
    assert comparisons["spice"].seeds == [0, 2]  # seed 1 lacks SPICE in one arm
    ab.write_comparison(list(comparisons.values()), tmp_path)
    assert "+5.0, +12.0, -3.0" in (tmp_path / "grounding_vs_baseline.md").read_text()

    ab.write_grid([results[0], results[3], results[4]], tmp_path)  # betas 0.05, 0.1, 0.15
    md = (tmp_path / "grid.md").read_text()
    assert "| α \\ β | 0.05 | 0.1 | 0.15 |" in md
    assert "| 0.02 | 50.0 / 15.0 | 40.0 / 13.0 | 40.0 / 12.0 |" in md
