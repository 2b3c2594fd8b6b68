from __future__ import annotations

import pytest
from multi2cap_testkit import CAPTIONS
from pydantic import ValidationError

from multi2cap.model.config import (
    AudioEncoderSpec,
    LlmSpec,
    Multi2CapConfig,
    word_vocabulary,
)


def test_default_config_follows_the_paper() -> None:
    config = Multi2CapConfig()
    assert (config.k, config.alpha, config.beta) == (4, 0.02, 0.05)
    assert config.grounding and config.pretrain_adapter_input == "g"
    assert config.grounding.pool == "space"
    assert config.freeze_vfr_in_finetune
    assert config.vision.source == "openai/clip-vit-large-patch14"
    assert config.llm.lora.targets == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_yaml_round_trip_is_exact(tmp_path) -> None:
    config = Multi2CapConfig.tiny(
        CAPTIONS, k=2, grounding={"pool": "time"}, pretrain_adapter_input="mix", alpha=0.1
    )
    config.save(tmp_path / "config.yaml")
    again = Multi2CapConfig.load(tmp_path / "config.yaml")
    assert again == config
    assert (
        again.llm.tokenizer is not None and again.llm.tokenizer.words == config.llm.tokenizer.words
    )


def test_tiny_vocabulary_covers_captions_and_prompt() -> None:
    config = Multi2CapConfig.tiny(["A Dog barks, twice!"])
    words = set(config.llm.tokenizer.words)
    assert {"a", "dog", "barks", ",", "twice", "!", "describe", "caption", ":"} <= words
    assert "<audio>" not in words and "<" not in words
    assert config.llm.config["vocab_size"] == len(words) + 4


def test_word_vocabulary_splits_like_the_tokenizer() -> None:
    assert word_vocabulary(["Rain falls... on a roof.", "rain"]) == [
        ".",
        "...",
        "a",
        "falls",
        "on",
        "rain",
        "roof",
    ]


@pytest.mark.parametrize(
    ("factory", "fields"),
    [
        (AudioEncoderSpec, {"source": "base", "config": {"depth": 2}}),
        (AudioEncoderSpec, {"source": None}),
        (LlmSpec, {"source": None, "config": {"hidden_size": 8}}),
        (Multi2CapConfig, {"d_g": 30, "grounding_heads": 4}),
        (Multi2CapConfig, {"prompt": "<audio> and <audio>"}),
        (Multi2CapConfig, {"pretrain_adapter_input": "v"}),
        (Multi2CapConfig, {"unknown_field": 1}),
    ],
)
def test_invalid_configs_are_rejected(factory, fields) -> None:
    with pytest.raises(ValidationError):
        factory(**fields)
