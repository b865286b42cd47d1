"""Keras weight files into a `KerasApplication`: tell the format by its content, read its layers, match
them to the model's, check every shape, then copy (HWIO kernels to OIHW), strictly and all-or-nothing.

Its own module because reading HDF5 and matching foreign layer names is a job of its own, with the most
ways to fail, each an `ImgclsError` naming the file, the layer and the problem. Keras 2 files come as
`*_weights_tf_dim_ordering_tf_kernels_notop.h5` or `model.save_weights("x.h5")`; their layers match by
name, by old keras_applications ResNet50 names, by creation-order number for auto-named layers (Keras
2.0-era files such as the published InceptionV3 weights count from one, `conv2d_1`..`conv2d_94`,
tf.keras from zero), or by position as Keras' `load_weights` does. Keras 3's `.weights.h5` and `.keras`
are read by `keras3` and then matched and checked here the same way. `h5py` is imported only to read.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from imgcls.errors import ImgclsError, first_line
from imgcls.models.keras import keras3
from imgcls.models.keras.applications import KERAS_MODELS, get_architecture
from imgcls.models.keras.graph import Architecture, keras_order
from imgcls.models.keras.layers import hwio_to_oihw
from imgcls.models.keras.model import KerasApplication

if TYPE_CHECKING:
    import h5py

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


def _h5_attr(group: h5py.Group, name: str) -> list[str] | None:
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


FileLayers = list[tuple[str, list[tuple[str, np.ndarray]]]]  # (layer, [(weight name, array)]) in file order
Matched = tuple[dict[str, str], str]  # file layer -> model layer, and how they were matched
SAVE_ADVICE = (
    "save with Keras 3's model.save_weights('x.weights.h5') or model.save('x.keras') "
    "(Keras 2 / tf.keras: model.save_weights('x.h5'))"
)


def load_keras_h5(module: nn.Module, path: str | Path) -> str:
    """Load a Keras weights file into a `KerasApplication`, strictly; returns a summary line.

    Three formats, told apart by their content (not their name): Keras 2 `.h5` (`save_weights`,
    `save`, the published `..._notop.h5`), Keras 3 `.weights.h5` (`save_weights`) and `.keras`
    archives (`save`). Every weight of the file must land in exactly one tensor of the full Keras
    model (matched by layer name, by creation-order number for auto-named layers such as the
    published InceptionV3 file's conv2d_1..conv2d_94, or else by position as Keras does: Keras 2 by
    file order, Keras 3 by layer path; every shape is checked), and every tensor of `module` must be
    filled, else `ImgclsError` names the file, the layer and the problem. Weights of layers after
    the cut are checked against the full model and then skipped (Keras' `load_weights` loads the
    whole model; the seeds cut it afterwards). Nothing is changed on error.
    """
    import h5py  # only needed here

    path = Path(path)
    if not isinstance(module, KerasApplication):
        raise ImgclsError(f"{path}: Keras weights load into a keras/* backbone, not {type(module).__name__}")
    _check_is_file(path)
    if h5py.is_hdf5(path):
        with _open_h5(path) as f:
            if _keras2_root(f) is not None:
                return _load_keras2(module, f, path)
            if keras3.is_keras3(f):
                return _load_keras3(module, f, path, "Keras 3 .weights.h5")
            raise ImgclsError(
                f"{path}: an HDF5 file but not Keras weights (neither Keras 2's 'layer_names' attribute nor "
                f"Keras 3's 'layers' group); {SAVE_ADVICE}"
            )
    if zipfile.is_zipfile(path):
        with keras3.open_archive(path) as f:
            return _load_keras3(module, f, path, "Keras 3 .keras archive")
    if path.suffix.lower() == ".keras":
        raise ImgclsError(f"{path}: not a zip archive, so not a Keras 3 .keras file; it may be damaged or truncated")
    raise ImgclsError(f"{path}: not an HDF5 (.h5) file, nor a .keras zip archive; it may be damaged or truncated")


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise ImgclsError(
            f"{path}: a folder, not a Keras weights file (TensorFlow SavedModel folders are not supported); "
            + SAVE_ADVICE
        )
    if not path.is_file():
        raise ImgclsError(f"{path}: no such Keras weights file")


@contextmanager
def _open_h5(path: Path) -> Iterator[h5py.File]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, KeyError) as e:  # opening, or reading a truncated or damaged file later
        raise ImgclsError(f"{path}: a damaged HDF5 (.h5) file ({first_line(e)})") from e


def _keras2_root(f: h5py.File) -> h5py.Group | None:
    """The group holding a Keras 2 file's layers (`model.save()` nests them in model_weights), or None."""
    root = f.get("model_weights", f)
    return root if _h5_attr(root, "layer_names") is not None else None


def _read_keras2(root: h5py.Group, path: Path) -> FileLayers:
    """Layers with weights in a Keras 2 .h5 file, in file order."""
    layers = []
    for lname in _h5_attr(root, "layer_names") or []:
        if lname not in root:
            raise ImgclsError(f"{path}: layer {lname!r} is listed in 'layer_names' but has no group")
        group = root[lname]
        weights = []
        for wname in _h5_attr(group, "weight_names") or []:
            if wname not in group:
                raise ImgclsError(f"{path}: layer {lname!r} lists weight {wname!r} but the file lacks it")
            weights.append((wname, np.asarray(group[wname])))
        if weights:
            layers.append((lname, weights))
    return layers


