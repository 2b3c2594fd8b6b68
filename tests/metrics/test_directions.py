"""Which way each metric points: one table, used wherever a "best" is chosen."""

import pytest

from multi2cap.analysis import ablations as ab
from multi2cap.metrics import HIGHER_IS_BETTER, PAPER_LABELS, higher_is_better
from multi2cap.metrics.sets import OUTPUT_KEYS
from multi2cap.train.config import ConfigError, EvalConfig, load_train_config

EXPECTED = {
    "bleu_1": True,
    "bleu_2": True,
    "bleu_3": True,
    "bleu_4": True,
    "rouge_l": True,
    "meteor": True,
    "cider_d": True,
    "spice": True,
    "spider": True,
    "spider_fl": True,
    "fer": False,
    "sbert_sim": True,
    "fense": True,
    "vocab": True,
    "vocab.mrefs_full": True,
    "vocab.ratio_full": True,
    "vocab.mrefs_avg": True,
    "vocab.ratio_avg": True,
    "spider_max": True,
    "cider_d_max": True,
    "spice_max": True,
    "bert_score.f1": True,
    "bert_score.precision": True,
    "bert_score.recall": True,
    "val_loss": False,
}


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_every_metric_key_has_its_direction(metric: str) -> None:
    assert higher_is_better(metric) is EXPECTED[metric]
    assert EvalConfig(best_metric=metric).maximise is EXPECTED[metric]


def test_the_table_covers_every_output_key_and_label() -> None:
    assert set(OUTPUT_KEYS) | {"val_loss"} == set(HIGHER_IS_BETTER)
    assert set(PAPER_LABELS) <= set(HIGHER_IS_BETTER)


def test_fer_is_minimised_when_it_selects_the_best_checkpoint() -> None:
    # The old rule (higher is better unless the name ends in "loss") kept the highest error rate.
    assert not EvalConfig(best_metric="fer").maximise
    assert EvalConfig(best_metric="fer", best_mode="max").maximise


def test_qualified_keys_take_the_direction_of_their_metric() -> None:
    assert higher_is_better("g_hat/cider_d")
    assert not higher_is_better("audio_only.fer")
    # aac-metrics' dotted output names keep their direction under a qualifier.
    assert higher_is_better("audio_only.vocab.ratio_full")
    assert higher_is_better("g_hat/bert_score.f1")


def test_an_unknown_metric_is_refused_instead_of_guessed() -> None:
    with pytest.raises(KeyError, match="no recorded direction for metric 'clap_score'"):
        higher_is_better("clap_score")
    with pytest.raises(ValueError, match=r"set eval\.best_mode to max or min"):
        EvalConfig(best_metric="clap_score")
    assert EvalConfig(best_metric="clap_score", best_mode="min").maximise is False


def test_recipe_with_an_unknown_auto_metric_names_the_field(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: finetune\neval:\n  best_metric: clap_score\n")
    with pytest.raises(ConfigError, match="best_mode"):
        load_train_config(recipe)


def test_ablation_wins_follow_the_metric_direction() -> None:
    def cell(arm: str, seed: int, fer: float) -> ab.CellResult:
        labels = {"arm": arm, "seed": seed}
        return ab.CellResult(f"{arm}{seed}", labels, "ckpt", "ckpt", {"fer": fer})

    results = [cell("grounding", 0, 0.01), cell("baseline", 0, 0.05)]
    (fer,) = ab.compare_arms(results)
    assert fer.diff == pytest.approx([-0.04])
    assert fer.wins == 1  # a lower fluency error rate is the better one
