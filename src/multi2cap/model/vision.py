"""The frozen visual encoder f_v: CLIP's vision tower, V_cls and patch tokens V.

V is the patch tokens of `last_hidden_state`. V_cls is, by default (`vision.v_cls:
post_layernorm`), CLIP's pooled output: the first token after CLIP's post-LayerNorm, the vector
that CLIP's image embedding projects into its joint image-text space; `pre_layernorm` takes the
first token of `last_hidden_state` as it is (the reading of checkpoints saved before the choice;
docs/model.md weighs the two). The tower never trains and always runs in eval mode under
`no_grad`, so no gradient can reach it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from multi2cap.io import atomic_write_bytes
from multi2cap.model.config import VisionEncoderSpec
from multi2cap.model.hub import hub_asset


@dataclass
class VisualFeatures:
    """`cls (B, d_v)` and `patches (B, P, d_v)`."""

    cls: Tensor
    patches: Tensor


class VisionEncoder(nn.Module):
    """Frozen `CLIPVisionModel` with an optional on-disk feature cache (see `VisionEncoderSpec`)."""

    def __init__(self, spec: VisionEncoderSpec) -> None:
        super().__init__()
        if spec.source is not None:
            with hub_asset("CLIP vision model", "vision.source", spec.source):
                self.model = CLIPVisionModel.from_pretrained(spec.source)
            identity = spec.source
        else:
            self.model = CLIPVisionModel(CLIPVisionConfig(**(spec.config or {})))
            identity = repr(sorted((spec.config or {}).items()))
        self.model.requires_grad_(False)
        self.model.eval()
        self.v_cls = spec.v_cls
        self.cache_dir = Path(spec.feature_cache) if spec.feature_cache else None
        if spec.v_cls != "pre_layernorm":  # a cache written before the choice held raw CLS
            identity += f"|v_cls={spec.v_cls}"
        self._identity = identity.encode()

    @property
    def output_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of the patch tokens, read from the tower's config: image_size //
        patch_size each way (16 x 16 for ViT-L/14 at 224 px). The patches of `encode` are this
        grid in row-major order, CLS excluded."""
        side = int(self.model.config.image_size) // int(self.model.config.patch_size)
        return side, side

    def train(self, mode: bool = True) -> VisionEncoder:
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def encode(self, images: Tensor) -> VisualFeatures:
        """`images (B, 3, S, S)` CLIP-normalised pixels -> V_cls and patch tokens (no grad)."""
        out = self.model(pixel_values=images.to(self.model.dtype))
        hidden = out.last_hidden_state
        cls = out.pooler_output if self.v_cls == "post_layernorm" else hidden[:, 0]
        return VisualFeatures(cls=cls, patches=hidden[:, 1:])

    def forward(self, images: Tensor) -> VisualFeatures:
        """Like `encode`, reading/writing the feature cache when one is configured."""
        if self.cache_dir is None:
            return self.encode(images)
        keys = [self._cache_key(img) for img in images]
        cached: dict[int, dict[str, Tensor]] = {}
        for i, key in enumerate(keys):
            path = self._cache_path(key)
            if path.is_file():
                cached[i] = load_file(path, device=str(images.device))
        missing = [i for i in range(len(keys)) if i not in cached]
        if missing:
            fresh = self.encode(images[missing])
            for j, i in enumerate(missing):
                item = {"cls": fresh.cls[j].contiguous(), "patches": fresh.patches[j].contiguous()}
                cached[i] = item
                self._write(keys[i], item)
        return VisualFeatures(
            cls=torch.stack([cached[i]["cls"] for i in range(len(keys))]),
            patches=torch.stack([cached[i]["patches"] for i in range(len(keys))]),
        )

    def _cache_key(self, image: Tensor) -> str:
        digest = hashlib.sha256(self._identity)
        digest.update(str(tuple(image.shape)).encode())
        digest.update(image.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _cache_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.safetensors"

    def _write(self, key: str, item: dict[str, Tensor]) -> None:
        path = self._cache_path(key)
        atomic_write_bytes(path, save({k: v.cpu() for k, v in item.items()}))
