"""Recipes ship inside the package (a wheel install has them): `--config pretrain_vggcaps` by
name, or a path; a packaged recipe's relative paths are the user's project folder's, never the
installed package's. scripts/check_wheel.sh loads one by name from an installed wheel. (The
readings the recipes follow are checked in tests/train/test_recipes.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from multi2cap.recipes import RECIPES_DIR, find_recipe, recipe_names
from multi2cap.train.config import ConfigError, load_train_config

REPO = Path(__file__).resolve().parents[2]


def test_the_recipes_live_in_the_package_only() -> None:
    assert RECIPES_DIR.parent.name == "multi2cap" and RECIPES_DIR.parent.parent.name == "src"
    assert {"pretrain_vggcaps", "finetune_clotho", "finetune_audiocaps", "tiny_pretrain"} <= set(
        recipe_names()
    )
    assert not list(REPO.glob("configs/*.yaml"))  # one copy: no configs/ beside the package


def test_a_packaged_recipe_by_name_takes_its_paths_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    by_name = load_train_config("pretrain_vggcaps")
    assert by_name.data.train_manifest == str(tmp_path / "data/manifests/vggcaps_train.jsonl")
    assert by_name.runtime.output_dir == str(tmp_path / "runs/pretrain_vggcaps")
    assert (by_name.optim.lr, by_name.optim.batch_size) == (5e-5, 320)
    for same in ("pretrain_vggcaps.yaml", RECIPES_DIR / "pretrain_vggcaps.yaml"):
        assert load_train_config(same) == by_name
    fine = load_train_config("finetune_clotho")
    assert fine.init_from == str(tmp_path / "runs/pretrain_vggcaps/best")


def test_a_file_wins_over_a_name_and_keeps_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "tiny_pretrain").write_text("stage: pretrain\nruntime:\n  output_dir: mine\n")
    monkeypatch.chdir(project)
    assert find_recipe("tiny_pretrain") == ((project / "tiny_pretrain").resolve(), project)
    assert load_train_config("tiny_pretrain").runtime.output_dir == str(project / "mine")


def test_an_unknown_recipe_lists_the_packaged_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no recipe shipped with multi2cap has that name"):
        load_train_config(tmp_path / "nope.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "multi2cap", "train", "--config", "pretrain_vgcaps"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert "recipe not found: pretrain_vgcaps" in result.stderr
    assert "pretrain_vggcaps" in result.stderr.split("pretrain_vgcaps", 1)[1]
