"""Transfer networks: a pretrained backbone plus a small head, rebuilt from `model.json` alone.

One registry entry, `transfer`, covers every backbone: its arguments name the backbone
(`efficientnet_lite0`, `timm/resnet50`, `keras/inception_v3`...) and describe the head
(the seeds' Flatten → Dense → Dropout, or a linear/logistic layer on pooled features).
Pretrained weights are not part of the architecture: training loads them once
(`backbones.load_pretrained`); a saved model carries all its weights in safetensors.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imgcls.models.registry import register_model


def make_head(feature_shape: tuple[int, ...], num_outputs: int, hidden: int = 0, dropout: float = 0.0) -> nn.Module:
    """Flatten (a no-op on pooled vectors) → [Dense hidden, ReLU] → [Dropout] → Dense outputs."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(feature_shape)
    if hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


class TransferNet(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, in_channels: int = 3):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.in_channels = in_channels  # a plain int, so ONNX export traces no shape test

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:  # grayscale photos: the RGB backbone sees three equal channels
            images = images.expand(-1, 3, -1, -1)
        return self.head(self.backbone(images))


@register_model("transfer", "A pretrained backbone (arg `backbone`) + a head; see `imgcls recipes`", 224)
def transfer(
    num_outputs: int,
    in_channels: int = 3,
    backbone: str = "efficientnet_lite0",
    backbone_args: dict | None = None,
    hidden: int = 0,
    dropout: float = 0.0,
    image_size: int = 224,
) -> TransferNet:
    from imgcls.models.backbones import create_backbone

    if in_channels not in (1, 3):
        raise ValueError(f"pretrained backbones take RGB or grayscale input, not {in_channels} channels")
    body, _ = create_backbone(backbone, **(backbone_args or {}))
    return TransferNet(body, make_head(feature_shape(body, image_size), num_outputs, hidden, dropout), in_channels)


@torch.no_grad()
def feature_shape(backbone: nn.Module, image_size: int) -> tuple[int, ...]:
    """Per-image output shape at this input size (pooled vector or the map a Flatten head sees)."""
    was_training = backbone.training
    shape = tuple(backbone.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1:])
    backbone.train(was_training)
    return shape
