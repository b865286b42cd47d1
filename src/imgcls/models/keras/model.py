"""`KerasApplication`: a Keras Application run in PyTorch layer by layer, up to a cut, with Keras names
for its layers, blocks and `model.layers` order; `create_keras_backbone` makes one with its `BackboneInfo`.

Its own module because this is the one runtime object the rest of imgcls holds (`keras/<model>`
backbones): it turns an `Architecture` into submodules and an execution plan, and offers the Keras
vocabulary the seeds use for cutting (`get_layer('mixed7')`) and unfreezing (`layers after 'mixed6'`,
`layers[-4:]`). As in TF2 Keras, a BatchNorm whose parameters are all frozen runs in inference mode
(moving statistics) even under `module.train()`. Input: normalised RGB images; the 'caffe' models
(VGG16, ResNet50) flip RGB->BGR first.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.backbone_info import BackboneInfo
from imgcls.models.keras.applications import CAFFE_MEAN, CAFFE_STD, get_architecture
from imgcls.models.keras.graph import Architecture, ancestors, keras_order
from imgcls.models.keras.layers import GlobalPool, keras_param_count


class KerasApplication(nn.Module):
    """A Keras Application (notop) run layer by layer, with Keras names.

    Maps normalised RGB images (B, 3, H, W) to the output of the `cut` layer (B, C, h, w), or
    (B, C) with `pooling`. Each coarse block is a submodule named after it, holding its Keras layers
    by Keras name: `model.block5.block5_conv3`, `model.mixed7.conv2d_64`, `model.conv2_block1.conv2_block1_1_conv`
    (state_dict keys `block5.block5_conv3.weight`, ...); `model.layers[keras_name]` finds any layer.
    """

    def __init__(self, arch: str, cut: str | None = None, pooling: str | None = None) -> None:
        super().__init__()
        spec = get_architecture(arch)
        self.arch = spec.name
        self.preprocessing = spec.preprocessing
        self.flip_to_bgr = spec.preprocessing == "caffe"
        self.cut = cut
        self.output_layer = spec.cut_layer(cut)
        if pooling not in (None, "avg", "max"):
            raise ImgclsError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
        self.pooling = pooling
        graph = spec.graph.layers
        needed = ancestors(graph, self.output_layer)
        self.spec = spec  # the Architecture: graph, blocks, preprocessing (read by the .h5 loader)
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
        self.pool = GlobalPool(pooling) if pooling else None
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
    def _block_after(spec: Architecture, done: list[str]) -> str:
        return spec.blocks[len(done)][0]

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
        graph = self.spec.graph.layers
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
        return self.spec.pool_names[self.pooling] if self.pooling else None

    def layer_names(self) -> list[str]:
        """Keras `model.layers` names of this model, in Keras' order (input first, as in Keras;
        the global pooling layer last when pooling is set). `layer_names()[-4:]` is Keras `layers[-4:]`:
        for VGG16 notop that is block5_conv1, block5_conv2, block5_conv3, block5_pool."""
        names = keras_order(self.spec.graph.layers, self.output_layer)
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
        graph = self.spec.graph.layers
        return [n for n in self._needed if graph[n].weight_shapes()]

    def keras_param_count(self) -> int:
        return keras_param_count(self)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, output={self.output_layer}, pooling={self.pooling}"


def create_keras_backbone(
    name: str, cut: str | None = None, pooling: str | None = None
) -> tuple[KerasApplication, BackboneInfo]:
    """Keras Application `name` (vgg16, resnet50, inception_v3; include_top=False), cut after the Keras
    layer or block `cut` (e.g. 'mixed7'), with `pooling` None (feature map) or 'avg' (or 'max').

    Randomly initialised: load the user's Keras weights with `load_keras_h5`.
    """
    module = KerasApplication(name, cut, pooling)
    spec = get_architecture(name)
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
