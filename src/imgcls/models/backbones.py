"""Pretrained backbones for transfer learning: what they are, how to feed them, where weights come from.

A backbone is an `nn.Module` mapping normalised images (B, 3, H, W) to features: (B, D) pooled
vectors, or (B, C, h, w) maps for the seeds' Flatten heads. `BackboneInfo` says how to feed it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneInfo:
    name: str  # as the user writes it: efficientnet_lite0, timm/resnet50, keras/inception_v3
    input_size: int  # pixels, square, the size it was trained at
    mean: tuple[float, float, float]  # on [0, 1] pixels
    std: tuple[float, float, float]
    resize: str = "crop"  # crop: short side then centre crop (timm eval) | squash
    feature_shape: tuple[int, ...] = ()  # per image, e.g. (1280,) or (768, 7, 7)
