from __future__ import annotations

import logging
from pathlib import Path

import torch
import yaml
from transformers import CLIPConfig, CLIPModel

from multi2cap.model.config import VisionEncoderSpec
from multi2cap.model.multi2cap import vision_width
from multi2cap.model.vision import VisionEncoder


def test_loads_the_vision_tower_of_a_full_clip_checkpoint(tmp_path: Path) -> None:
    """`openai/clip-vit-*` on the hub are full CLIPModel folders (text + vision)."""
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=64, bos_token_id=0, eos_token_id=1),
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=8,
    )  # fmt: skip
    clip = CLIPModel(config).eval()
    clip.save_pretrained(tmp_path / "clip")
    spec = VisionEncoderSpec(source=str(tmp_path / "clip"))
    assert vision_width(spec) == 24
    encoder = VisionEncoder(spec)
    encoder.train()  # stays in eval mode and frozen
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    pixels = torch.randn(2, 3, 32, 32)
    reference = clip.vision_model(pixel_values=pixels)
    features = encoder(pixels)
    # V_cls (default `post_layernorm`): CLIP's pooled CLS, the vector its image embedding
    # projects (before, the raw first token)
    torch.testing.assert_close(features.cls, reference.pooler_output)
    torch.testing.assert_close(
        clip.visual_projection(features.cls),
        clip.get_image_features(pixel_values=pixels).pooler_output,
    )
    torch.testing.assert_close(features.patches, reference.last_hidden_state[:, 1:])
    assert features.patches.shape == (2, 16, 24) and features.cls.grad_fn is None
    raw = VisionEncoder(spec.model_copy(update={"v_cls": "pre_layernorm"}))(pixels)
    torch.testing.assert_close(raw.cls, reference.last_hidden_state[:, 0])
    assert not torch.allclose(raw.cls, features.cls)


def test_feature_cache_keys_depend_on_the_v_cls_reading(tmp_path: Path) -> None:
    config = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                  num_attention_heads=4, image_size=32, patch_size=8)  # fmt: skip
    pixels = torch.randn(2, 3, 32, 32)
    results = {}
    for reading in ("pre_layernorm", "post_layernorm"):
        torch.manual_seed(0)
        spec = VisionEncoderSpec(
            source=None, config=config, feature_cache=str(tmp_path), v_cls=reading
        )
        encoder = VisionEncoder(spec)
        encoder(pixels)  # written
        results[reading] = (encoder(pixels), encoder.encode(pixels))  # read back, recomputed
    for cached, fresh in results.values():  # each reading reads its own entries back
        torch.testing.assert_close(cached.cls, fresh.cls)
    assert not torch.allclose(results["pre_layernorm"][0].cls, results["post_layernorm"][0].cls)
    assert len(list(tmp_path.glob("*/*.safetensors"))) == 4


def test_a_checkpoint_saved_before_v_cls_keeps_the_pre_layernorm_cls(caplog) -> None:
    from multi2cap.model.config import Multi2CapConfig

    saved = Multi2CapConfig.tiny(["a dog barks"])
    tree = yaml.safe_load(saved.to_yaml())
    del tree["vision"]["v_cls"]
    with caplog.at_level(logging.WARNING, logger="multi2cap.model"):
        old = Multi2CapConfig.from_yaml(yaml.safe_dump(tree), source="old/config.yaml")
        Multi2CapConfig.from_yaml(yaml.safe_dump(tree), source="old/config.yaml")
    assert old.vision.v_cls == "pre_layernorm"
    assert caplog.text.count("no vision.v_cls") == 1  # said once
    assert Multi2CapConfig.from_yaml(saved.to_yaml()).vision.v_cls == "post_layernorm"
    assert Multi2CapConfig().vision.v_cls == "post_layernorm"
