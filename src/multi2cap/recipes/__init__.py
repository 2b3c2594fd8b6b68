"""The training recipes shipped inside the package (`multi2cap train --config pretrain_vggcaps`):
the paper's pre-training and fine-tuning settings, the Whisper baseline and tiny CPU recipes.

They are package data, so a wheel install has them too; this folder is their only copy (the
checkout has no `configs/`). A recipe is named by its file stem, or given as a path to any YAML
file. The relative paths inside a packaged recipe (manifests under `data/`, runs under `runs/`)
are taken from the current folder, the user's project, never from this folder inside the
installed package; a user's own recipe file keeps its paths relative to its own folder
(docs/training.md). Light on purpose: `multi2cap train --help` lists the names.
"""

from __future__ import annotations

import os
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent


def recipe_names() -> list[str]:
    """The packaged recipes' names (file stems), sorted."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def find_recipe(recipe: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """(the recipe file, the folder its relative paths are taken from), or None when `recipe` is
    neither a file nor the name of a packaged recipe (`pretrain_vggcaps` or
    `pretrain_vggcaps.yaml`). An existing file wins over a packaged name."""
    path = Path(recipe).expanduser()
    if path.is_file():
        resolved = path.resolve()
        return resolved, Path.cwd() if resolved.parent == RECIPES_DIR else resolved.parent
    name = os.fspath(recipe).removesuffix(".yaml")
    packaged = RECIPES_DIR / f"{name}.yaml"
    if name in recipe_names() and packaged.is_file():
        return packaged, Path.cwd()
    return None
