"""Keras 2 `.h5` weight files into a `KerasApplication`: read the file, match its layers to the model's,
check every shape, then copy (HWIO kernels to OIHW), strictly and all-or-nothing.

Its own module because reading HDF5 and matching foreign layer names is a job of its own, with the most
ways to fail, each an `ImgclsError` naming the file, the layer and the problem. Files come as
`*_weights_tf_dim_ordering_tf_kernels_notop.h5` or `model.save_weights("x.h5")`; their layers match by
name, by old keras_applications ResNet50 names, by creation-order number for auto-named layers (Keras
2.0-era files such as the published InceptionV3 weights count from one, `conv2d_1`..`conv2d_94`,
tf.keras from zero), or by position as Keras' `load_weights` does. `h5py` is imported only to read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.keras.applications import KERAS_MODELS, get_architecture
from imgcls.models.keras.graph import Architecture, keras_order
from imgcls.models.keras.layers import hwio_to_oihw
from imgcls.models.keras.model import KerasApplication

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


def _match(file_names: list[str], arch: Architecture, positional: bool = True) -> tuple[dict[str, str], str] | None:
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
    ordered = [n for n in keras_order(graph, arch.output) if graph[n].weight_shapes()]
    if positional and len(file_names) == len(ordered):
        return dict(zip(file_names, ordered, strict=True)), "position in the file, as Keras' load_weights does"
    return None


def _looks_like(file_names: list[str], exclude: str) -> str:
    for other in KERAS_MODELS:
        if other != exclude and _match(file_names, get_architecture(other), positional=False) is not None:
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
    arch = module.spec
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
