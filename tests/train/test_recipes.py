"""The readings of the paper that the packaged recipes (`multi2cap.recipes`) follow (docs/training.md, "Readings
of the paper"): what an epoch is, which checkpoint fine-tuning starts from, how far decoding
goes, which run is which baseline, and the warning for a fine-tuned model nothing pre-trained."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from multi2cap.model.config import Multi2CapConfig
from multi2cap.recipes import RECIPES_DIR
from multi2cap.train import load_train_config
from multi2cap.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = RECIPES_DIR
PAPER = (
    "pretrain_vggcaps.yaml",
    "pretrain_vggcaps_whisper.yaml",
    "finetune_clotho.yaml",
    "finetune_clotho_whisper.yaml",
    "finetune_audiocaps.yaml",
)


def _recipes() -> dict[str, TrainConfig]:
    return {path.name: load_train_config(path) for path in sorted(CONFIGS.glob("*.yaml"))}


def test_paper_recipes_count_caption_rows_and_tiny_ones_say_clip() -> None:
    recipes = _recipes()
    assert TrainConfig().data.epoch_unit == "caption"
    for name in PAPER:
        assert recipes[name].data.epoch_unit == "caption", name
    for name in ("tiny_pretrain.yaml", "tiny_finetune.yaml"):
        assert recipes[name].data.epoch_unit == "clip", name


def test_recipes_feeding_fine_tuning_select_on_the_audio_only_path() -> None:
    # Fine-tuning and inference run on g_hat (the VFR's audio-only tokens); a pre-training
    # run with grounding whose best/ a fine-tuning recipe starts from must select on that path
    # (`audio_only_<metric>`), not on g from the frame, which nothing downstream sees.
    recipes = _recipes()
    by_output = {Path(r.runtime.output_dir).resolve(): (n, r) for n, r in recipes.items()}
    checked = []
    for name, recipe in recipes.items():
        if recipe.stage != "finetune" or recipe.init_from is None:
            continue
        source_name, source = by_output[Path(recipe.init_from).resolve().parent]
        model = Multi2CapConfig.model_validate(source.model)
        if source.stage == "pretrain" and model.grounding:
            assert source.eval.select_path == "audio_only", (name, source_name)
            checked.append(source_name)
    assert "pretrain_vggcaps.yaml" in checked


def test_decoding_budgets_cover_the_captions_training_keeps() -> None:
    default = Multi2CapConfig()
    assert default.generation.max_new_tokens == default.max_caption_tokens == 96
    assert Multi2CapConfig(max_caption_tokens=128).generation.max_new_tokens == 128
    fixed = Multi2CapConfig(max_caption_tokens=128, generation={"max_new_tokens": 40})
    assert fixed.generation.max_new_tokens == 40  # an explicit budget stays
    for name in PAPER:
        recipe = load_train_config(CONFIGS / name)
        model = Multi2CapConfig.model_validate(recipe.model)  # init_from: the same defaults
        budget = recipe.eval.max_new_tokens or model.generation.max_new_tokens
        assert budget >= model.max_caption_tokens, name


def test_the_whisper_recipes_are_not_called_the_papers_whisper_row() -> None:
    # The paper's "Whisper (2023)" row is Kadlcik et al.'s Whisper captioner; our recipe swaps
    # Whisper's encoder into our pipeline.
    for name in ("pretrain_vggcaps_whisper.yaml", "finetune_clotho_whisper.yaml"):
        text = (CONFIGS / name).read_text(encoding="utf-8")
        assert "Whisper-encoder variant" in text and "Kadl" in text, name
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *CONFIGS.iterdir()):
        assert "paper's Whisper baseline" not in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize(
    ("overrides", "warns"),
    [
        ([], True),  # grounding, no init_from
        (["warn_without_init_from=false"], False),  # the explicit opt-out
        (["model.grounding=false"], False),  # the audio-only baseline has no VFR
        (["stage=pretrain"], False),
    ],
)
def test_fine_tuning_a_grounded_model_that_nothing_pre_trained_warns(
    overrides: list[str], warns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from multi2cap.model.multi2cap import Multi2Cap
    from multi2cap.train.engine import _build_model

    config = load_train_config(
        CONFIGS / "tiny_finetune.yaml", ["warn_without_init_from=true", *overrides]
    )
    with caplog.at_level(logging.WARNING, logger="multi2cap.train"):
        _build_model(config, [], None, Multi2Cap, torch.device("cpu"))
    assert ("g_hat is a random projection" in caplog.text) is warns
    # the tiny fine-tuning recipe opts out: smoke runs fine-tune a fresh model on purpose
    assert not load_train_config(CONFIGS / "tiny_finetune.yaml").warn_without_init_from
