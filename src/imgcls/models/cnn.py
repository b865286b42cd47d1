"""Networks trained from scratch: the seeds' basic CNN and our small-data ResNet."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models.registry import register_model


@register_model("seed-basic-cnn", "The seeds' cats-vs-dogs CNN: Conv 16/32/64 + max-pool, Dense 512", 150)
def seed_basic_cnn(
    num_outputs: int = 1, in_channels: int = 3, image_size: int = 150, dropout: float = 0.0
) -> nn.Module:
    """Seed 004 exactly (10,641,441 parameters at 150x150x3, one output); `dropout` as in its
    second model: Dropout(p) after the first and the last pooling."""
    layers: list[nn.Module] = []
    channels = in_channels
    for index, width in enumerate((16, 32, 64)):
        # max-pool before ReLU equals ReLU before max-pool (both monotone) and touches 4x fewer values
        layers += [nn.Conv2d(channels, width, 3, padding="same"), nn.MaxPool2d(2), nn.ReLU(inplace=True)]
        if dropout and index in (0, 2):
            layers.append(nn.Dropout(dropout))
        channels = width
    side = image_size // 8
    layers += [
        nn.Flatten(),
        nn.Linear(64 * side * side, 512),
        nn.ReLU(inplace=True),
        nn.Linear(512, num_outputs),
    ]
    return keras_init(nn.Sequential(*layers))


def keras_init(net: nn.Module) -> nn.Module:
    """Keras' defaults (Glorot-uniform kernels, zero biases) instead of PyTorch's, as the seeds trained."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return net


class ResidualBlock(nn.Module):
    """Pre-activation-free basic block: conv-BN-ReLU-conv-BN plus a (projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


@register_model("small-resnet", "A compact ResNet with batch norm for small datasets trained from scratch", 128)
def small_resnet(
    num_outputs: int = 2,
    in_channels: int = 3,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    dropout: float = 0.2,
) -> nn.Module:
    """Stem at stride 2, one residual block per stage (each halving the size), global average pool."""
    stem = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    )
    stages = []
    channels = widths[0]
    for index, width in enumerate(widths):
        stages.append(ResidualBlock(channels, width, stride=1 if index == 0 else 2))
        channels = width
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_outputs))
    return nn.Sequential(stem, *stages, head)
