from __future__ import annotations

from pathlib import Path

import torch
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
    reference = clip.vision_model(pixel_values=pixels).last_hidden_state
    features = encoder(pixels)
    torch.testing.assert_close(features.cls, reference[:, 0])
    torch.testing.assert_close(features.patches, reference[:, 1:])
    assert features.patches.shape == (2, 16, 24) and features.cls.grad_fn is None
