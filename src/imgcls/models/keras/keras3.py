"""Keras 3 weight files: `model.save_weights('x.weights.h5')`, and the `model.weights.h5` inside the zip
archive `model.save('x.keras')` writes (next to `config.json` and `metadata.json`), read into the layers
with weights that `h5.load_keras_h5` matches and loads strictly.

Its own module because Keras 3 lays weights out unlike Keras 2, with no `layer_names` and no weight
names: Keras' `saving_lib` (its `H5IOStore`) writes one group per object at the path it walks to it,
`layers/<class>[_k]/vars/<i>`: `<class>` the snake-cased class (`conv2d`, `batch_normalization`), `k`
counting that class in `model.layers` order, `i` the variable's index (kernel, bias; gamma, beta,
moving mean, moving variance), nested as `layers/functional/layers/...` for a model inside a model.
Recent Keras 3 versions also put the layer's name in the `vars` group's `name` attribute; Keras' own
`load_weights` goes by the path alone, so a file without names is matched that way (`match_by_path`).
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgcls.errors import ImgclsError, first_line
from imgcls.models.keras.graph import Architecture, keras_order

if TYPE_CHECKING:
    import h5py

ARCHIVE_WEIGHTS = "model.weights.h5"
# Where a functional model's layers sit: Keras 3, and tf.keras 2.13-2.15's first `.keras` files.
LAYER_CONTAINERS = ("layers", "_layer_checkpoint_dependencies")
TRAINING_STATE = ("optimizer",)  # top-level groups that are not the network's weights: skipped
KERAS_CLASS = {"conv": "conv2d", "bn": "batch_normalization"}  # graph kinds with weights -> Keras 3 path name
_SLOT = re.compile(r"^(.+?)(?:_(\d+))?$")
_ZIP_BOMB_BYTES = 1 << 30  # refuse a member that inflates past this and 100 times its packed size


@dataclass(frozen=True)
class Keras3Layer:
    """One object with variables in a Keras 3 file (a layer, or a model's own variables at the root)."""

    path: str  # its group: layers/conv2d_5, or layers/functional/layers/conv2d_5 when nested
    name: str | None  # its Keras name (the `vars` group's `name` attribute); None in files without names
    weights: list[tuple[str, np.ndarray]]  # (dataset path, value), in Keras' variable order

    @property
    def label(self) -> str:
        return self.name or self.path

    @property
    def container(self) -> str:
        return self.path.rpartition("/")[0]

    @property
    def slot(self) -> tuple[str, int]:
        """(snake-cased class, index of the layer among that class in `model.layers`): conv2d_5 -> (conv2d, 5)."""
        match = _SLOT.match(self.path.rpartition("/")[2])
        return (match[1], int(match[2] or 0)) if match else (self.path, 0)


@dataclass(frozen=True)
class Keras3Weights:
    """What a Keras 3 file holds for the network: its model's name, its layers with variables."""

    model_name: str | None
    layers: list[Keras3Layer]
    ignored: list[str]  # training state skipped (the optimizer's variables)


def is_keras3(file: h5py.File) -> bool:
    """A Keras 3 weights file has a `layers` group (a functional or sequential model) or a root `vars`."""
    return any(name in file for name in (*LAYER_CONTAINERS, "vars"))


def read_weights(file: h5py.File, source: str) -> Keras3Weights:
    """Every object with variables in a Keras 3 weights file, depth first; the optimizer's state is skipped."""
    ignored = [key for key in TRAINING_STATE if key in file]
    layers = list(_layers_in(file, source, skip=TRAINING_STATE))
    return Keras3Weights(_name_attr(file["vars"]) if "vars" in file else None, layers, ignored)


def _layers_in(group: h5py.Group, source: str, skip: tuple[str, ...] = ()) -> Iterator[Keras3Layer]:
    import h5py

    for key, item in group.items():
        if key in skip:
            continue
        if not isinstance(item, h5py.Group):
            raise ImgclsError(f"{source}: {item.name} is a tensor outside any layer's vars group: not Keras 3's layout")
        if key == "vars":
            if len(item):
                yield _layer(group.name.lstrip("/"), item, source)
        else:
            yield from _layers_in(item, source)


def _layer(path: str, variables: h5py.Group, source: str) -> Keras3Layer:
    """A layer's variables in order; Keras numbers them 0, 1, ..., so a gap is a tensor missing."""
    name = _name_attr(variables)
    keys = sorted(variables, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    if keys != [str(i) for i in range(len(keys))]:
        where = f"layer {name!r} ({path}/vars)" if name else f"{path or 'the model'}/vars"
        raise ImgclsError(
            f"{source}: {where} holds variables {', '.join(keys)}, but Keras 3 numbers a layer's variables "
            "0, 1, 2, ...: some are missing (the file was edited or written by another tool)"
        )
    return Keras3Layer(path, name, [(f"{path}/vars/{k}".lstrip("/"), _array(variables[k], source)) for k in keys])


def _name_attr(variables: h5py.Group) -> str | None:
    name = variables.attrs.get("name")
    if isinstance(name, bytes):
        name = name.decode("utf8")
    return name if isinstance(name, str) and name else None


def _array(dataset: object, source: str) -> np.ndarray:
    """A variable's value; bfloat16, which h5py keeps as raw 2-byte values, widened exactly to float32."""
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise ImgclsError(f"{source}: {getattr(dataset, 'name', dataset)} is a group where a tensor was expected")
    value = np.asarray(dataset)
    kind = dataset.attrs.get("dtype")
    if (kind.decode() if isinstance(kind, bytes) else kind) == "bfloat16":
        return (value.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return value


@contextmanager
def open_archive(path: Path) -> Iterator[h5py.File]:
    """The `model.weights.h5` inside a `.keras` zip archive, opened from memory (as Keras reads it)."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(_weights_member(archive, path))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise ImgclsError(f"{path}: a damaged zip archive, so not a readable .keras file ({first_line(e)})") from e
    try:
        file = h5py.File(io.BytesIO(data), "r")
    except OSError as e:
        raise ImgclsError(f"{path}: its {ARCHIVE_WEIGHTS} is not a readable HDF5 file ({first_line(e)})") from e
    try:
        with file:
            yield file
    except (OSError, KeyError) as e:  # a truncated or damaged file fails when its tensors are read
        raise ImgclsError(f"{path}: its {ARCHIVE_WEIGHTS} is damaged ({first_line(e)})") from e


def _weights_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    names = archive.namelist()
    if ARCHIVE_WEIGHTS not in names:
        raise ImgclsError(_no_weights_message(path, names))
    info = archive.getinfo(ARCHIVE_WEIGHTS)
    if info.file_size > _ZIP_BOMB_BYTES and info.file_size > 100 * max(info.compress_size, 1):
        raise ImgclsError(
            f"{path}: its {ARCHIVE_WEIGHTS} would inflate {info.compress_size:,} bytes to {info.file_size:,}; "
            "refused as a zip bomb"
        )
    return info


def _no_weights_message(path: Path, names: list[str]) -> str:
    held = ", ".join(names[:6]) + (f", ... ({len(names) - 6} more)" if len(names) > 6 else "") if names else "nothing"
    if "model.weights.npz" in names:
        why = "its weights are in Keras' .npz format; imgcls reads the default, model.save('x.keras')"
    elif "config.json" not in names:
        why = "nor a config.json, so it is not a Keras .keras archive"
    else:
        why = "that is where Keras 3 keeps a model's weights; the archive is incomplete"
    return f"{path}: no {ARCHIVE_WEIGHTS} inside (it holds {held}); {why}"


def model_slots(arch: Architecture) -> dict[tuple[str, int], str]:
    """Each layer with weights of the full model by its Keras 3 path: (conv2d, 5) -> block3_conv2 in VGG16."""
    graph = arch.graph.layers
    seen: Counter[str] = Counter()
    slots = {}
    for name in keras_order(graph, arch.output):
        keras_class = KERAS_CLASS.get(graph[name].kind)
        if keras_class:
            slots[(keras_class, seen[keras_class])] = name
            seen[keras_class] += 1
    return slots


def match_by_path(layers: list[Keras3Layer], arch: Architecture) -> dict[str, str] | None:
    """File layer path -> model layer, as Keras 3's `load_weights` matches them: the k-th Conv2D of
    `model.layers` is `conv2d_k`. None unless the file's layers fill exactly the model's, in one container."""
    containers = {layer.container for layer in layers}
    if len(containers) != 1 or next(iter(containers)).rpartition("/")[2] not in LAYER_CONTAINERS:
        return None
    slots = model_slots(arch)
    if sorted(layer.slot for layer in layers) != sorted(slots):
        return None
    return {layer.path: slots[layer.slot] for layer in layers}


def slot_counts(layers: list[Keras3Layer], arch: Architecture) -> str:
    """How many layers of each class the file and the model have, for a file without layer names."""
    in_file = Counter(layer.slot[0] for layer in layers)
    in_model = Counter(keras_class for keras_class, _ in model_slots(arch))
    classes = sorted(set(in_file) | set(in_model))

    def listed(counts: Counter[str]) -> str:
        return ", ".join(f"{counts[c]} {c}" for c in classes)

    return f"the file's layers carry no names; by their paths it has {listed(in_file)}, the model {listed(in_model)}"
