"""Strict import of Keras 2 `.h5` files written here in the real layouts (random values, real layer names
and shapes): by name, by creation-order number, by position, by old ResNet50 names; and every way a
file can fail to fit is an `ImgclsError` naming the file and the layer, with nothing loaded."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from imgcls.errors import ImgclsError
from imgcls.models.keras import create_keras_backbone, load_keras_h5


def test_load_vgg16_h5(keras_files, keras_h5) -> None:
    model = keras_h5.empty_backbone("vgg16")
    message = load_keras_h5(model, keras_files["vgg16"])
    assert "13 Keras layers" in message and "26 tensors" in message
    assert keras_h5.assert_loaded(keras_files["vgg16"], model) == 26
    with h5py.File(keras_files["vgg16"]) as f:
        assert f["block1_conv1"]["block1_conv1_W_1:0"].shape == (3, 3, 3, 64)


def test_load_resnet50_h5_full_and_cut(keras_files, keras_h5) -> None:
    model = keras_h5.empty_backbone("resnet50")
    load_keras_h5(model, keras_files["resnet50"])
    assert keras_h5.assert_loaded(keras_files["resnet50"], model) == 53 * 2 + 53 * 4
    cut = keras_h5.empty_backbone("resnet50", cut="conv4_block6", pooling="avg")
    message = load_keras_h5(cut, keras_files["resnet50"])
    assert "skipped 20 layers after the cut at conv4_block6_out" in message
    assert keras_h5.assert_loaded(keras_files["resnet50"], cut) > 0
    with h5py.File(keras_files["resnet50"]) as f:
        assert f["conv1_conv"]["conv1_conv/kernel:0"].shape == (7, 7, 3, 64)


def test_load_inception_v3_h5_one_based_names(keras_files, keras_h5) -> None:
    model = keras_h5.empty_backbone("inception_v3", cut="mixed7")
    message = load_keras_h5(model, keras_files["inception_v3"])
    assert "creation-order number" in message and "after the cut at mixed7" in message
    checked = keras_h5.assert_loaded(keras_files["inception_v3"], model, keras_h5.tf_keras_name)
    assert checked == 70 * (1 + 3)  # 70 convs up to mixed7, BN without gamma
    with h5py.File(keras_files["inception_v3"]) as f:  # the file's conv2d_86 is our conv2d_85 (86th conv)
        np.testing.assert_array_equal(
            np.asarray(f["conv2d_1"]["conv2d_1/kernel:0"]).transpose(3, 2, 0, 1),
            model.get_layer("conv2d").weight.detach(),
        )
        assert "gamma" not in str(list(f["batch_normalization_1"].attrs["weight_names"]))
    full = keras_h5.empty_backbone("inception_v3")
    load_keras_h5(full, keras_files["inception_v3"])
    assert keras_h5.assert_loaded(keras_files["inception_v3"], full, keras_h5.tf_keras_name) == 94 * 4
    assert tuple(full.get_layer("conv2d_85").weight.shape) == (320, 2048, 1, 1)  # mixed10's branch1x1


def test_load_by_position_when_names_are_arbitrary(keras_files, tmp_path, keras_h5) -> None:
    """Keras' load_weights is positional: a file whose layers are named otherwise still loads, in file order."""
    source = keras_files["inception_v3"]
    renamed = {}
    with h5py.File(source) as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        for k, name in enumerate(names):
            renamed[name] = f"layer{k:03d}"
        weights = {
            renamed[n]: [(w.decode(), np.asarray(f[n][w.decode()])) for w in f[n].attrs["weight_names"]] for n in names
        }
    path = keras_h5.write(tmp_path / "renamed.h5", [renamed[n] for n in names], weights)
    model, _ = create_keras_backbone("inception_v3", cut="mixed2")
    assert "position" in load_keras_h5(model, path)
    back = {v: keras_h5.tf_keras_name(k) for k, v in renamed.items()}
    assert keras_h5.assert_loaded(path, model, lambda n: back[n]) == 26 * 4


def test_load_old_keras_applications_resnet50_names(keras_files, tmp_path, keras_h5) -> None:
    """keras_applications' first ResNet50 file used conv1, bn_conv1, res2a_branch2a, bn2a_branch1, ..."""

    def old_name(name: str) -> str:
        if name in ("conv1_conv", "conv1_bn"):
            return {"conv1_conv": "conv1", "conv1_bn": "bn_conv1"}[name]
        m = re.match(r"^conv(\d)_block(\d)_(\d)_(conv|bn)$", name)
        if not m:
            return name
        branch = {"0": "1", "1": "2a", "2": "2b", "3": "2c"}[m[3]]
        return f"{'res' if m[4] == 'conv' else 'bn'}{m[1]}{'abcdef'[int(m[2]) - 1]}_branch{branch}"

    def rename(f):
        names = [n.decode() for n in f.attrs["layer_names"]]
        for name in names:
            if old_name(name) != name:
                f.move(name, old_name(name))
        f.attrs["layer_names"] = np.array([old_name(n).encode() for n in names])

    path = edited_copy(keras_files["resnet50"], tmp_path / "old_names.h5", rename)
    model = keras_h5.empty_backbone("resnet50", cut="conv2_block1")
    assert "old keras_applications" in load_keras_h5(model, path)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(
            np.asarray(f["res2a_branch2b"]["conv2_block1_2_conv/kernel:0"]).transpose(3, 2, 0, 1),
            model.get_layer("conv2_block1_2_conv").weight.detach(),
        )
        np.testing.assert_array_equal(
            np.asarray(f["bn2a_branch1"]["conv2_block1_0_bn/moving_variance:0"]),
            model.get_layer("conv2_block1_0_bn").running_var,
        )


