"""Shared by the Keras tests: Keras 2.0 <-> tf.keras layer names, and Keras 2 `.h5` files written here
in the real layouts (random values, real layer names and shapes), with a check that a file landed in a model.

Fixtures: `keras_files` (one notop file per application, in three real naming styles) and `keras_h5`
(the helpers: `write`, `assert_loaded`, `empty_backbone`, `tf_keras_name`, `one_based_name`).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from imgcls.models.keras import KerasConv2d, create_keras_backbone

_AUTO = re.compile(r"^(conv2d|batch_normalization|activation|max_pooling2d|average_pooling2d|concatenate)_(\d+)$")


def one_based_to_tf_keras(name: str) -> str:
    """Keras 2.0 names count from 1 (conv2d_1), tf.keras from 0 (conv2d, conv2d_1, ...)."""
    m = _AUTO.match(name)
    if not m:
        return name
    n = int(m[2]) - 1
    return m[1] if n == 0 else f"{m[1]}_{n}"


def tf_keras_to_one_based(name: str) -> str:
    m = re.match(
        r"^(conv2d|batch_normalization|activation|max_pooling2d|average_pooling2d|concatenate)(?:_(\d+))?$", name
    )
    return f"{m[1]}_{int(m[2] or 0) + 1}" if m else name


def write_keras_h5(path: Path, layer_names: list[str], weights: dict[str, list[tuple[str, np.ndarray]]]) -> Path:
    """A Keras 2 `save_weights` .h5: root attr layer_names, per layer attr weight_names + datasets."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.2"
        for name in layer_names:
            group = f.create_group(name)
            entries = weights.get(name, [])
            group.attrs["weight_names"] = np.array([w.encode() for w, _ in entries], dtype="S")
            for weight_name, value in entries:
                group.create_dataset(weight_name, data=value)
    return path


def keras_weights(model, layer: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random Keras-layout weights for one layer of the full model, in Keras' weight order."""
    module = model.get_layer(layer)

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    if isinstance(module, KerasConv2d):
        o, i, kh, kw = module.weight.shape
        out = {"kernel": rand(kh, kw, i, o)}
        if module.bias is not None:
            out["bias"] = rand(o)
        return out
    c = module.num_features
    out = {"gamma": rand(c)} if module.weight is not None else {}
    out.update(beta=rand(c), moving_mean=rand(c), moving_variance=np.abs(rand(c)) + 0.1)
    return out


def make_file(tmp: Path, arch: str, style: str) -> Path:
    with torch.device("meta"):
        model, _ = create_keras_backbone(arch)
    rng = np.random.default_rng(0)
    layer_names = model.layer_names()
    weights = {}
    for name in model.weight_layers():
        values = keras_weights(model, name, rng)
        if style == "keras1":  # fchollet's VGG16 file: block1_conv1_W_1:0, block1_conv1_b_1:0
            short = {"kernel": "W", "bias": "b"}
            weights[name] = [(f"{name}_{short[k]}_1:0", v) for k, v in values.items()]
        elif style == "one_based":  # published InceptionV3 file: conv2d_1/kernel:0 ... (Keras 2.0 names)
            old = tf_keras_to_one_based(name)
            weights[old] = [(f"{old}/{k}:0", v) for k, v in values.items()]
        else:  # tf.keras 2.x: conv1_conv/kernel:0 in a nested group
            weights[name] = [(f"{name}/{k}:0", v) for k, v in values.items()]
    if style == "one_based":
        layer_names = [tf_keras_to_one_based(n) for n in layer_names]
    return write_keras_h5(tmp / f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5", layer_names, weights)


TORCH_NAME = {
    "kernel": "weight", "W": "weight", "bias": "bias", "b": "bias", "gamma": "weight", "beta": "bias",
    "moving_mean": "running_mean", "moving_variance": "running_var",
}  # fmt: skip


def assert_file_in_module(path: Path, model, rename=lambda n: n) -> int:
    """Every weight of the file equals (after HWIO -> OIHW) the tensor named after its layer; returns count."""
    checked = 0
    with h5py.File(path, "r") as f:
        for lname in (n.decode() for n in f.attrs["layer_names"]):
            group = f[lname]
            target = rename(lname)
            for wname in (w.decode() for w in group.attrs["weight_names"]):
                if target not in model.layers:
                    continue  # after the cut
                value = np.asarray(group[wname])
                role = re.sub(r"(_\d+)?:0$", "", wname.split("/")[-1]).removeprefix(lname + "_")
                tensor = getattr(model.layers[target], TORCH_NAME[role]).detach().numpy()
                expected = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
                assert tensor.shape == expected.shape, (lname, wname)
                np.testing.assert_array_equal(tensor, expected, err_msg=f"{lname}/{wname}")
                checked += 1
    return checked


def empty_backbone(name: str, **kwargs):
    """An uninitialised backbone (no random init, faster): the strict load has to fill every tensor."""
    with torch.device("meta"):
        model, _ = create_keras_backbone(name, **kwargs)
    return model.to_empty(device="cpu")


@pytest.fixture(scope="session")
def keras_files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("keras")
    return {
        "vgg16": make_file(tmp, "vgg16", "keras1"),
        "resnet50": make_file(tmp, "resnet50", "tf2"),
        "inception_v3": make_file(tmp, "inception_v3", "one_based"),
    }


@pytest.fixture(scope="session")
def keras_h5() -> SimpleNamespace:
    return SimpleNamespace(
        write=write_keras_h5,
        assert_loaded=assert_file_in_module,
        empty_backbone=empty_backbone,
        tf_keras_name=one_based_to_tf_keras,
        one_based_name=tf_keras_to_one_based,
    )
