"""`multi2cap demo --quick` end to end: real media in, report and measured numbers out."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.data.manifest import read_manifest
from multi2cap.model.config import word_vocabulary


@pytest.mark.slow
def test_quick_demo_runs_the_whole_pipeline(tmp_path, tuxpaint_dir):
    workdir = tmp_path / "demo"
    args = ["demo", "--quick", "--workdir", str(workdir), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # The demo's own lines only: no transformers bars from the dozens of tiny model loads.
    assert "Loading weights" not in result.output and "it/s]" not in result.output
    report = (workdir / "report.md").read_text()
    assert "| multi2cap |" in report and "| audio_only_baseline |" in report
    assert "Semantic fidelity of the grounding tokens" in report
    for name in ("metrics.png", "loss_curves.png", "probes/tsne.png"):
        assert (workdir / name).stat().st_size > 5_000
    with open(workdir / "captions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    assert all(row["references"] and row["in_picture"] and row["heard"] for row in rows)
    # An undertrained model may stop at once on some clips; most captions are words.
    assert sum(bool(row["caption_multi2cap"].strip()) for row in rows) >= len(rows) // 2
    # The builder really ran: VggCaps records for the training clips, from the offline backend.
    vggcaps = (workdir / "vggcaps" / "vggcaps.jsonl").read_text().splitlines()
    assert len(vggcaps) == 160 and '"backend": "offline"' in vggcaps[0]
    # Both systems went through pre-training and fine-tuning, each leaving a checkpoint, from the
    # stage-0 backbones loaded by path.
    backbones = workdir / "backbones"
    for system in ("multi2cap", "audio_only_baseline"):
        assert (workdir / "runs" / system / "finetune" / "final" / "config.yaml").is_file()
        recipe = yaml.safe_load(
            (workdir / "runs" / system / "pretrain" / "recipe.yaml").read_text()
        )
        assert recipe["model"]["audio"]["source"] == str(backbones / "audio_ced")
        assert recipe["model"]["llm"]["source"] == str(backbones / "llm")
    for name in ("audio_ced", "vision_clip", "llm"):
        assert (backbones / name / "stage0.json").is_file()
    # Nothing of validation or test reached stage 0: the LM's vocabulary is the training text's.
    train_texts = [
        c
        for name in ("pretrain_vggcaps", "finetune_train")
        for r in read_manifest(workdir / "manifests" / f"{name}.jsonl")
        for c in r.captions
    ]
    vocab = set(json.loads((backbones / "llm" / "tokenizer.json").read_text())["model"]["vocab"])
    held_out = {
        w
        for name in ("val", "test")
        for r in read_manifest(workdir / "manifests" / f"{name}.jsonl")
        for c in r.captions
        for w in word_vocabulary([c])
    }
    assert set(word_vocabulary(train_texts)) <= vocab
    assert (
        held_out - set(word_vocabulary(train_texts))
        and not (held_out - set(word_vocabulary(train_texts))) & vocab
    )
    # results.json: the schema of the issue, metrics in aac-metrics' raw scale.
    results = json.loads((workdir / "results.json").read_text())
    for system in ("multi2cap", "audio_only_baseline"):
        scores = results["systems"][system]
        assert {"bleu_1", "cider_d", "source_f1", "source_f1_faint"} <= set(scores)
        assert 0.0 <= scores["bleu_1"] <= 1.0 and 0.0 <= scores["source_f1"] <= 1.0
    assert results["probe"]["rows"]["g_hat"]["r1"] is not None
    assert {"stage 0 (backbones)", "training (both systems)", "total"} <= set(results["wall_s"])
    assert "Src-F1" in report

    # A rerun reuses every stage instead of recomputing it.
    stages_done = sorted(workdir.glob("runs/*/*/demo_stage_done.json"))
    assert len(stages_done) == 4
    stamps = [p.stat().st_mtime_ns for p in stages_done]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "cached" in again.output
    assert [p.stat().st_mtime_ns for p in stages_done] == stamps


@pytest.mark.slow
def test_demo_with_an_openai_compatible_endpoint(tmp_path, tuxpaint_dir, monkeypatch):
    """`--base-url/--model` sends both VggCaps stages to a real HTTP endpoint (the tests' loopback
    server, spoken to by the real SDK); the key comes from the environment and is never written."""
    from openai_loopback import LoopbackServer

    key = "sk-demo-SECRET-42"
    monkeypatch.setenv("DEMO_TEST_KEY", key)
    workdir = tmp_path / "demo"
    with LoopbackServer(key) as server:
        args = [
            "demo",
            *("--workdir", str(workdir), "--no-progress"),
            *("--n-train", "16", "--n-val", "8", "--n-test", "8"),
            *("--base-url", server.base_url, "--model", "loopback-vlm"),
            *("--api-key-env", "DEMO_TEST_KEY"),
        ]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not server.state.problems
    stages = {r["stage"] for r in server.state.requests}
    assert stages == {1, 2} and len(server.state.requests) == 32
    records = (workdir / "vggcaps" / "vggcaps.jsonl").read_text()
    assert '"backend": "openai"' in records and "sunlit courtyard" in records
    assert key not in result.output
    for path in workdir.rglob("*"):
        if path.is_file() and path.suffix in {".jsonl", ".json", ".md", ".csv", ".yaml"}:
            assert key not in path.read_text(encoding="utf-8", errors="ignore"), path
