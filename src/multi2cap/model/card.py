"""What a checkpoint folder says about itself, and the model card written from it.

A checkpoint (`Multi2Cap.save_pretrained`) holds `config.yaml`; one written by training also has
`best.json` (best `best/` only: the selection metric, its score, the epoch and every validation
score of that epoch) and sits in a run folder whose `train_config.yaml` is the resolved recipe
(`<run>/best`, `<run>/final`, `<run>/checkpoints/step-N/model`). `checkpoint_summary` gathers
these for `GET /v1/model` of `multi2cap serve` and for the model card of `multi2cap push`.

The recipe is read as plain YAML (the model layer does not import the training package); the
paths it names (manifests, output folder, `init_from`, backbone folders) are reduced to their last
component before anything is published, and backbones are shown by name (hub id or folder name),
so neither a pushed card nor `GET /v1/model` discloses the folders of the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from multi2cap.model.backbones import ROLES, backbone_name, describe_backbone, used_roles
from multi2cap.model.config import CONFIG_FILE, Multi2CapConfig
from multi2cap.provenance import WRITTEN_BY_KEY

SCORES_FILE = "best.json"
RECIPE_FILE = "train_config.yaml"
_RECIPE_PATHS = (("data", "train_manifest"), ("data", "val_manifest"), ("init_from",),
                 ("runtime", "output_dir"), ("model", "vision", "feature_cache"))  # fmt: skip

CITATION = """@inproceedings{cho2025multi2cap,
  title     = {Learning to See through Sound: From {VggCaps} to {Multi2Cap} for Richer Automated Audio Captioning},
  author    = {Cho and Kim and Hwang and Go and Ma and Yoon and Kim},
  booktitle = {Proceedings of the 2025 Conference on Empirical Methods in Natural Language Processing},
  pages     = {14168--14186},
  year      = {2025}
}"""


def find_recipe(folder: Path) -> Path | None:
    """`train_config.yaml` in the checkpoint folder or the run folder above it (up to three
    levels, for step checkpoints), else None."""
    for candidate in (folder, *list(folder.resolve().parents)[:3]):
        if (candidate / RECIPE_FILE).is_file():
            return candidate / RECIPE_FILE
    return None


def public_recipe(path: Path) -> dict[str, Any]:
    """The recipe as a dict with its path fields reduced to their last component: manifests,
    output folder, `init_from`, backbone folders (`model.<role>.source`, `init_backbones`) and
    the CLIP feature cache. Hub ids are kept whole."""
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for keys in _RECIPE_PATHS:
        node = recipe
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = Path(node[keys[-1]]).name
    model = recipe.get("model") if isinstance(recipe, dict) else None
    for role in ROLES:
        section = model.get(role) if isinstance(model, dict) else None
        if isinstance(section, dict) and isinstance(section.get("source"), str):
            section["source"] = backbone_name(section["source"])
    init = recipe.get("init_backbones") if isinstance(recipe, dict) else None
    if isinstance(init, dict):
        recipe["init_backbones"] = {k: backbone_name(str(v)) for k, v in init.items()}
    return recipe


def checkpoint_summary(folder: Path) -> dict[str, Any]:
    """Backbones (by name: hub id or folder name, never a path of this machine, with where each
    comes from), K, grounding, generation defaults, the stage and recipe (when the run folder
    has one) and the recorded validation scores (when `best.json` exists) of a checkpoint."""
    config = Multi2CapConfig.load(folder / CONFIG_FILE)
    described = {role: describe_backbone(config, role) for role in used_roles(config)}
    recipe_path = find_recipe(folder)
    recipe = public_recipe(recipe_path) if recipe_path is not None else None
    validation = None
    if (folder / SCORES_FILE).is_file():
        validation = json.loads((folder / SCORES_FILE).read_text(encoding="utf-8"))
    raw = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    return {
        "written_by": raw.get(WRITTEN_BY_KEY),
        "backbones": {role: name for role, (name, _) in described.items()},
        "backbone_origins": {role: origin for role, (_, origin) in described.items()},
        "grounding": config.grounding.enabled,
        "grounding_pool": config.grounding.pool if config.grounding.enabled else None,
        "k": config.k if config.grounding.enabled else None,
        "stage": recipe.get("stage") if recipe else None,
        "generation": config.generation.model_dump(),
        "validation": validation,
        "recipe": recipe,
    }


def _grounding_text(summary: dict[str, Any]) -> str:
    if not summary["grounding"]:
        return "none (audio-only baseline)"
    pool = summary.get("grounding_pool")
    return f"K = {summary['k']}" + (f", pooled over {pool}" if pool else "")


def model_card(repo_id: str, summary: dict[str, Any]) -> str:
    """README.md for the hub repo: front matter, backbones, recipe, validation, use, citation."""
    lines = [
        "---",
        "library_name: multi2cap",
        "tags: [audio-captioning, multi2cap, audio-to-text]",
        "---",
        "",
        f"# {repo_id}",
        "",
        "A Multi2Cap audio captioning checkpoint (*Learning to See through Sound: From VggCaps "
        "to Multi2Cap for Richer Automated Audio Captioning*, EMNLP 2025): it captions from "
        "audio alone; visual grounding is learnt in pre-training.",
        "",
        "## Backbones",
        "",
        "| part | backbone | where it comes from |",
        "|---|---|---|",
        *(
            f"| {part} | `{name}` | {summary['backbone_origins'].get(part, '')} |"
            for part, name in summary["backbones"].items()
        ),
        "",
        "Bundled backbones are files of this repository: the repo id alone loads the model.",
        "",
        f"Grounding tokens: {_grounding_text(summary)}. "
        f"Decoding defaults: {_inline(summary['generation'])}.",
        "",
        f"Written by: {_inline(summary['written_by'] or {})}.",
        "",
        "## Training recipe",
        "",
    ]
    recipe = summary["recipe"]
    if recipe is None:
        lines.append("Not recorded (no `train_config.yaml` next to the checkpoint).")
    else:
        optim = recipe.get("optim", {})
        lines += [
            f"Stage `{recipe.get('stage')}`, seed {recipe.get('seed')}, "
            f"started from `{recipe.get('init_from')}`; training manifest "
            f"`{recipe.get('data', {}).get('train_manifest')}`.",
            "",
            f"Optimiser: {_inline(optim)}.",
            "",
            f"Augmentation: {_inline(recipe.get('augment', {}))}.",
            "",
            "The whole recipe is `train_config.yaml` in this repository.",
        ]
    lines += ["", "## Validation scores recorded by the run", ""]
    validation = summary["validation"]
    if validation is None:
        lines.append("None recorded (the checkpoint has no `best.json`).")
    else:
        lines += [
            f"Selected by `{validation.get('metric')}` = {validation.get('score')} at epoch "
            f"{validation.get('epoch')} (raw values, aac-metrics scale).",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        scores = validation.get("scores") or {}
        lines += [f"| {k} | {_number(v)} |" for k, v in scores.items()]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install multi2cap",
        f"multi2cap caption clips/ --checkpoint {repo_id}",
        f"multi2cap serve --checkpoint {repo_id}     # HTTP API + a page to try it",
        "```",
        "",
        "```python",
        "from multi2cap.model import Multi2Cap",
        f'model = Multi2Cap.from_pretrained("{repo_id}")',
        'print(model.caption("clip.wav"))',
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def _inline(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in mapping.items()) or "defaults"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
