"""`BackboneInfo`: how to feed a pretrained backbone (input size, normalisation, resize, feature shape).

Its own module, below both the dispatcher (`backbones`) and the backbone families that build one
(`keras`), so a family can describe its networks without importing the dispatcher that imports it.
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
    # Evaluation crop as trained (timm/torchvision): resize the short side to input_size / crop_pct,
    # then centre-crop input_size. 1.0 = resize the short side straight to input_size.
    crop_pct: float = 1.0
    interpolation: str = "bilinear"  # resize filter the weights were trained with (bicubic for timm lite)
