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


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def conv_bn(in_channels: int, out_channels: int, stride: int = 1, activation: str | None = "relu") -> nn.Sequential:
    """3x3 convolution (no bias: batch norm follows), batch norm, then the activation if named."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if activation:
        layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class FastBlock(nn.Module):
    """A basic residual block that starts as the identity: its last batch norm scales by zero, so early
    training sees a shallow network (Goyal et al. 2017). Downsampling shortcuts average-pool before the
    1x1 projection (ResNet-D): no input pixel is skipped."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, out_channels, stride, activation), conv_bn(out_channels, out_channels, 1, None)
        )
        nn.init.zeros_(self.body[-1][-1].weight)
        shortcut: list[nn.Module] = [nn.AvgPool2d(stride, ceil_mode=True)] if stride > 1 else []
        if in_channels != out_channels:
            shortcut += [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.shortcut = nn.Sequential(*shortcut)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


@register_model("fast-resnet", "A ResNet sized for CPU seconds: stride-4 stem, identity-initialised blocks", 112)
def fast_resnet(
    num_outputs: int = 2,
    in_channels: int = 3,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks: tuple[int, ...] = (1, 1, 1, 1),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Module:
    """Stem: 3x3 convolution at stride 2 and a max-pool (a quarter of the size, as ResNet's), then
    `blocks[i]` residual blocks of `widths[i]` channels per stage, each stage after the first halving
    the size; global average pool and a linear head. Most of a CPU's time goes into the first stage,
    so the stem makes it 16x cheaper than at full size."""
    if len(widths) != len(blocks):
        raise ValueError(f"widths {widths} and blocks {blocks}: one number of blocks per stage")
    layers: list[nn.Module] = [conv_bn(in_channels, widths[0], 2, activation), nn.MaxPool2d(2)]
    channels = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        for index in range(count):
            layers.append(FastBlock(channels, width, 2 if stage and not index else 1, activation))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_outputs)]
    return nn.Sequential(*layers)