def _load_keras2(module: KerasApplication, f: h5py.File, path: Path) -> str:
    arch = module.spec
    file_layers = _read_keras2(_keras2_root(f), path)
    file_names = [n for n, _ in file_layers]
    matched = _match(file_names, arch)
    if matched is None:
        advice = "use the include_top=False '..._notop.h5' file"
        raise ImgclsError(_mismatch(path, arch, file_layers, advice) + _looks_like(file_names, arch.name))
    return _fill(module, path, file_layers, matched, "Keras 2 .h5")


def _load_keras3(module: KerasApplication, f: h5py.File, path: Path, kind: str) -> str:
    arch = module.spec
    weights = keras3.read_weights(f, str(path))
    if not weights.layers:
        raise ImgclsError(f"{path}: a {kind} without any weights; {SAVE_ADVICE}")
    file_layers, matched = _match_keras3(weights.layers, arch)
    if matched is None:
        advice = (
            f"save the weights of an include_top=False model, or of the {arch.name} model alone "
            f"(e.g. model.get_layer('{arch.name}').save_weights('{arch.name}.weights.h5'))"
        )
        named = all(layer.name for layer in weights.layers)
        hint = (
            _looks_like([n for n, _ in file_layers], arch.name)
            if named
            else f"; {keras3.slot_counts(weights.layers, arch)}"
        )
        raise ImgclsError(_mismatch(path, arch, file_layers, advice) + hint)
    described = f"{kind} of Keras model {weights.model_name!r}" if weights.model_name else kind
    summary = _fill(module, path, file_layers, matched, described)
    return summary + "".join(f"; ignored its {key} state" for key in weights.ignored)


def _match_keras3(layers: list[keras3.Keras3Layer], arch: Architecture) -> tuple[FileLayers, Matched | None]:
    """By the layers' names when they fit, else by their paths, as Keras 3's load_weights matches."""
    names = [layer.name for layer in layers]
    if None not in names and len(set(names)) == len(names):
        matched = _match(names, arch, positional=False)
        if matched is not None:
            return [(layer.name, layer.weights) for layer in layers], matched
    file_layers = [(layer.label, layer.weights) for layer in layers]
    by_path = keras3.match_by_path(layers, arch)
    if by_path is None:
        return file_layers, None
    how = "Keras 3 layer path (the k-th Conv2D of model.layers is conv2d_k), as Keras' load_weights does"
    return [(layer.path, layer.weights) for layer in layers], (by_path, how)


def _mismatch(path: Path, arch: Architecture, file_layers: FileLayers, top_advice: str) -> str:
    """Which layers the file and the model do not share; for classifier (Dense) layers, what to save instead."""
    graph = arch.graph.layers
    file_names = [n for n, _ in file_layers]
    model_names = [n for n in graph if graph[n].weight_shapes()]
    missing = [n for n in model_names if n not in set(file_names)]
    extra = [n for n in file_names if n not in set(model_names)]
    top = [n for n, w in file_layers if n in extra and any(a.ndim == 2 for _, a in w)]
    detail = f"; it has classifier (Dense) layers {', '.join(top[:3])}: {top_advice}" if top else ""
    return (
        f"{path}: does not fit Keras {arch.name} (include_top=False): the file has {len(file_names)} layers "
        f"with weights, the model {len(model_names)}; missing from the file: {_first(missing)}; "
        f"not in the model: {_first(extra)}{detail}"
    )


def _fill(module: KerasApplication, path: Path, file_layers: FileLayers, matched: Matched, kind: str) -> str:
    """Check every weight of the file against the full model, then copy those of the module's layers."""
    arch = module.spec
    mapping, how = matched
    assignments: list[tuple[torch.Tensor, torch.Tensor]] = []
    skipped = []
    for fname, weights in file_layers:
        lname = mapping[fname]
        roles = _checked_roles(path, arch, fname, lname, weights, [n for n, _ in file_layers])
        if lname not in module.layers:
            skipped.append(lname)
            continue
        target = module.layers[lname]
        for (_, value), role in zip(weights, roles, strict=True):
            source = hwio_to_oihw(value) if role == "kernel" else torch.from_numpy(np.ascontiguousarray(value))
            assignments.append((getattr(target, _TORCH_NAME[role]), source))
    _check_all_filled(module, path, {id(tensor) for tensor, _ in assignments})
    with torch.no_grad():
        for tensor, source in assignments:
            tensor.copy_(source.to(tensor.dtype))
    loaded = len(file_layers) - len(skipped)
    message = (
        f"loaded {loaded} Keras layers ({len(assignments)} tensors) from {path.name} ({kind}) into "
        f"keras/{arch.name}, matched by {how}"
    )
    if skipped:
        message += f"; skipped {len(skipped)} layers after the cut at {module.output_layer} (shapes checked)"
    return message


def _checked_roles(
    path: Path, arch: Architecture, fname: str, lname: str, weights: list[tuple[str, np.ndarray]], file_names: list[str]
) -> list[str]:
    """The Keras role of each weight of one layer (kernel, bias, gamma, ...), its shape and dtype checked."""
    expected = arch.graph.layers[lname].weight_shapes()
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
    return roles


def _check_all_filled(module: KerasApplication, path: Path, filled: set[int]) -> None:
    """Every parameter and BatchNorm statistic of the module gets a value (a guard: matching ensures it)."""
    unfilled = []
    for lname, target in module.layers.items():
        tensors = list(target.parameters()) + [
            b for n, b in target.named_buffers() if n in ("running_mean", "running_var")
        ]
        if any(id(t) not in filled for t in tensors):
            unfilled.append(lname)
    if unfilled:
        raise ImgclsError(f"{path}: no weights for layers {_first(unfilled)} of keras/{module.spec.name}")


def _first(names: list[str], k: int = 5) -> str:
    if not names:
        return "none"
    more = f" (+{len(names) - k} more)" if len(names) > k else ""
    return ", ".join(names[:k]) + more
