"""Checkpoints by hub id (offline, from a pre-populated huggingface_hub cache) and
`multi2cap push` (a generated model card; the upload through HfApi to a loopback hub)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_cache import populate_hub_cache
from loopback_hub import loopback_hub
from typer.testing import CliRunner

from multi2cap.assets import AssetNotFoundError
from multi2cap.cli.main import app
from multi2cap.model.multi2cap import Multi2Cap


def _env(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", **extra}


def test_from_pretrained_by_hub_id_offline(run_best: Path, offline_cache: Path) -> None:
    populate_hub_cache(offline_cache, "org/name", run_best)
    wave = np.random.default_rng(0).uniform(-0.3, 0.3, 16000).astype(np.float32)
    expected = Multi2Cap.from_pretrained(run_best).caption(wave)
    assert Multi2Cap.from_pretrained("org/name").caption(wave) == expected
    assert Multi2Cap.from_pretrained("org/name@main").caption(wave) == expected
    with pytest.raises(
        AssetNotFoundError, match=r"'org/missing' does not exist, and as a hub id.*hf download"
    ):
        Multi2Cap.from_pretrained("org/missing")


def test_push_to_folder_writes_the_checkpoint_and_its_card(run_best: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["push", str(run_best), "org/name", "--to-folder", str(out)]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert {"README.md", "best.json", "config.yaml", "train_config.yaml",
            "trainable.safetensors", "backbones.safetensors"} <= set(names)  # fmt: skip
    assert any(n.startswith("tokenizer/") for n in names)
    for name in ("trainable.safetensors", "config.yaml", "best.json"):
        assert (out / name).read_bytes() == (run_best / name).read_bytes()
    card = (out / "README.md").read_text()
    assert "# org/name" in card and "K = 2" in card
    assert "| llm | `random weights, inline config (hidden_size 64, num_hidden_layers 2)` |" in card
    assert "Stage `finetune`" in card and "lr 0.0001" in card and "batch_size 384" in card
    assert "`cider_d` = 0.1234 at epoch 3" in card and "| bleu_4 | 0.051 |" in card
    assert "@inproceedings{cho2025multi2cap" in card and "Written by: multi2cap_version" in card
    assert (
        "/home/alice" not in card and "/home/alice" not in (out / "train_config.yaml").read_text()
    )
    assert "clotho_dev.jsonl" in card

    bad = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["push", str(tmp_path), "org/name", "--to-folder", str(out)]
    )
    assert bad.exit_code == 2 and "not a Multi2Cap checkpoint" in bad.output
    bad = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["push", str(run_best), "no-slash", "--to-folder", str(out)]
    )
    assert bad.exit_code == 2 and "org/name" in bad.output


def test_push_uploads_through_the_hub_protocol_and_loads_back(
    run_best: Path, tmp_path: Path, offline_cache: Path
) -> None:
    token = "hf_loopbacktesttoken0123456789"
    staged = tmp_path / "staged"
    CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["push", str(run_best), "org/name", "--to-folder", str(staged)]
    )
    with loopback_hub() as hub:
        result = subprocess.run(
            [sys.executable, "-m", "multi2cap.cli.main", "push", str(run_best), "org/name",
             "--private", "-m", "first upload"],
            # The suite runs with HF_HUB_OFFLINE=1 (scripts/test.sh); this upload goes to the
            # loopback hub only, so the subprocess is allowed to reach it.
            env=_env(
                HF_ENDPOINT=hub.url, HF_TOKEN=token, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="0"
            ),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    assert f"Bearer {token}" in hub.tokens and hub.private["org/name"] is True
    assert hub.messages == ["first upload"]
    assert len(hub.cards) == 1 and hub.cards[0].startswith("---\nlibrary_name: multi2cap")
    received = hub.repos["org/name"]
    expected = {p.relative_to(staged).as_posix(): p.read_bytes()
                for p in staged.rglob("*") if p.is_file()}  # fmt: skip
    assert received == expected

    uploaded = tmp_path / "uploaded"
    for name, data in received.items():
        (uploaded / name).parent.mkdir(parents=True, exist_ok=True)
        (uploaded / name).write_bytes(data)
    populate_hub_cache(offline_cache, "org/name", uploaded)
    wave = np.random.default_rng(1).uniform(-0.3, 0.3, 24000).astype(np.float32)
    original = Multi2Cap.from_pretrained(run_best).caption(wave, num_beams=2)
    assert Multi2Cap.from_pretrained("org/name").caption(wave, num_beams=2) == original


def test_caption_cli_by_hub_id_offline(
    run_best: Path, offline_cache: Path, sounds: list[Path]
) -> None:
    populate_hub_cache(offline_cache, "org/name", run_best)
    runner = CliRunner(env={"COLUMNS": "400"})
    result = runner.invoke(app, ["caption", str(sounds[0]), "--checkpoint", "org/name"])
    assert result.exit_code == 0, result.output
    assert Multi2Cap.from_pretrained(run_best).caption(sounds[0])[0] in result.output
    result = runner.invoke(app, ["caption", str(sounds[0]), "-c", "org/missing"])
    assert result.exit_code == 2 and "org/missing" in result.output
    assert "Traceback" not in result.output
