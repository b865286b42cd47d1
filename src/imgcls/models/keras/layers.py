"""Keras layer semantics as PyTorch modules: conv with TF 'same' padding, Keras BatchNormalization,
the merge and pooling layers, the HWIO -> OIHW kernel layout and Keras' parameter count.

Its own module because these are the building blocks every other part of the package uses (the graph
makes them, the .h5 reader fills them) and they hold all the numerics that differ from PyTorch:
- Conv kernels are stored HWIO (kh, kw, in, out) in Keras and OIHW in PyTorch: transpose (3, 2, 0, 1).
- TF 'same' padding: pad_total = max((ceil(n / s) - 1) * s + k - n, 0), the odd pixel goes
  bottom/right. For stride 1 and odd kernels that is symmetric (k // 2); `KerasConv2d` pads
  asymmetrically otherwise. None of the three models has a strided 'same' conv (ResNet50 uses
  ZeroPadding2D + 'valid', InceptionV3's strided convs and all max pools are 'valid').
- `AveragePooling2D(3, strides=1, padding='same')` (InceptionV3 branches) averages over the valid
  pixels only: `count_include_pad=False` (see `graph.LayerSpec.make_module`).
- BatchNormalization: momentum 0.01 in PyTorch terms = Keras' 0.99; `scale=False` (InceptionV3) has
  no gamma: `weight is None`, and no gamma in the .h5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def tf_same_padding(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> tuple[int, int, int, int]:
    """TF/Keras 'same' padding for (H, W) as `F.pad` wants it: (left, right, top, bottom).

    Output size is ceil(n / s); the total padding is split with the odd pixel at bottom/right.
    """
    pads = []
    for n, k, s in zip(size, kernel, stride, strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


def hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    """A Keras Conv2D kernel (kh, kw, in, out) as a PyTorch Conv2d weight (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1)))


class KerasConv2d(nn.Conv2d):
    """`keras.layers.Conv2D` (optionally with its fused `activation='relu'`) with TF padding rules."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: str = "valid",
        bias: bool = True,
        activation: str | None = None,
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
        symmetric = padding == "same" and stride == 1 and kh % 2 == 1 and kw % 2 == 1
        torch_padding = (kh // 2, kw // 2) if symmetric else 0
        super().__init__(in_channels, out_channels, (kh, kw), stride, torch_padding, bias=bias)
        self.keras_padding = padding
        self.tf_same = padding == "same" and not symmetric  # pad per input size, extra pixel bottom/right
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            x = F.pad(x, tf_same_padding(x.shape[-2:], self.kernel_size, self.stride))
        x = super().forward(x)
        return F.relu(x) if self.activation == "relu" else x

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keras_padding={self.keras_padding}, activation={self.activation}"


class KerasBatchNorm2d(nn.BatchNorm2d):
    """`keras.layers.BatchNormalization` on channels: Keras momentum 0.99; `scale=False` drops gamma."""

    def __init__(self, num_features: int, eps: float = 1e-3, scale: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=0.01)
        self.scale = scale
        if not scale:
            self.weight = None  # gamma is fixed to 1 and not a weight (nor in the .h5)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Add(nn.Module):
    """`keras.layers.Add`: the sum of its inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concatenate(nn.Module):
    """`keras.layers.Concatenate` on channels."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class GlobalPool(nn.Module):
    """`GlobalAveragePooling2D` (mode 'avg') or `GlobalMaxPooling2D` ('max'): (B, C, H, W) -> (B, C)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.mode == "avg" else x.amax(dim=(2, 3))


def keras_param_count(module: nn.Module) -> int:
    """Parameters as Keras' `model.count_params()` counts them: weights plus BatchNorm moving statistics."""
    total = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            total += m.running_mean.numel() + m.running_var.numel()
    return total