def edited_copy(source: Path, target: Path, edit) -> Path:
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        edit(f)
    return target


def test_missing_layer_raises_with_name(keras_files, tmp_path) -> None:
    def drop(f):
        del f["block3_conv2"]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n != b"block3_conv2"])

    path = edited_copy(keras_files["vgg16"], tmp_path / "missing.h5", drop)
    model, _ = create_keras_backbone("vgg16")
    before = model.get_layer("block1_conv1").weight.clone()
    with pytest.raises(ImgclsError, match=r"missing\.h5.*missing from the file: block3_conv2"):
        load_keras_h5(model, path)
    torch.testing.assert_close(model.get_layer("block1_conv1").weight, before)  # nothing loaded


def test_wrong_shape_raises_with_layer_and_shapes(keras_files, tmp_path) -> None:
    def reshape(f):
        del f["conv2_block1_2_conv/conv2_block1_2_conv/kernel:0"]
        f["conv2_block1_2_conv"].create_dataset("conv2_block1_2_conv/kernel:0", data=np.zeros((3, 3, 64, 32), "f4"))

    path = edited_copy(keras_files["resnet50"], tmp_path / "shape.h5", reshape)
    model, _ = create_keras_backbone("resnet50", cut="conv2")
    with pytest.raises(ImgclsError, match=r"shape\.h5.*conv2_block1_2_conv.*\(3, 3, 64, 32\).*\(3, 3, 64, 64\)"):
        load_keras_h5(model, path)


def test_file_for_another_model_raises(keras_files) -> None:
    model, _ = create_keras_backbone("resnet50")
    with pytest.raises(ImgclsError, match=r"vgg16_weights.*resnet50.*looks like Keras vgg16"):
        load_keras_h5(model, keras_files["vgg16"])
    inception, _ = create_keras_backbone("inception_v3", cut="mixed0")
    with pytest.raises(ImgclsError, match="looks like Keras resnet50"):
        load_keras_h5(inception, keras_files["resnet50"])


def test_include_top_file_and_extra_weight_raise(keras_files, tmp_path) -> None:
    def add_top(f):
        group = f.create_group("fc1")
        group.attrs["weight_names"] = np.array([b"fc1_W_1:0", b"fc1_b_1:0"])
        group.create_dataset("fc1_W_1:0", data=np.zeros((25088, 2), "f4"))
        group.create_dataset("fc1_b_1:0", data=np.zeros(2, "f4"))
        f.attrs["layer_names"] = np.array([*f.attrs["layer_names"], b"fc1"])

    path = edited_copy(keras_files["vgg16"], tmp_path / "top.h5", add_top)
    model, _ = create_keras_backbone("vgg16", cut="block1")
    with pytest.raises(ImgclsError, match=r"not in the model: fc1.*notop"):
        load_keras_h5(model, path)

    def extra_weight(f):
        f["block1_conv1"].create_dataset("block1_conv1_c_1:0", data=np.zeros(64, "f4"))
        f["block1_conv1"].attrs["weight_names"] = np.array(
            [*f["block1_conv1"].attrs["weight_names"], b"block1_conv1_c_1:0"]
        )

    path = edited_copy(keras_files["vgg16"], tmp_path / "extra.h5", extra_weight)
    with pytest.raises(ImgclsError, match=r"extra\.h5.*block1_conv1.*3 weights"):
        load_keras_h5(model, path)


def test_not_a_keras_file_raises(tmp_path) -> None:
    model, _ = create_keras_backbone("vgg16", cut="block1")
    text = tmp_path / "weights.h5"
    text.write_text("not hdf5")
    with pytest.raises(ImgclsError, match="not an HDF5"):
        load_keras_h5(model, text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("images", data=np.zeros(3))
    with pytest.raises(
        ImgclsError, match=r"other\.h5: an HDF5 file but not Keras weights.*save_weights\('x\.weights\.h5'\)"
    ):
        load_keras_h5(model, other)
    with pytest.raises(ImgclsError, match="no such"):
        load_keras_h5(model, tmp_path / "absent.h5")
    with pytest.raises(ImgclsError, match="keras"):
        load_keras_h5(torch.nn.Linear(2, 2), text)
