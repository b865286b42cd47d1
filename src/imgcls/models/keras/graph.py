"""A Keras functional graph as data: its layers (`LayerSpec`) in creation order with tf.keras names,
an application's description on top of it (`Architecture`: blocks, cut points, preprocessing), and
the two graph walks everything else needs: the layers a cut depends on, and Keras' `model.layers` order.

Its own module because the graph is what the PyTorch module runs, what the .h5 reader matches file
layers against and what the InceptionV3 weight map is checked against, without any of them needing
the others. Layer names follow tf.keras (TF 2.x) in a fresh session: named layers keep their names
(`block5_conv3`, `conv2_block1_1_conv`, `mixed7`); auto-named ones count from zero in creation order
(`conv2d`, `conv2d_1`, ..., `batch_normalization_93`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.keras.layers import Add, Concatenate, KerasBatchNorm2d, KerasConv2d


@dataclass
class LayerSpec:
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
            return Add()
        if self.kind == "concat":
            return Concatenate()
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
class Graph:
    """A Keras functional graph in creation order, with tf.keras auto-naming (zero-based)."""

    layers: dict[str, LayerSpec] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def _add(self, layer: LayerSpec) -> str:
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
        return self._add(LayerSpec("input_1", "input", (), 3))

    def conv(self, x, filters, kernel, stride=1, padding="valid", use_bias=True, activation=None, name=None) -> str:
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        return self._add(
            LayerSpec(
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
        return self._add(LayerSpec(self._auto("batch_normalization", name), "bn", (x,), c, c, eps=eps, scale=scale))

    def relu(self, x, name=None) -> str:
        return self._add(LayerSpec(self._auto("activation", name), "relu", (x,), self.channels(x)))

    def maxpool(self, x, size, stride, name=None) -> str:
        layer = LayerSpec(self._auto("max_pooling2d", name), "maxpool", (x,), self.channels(x), kernel=(size, size))
        layer.stride = stride
        return self._add(layer)

    def avgpool_same(self, x, size, name=None) -> str:
        layer = LayerSpec(self._auto("average_pooling2d", name), "avgpool", (x,), self.channels(x), kernel=(size, size))
        layer.padding = "same"
        return self._add(layer)

    def zeropad(self, x, p, name) -> str:
        return self._add(LayerSpec(name, "zeropad", (x,), self.channels(x), pad=(p, p, p, p)))

    def add(self, xs, name) -> str:
        return self._add(LayerSpec(name, "add", tuple(xs), self.channels(xs[0])))

    def concat(self, xs, name=None) -> str:
        return self._add(LayerSpec(self._auto("concatenate", name), "concat", tuple(xs), sum(map(self.channels, xs))))


@dataclass(frozen=True)
class Architecture:
    """A Keras Application (include_top=False): its graph and what is known about it by name."""

    name: str
    graph: Graph
    output: str  # Keras notop output layer
    blocks: tuple[tuple[str, str], ...]  # (block name, its output layer), in order
    aliases: dict[str, str]  # extra cut names -> layer
    preprocessing: str  # caffe | tf
    input_size: int
    pool_names: dict[str, str]  # pooling -> Keras name of the GlobalPooling layer

    def cut_layer(self, cut: str | None) -> str:
        """The layer a model cut at `cut` ends with: a Keras layer name, a block name or an alias
        (None: the notop output)."""
        if cut is None:
            return self.output
        blocks = dict(self.blocks)
        if cut in self.graph.layers and self.graph.layers[cut].kind != "input":
            return cut
        if cut in blocks:
            return blocks[cut]
        if cut in self.aliases:
            return self.aliases[cut]
        raise ImgclsError(
            f"keras/{self.name} has no layer or block {cut!r} to cut at; blocks: "
            f"{', '.join(b for b, _ in self.blocks)} (or any Keras layer name, e.g. {self.blocks[-1][1]})"
        )


def ancestors(layers: dict[str, LayerSpec], output: str) -> set[str]:
    """`output` and every layer it depends on."""
    seen, todo = set(), [output]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(layers[name].inputs)
    return seen


def keras_order(layers: dict[str, LayerSpec], output: str) -> list[str]:
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
