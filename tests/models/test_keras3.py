"""Keras 3 weight files, `.weights.h5` and `.keras`, written here in the layout of Keras 3's saving_lib
(`layers/<class>[_k]/vars/<i>`, see `imgcls.models.keras.keras3`) from a keras/* model's own weights, so
loading them back must give the identical tensors and activations; every way such a file can fail is an
`ImgclsError` naming the file, the layer and the problem, with nothing loaded. One test compares with
real Keras when IMGCLS_KERAS_PYTHON names a Python with Keras 3, and skips otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from imgcls.errors import ImgclsError
from imgcls.models.backbones import load_pretrained
from imgcls.models.keras import (
    CAFFE_MEAN,
    CAFFE_STD,
    KerasApplication,
    KerasConv2d,
    create_keras_backbone,
    load_keras_h5,
)

# The snake-cased Keras class of each graph kind: the name Keras 3 gives the layer's group.
KERAS3_CLASS = {
    "input": "input_layer", "conv": "conv2d", "bn": "batch_normalization", "relu": "activation",
    "maxpool": "max_pooling2d", "avgpool": "average_pooling2d", "zeropad": "zero_padding2d", "add": "add",
    "concat": "concatenate",
}  # fmt: skip


def keras_variables(model: KerasApplication, layer: str) -> list[np.ndarray]:
    """A layer's variables in Keras 3's order: HWIO kernel, bias; gamma, beta, moving mean, moving variance."""
    module = model.get_layer(layer)
    if isinstance(module, KerasConv2d):
        tensors = [module.weight.permute(2, 3, 1, 0), module.bias]
    else:
        tensors = [module.weight, module.bias, module.running_mean, module.running_var]
    return [t.detach().numpy().copy() for t in tensors if t is not None]


def write_weights_h5(
    path: Path, model: KerasApplication, name_of: Callable[[str], str] | None = str, nested: bool = False
) -> Path:
    """`model`'s weights as Keras 3's `save_weights` writes them: `layers/<class>[_k]/vars/<i>` in
    `model.layers` order, every layer's `vars` group named after it (`name_of`) or, as older Keras 3
    did, no names and no groups for layers without weights (`name_of=None`). `nested`: the application
    inside a Sequential model, under `layers/functional`."""
    with h5py.File(path, "w") as f:
        root = f.create_group("layers/functional") if nested else f
        seen: Counter[str] = Counter()
        for name in model.layer_names():
            layer = model.spec.graph.layers[name]
            keras_class = KERAS3_CLASS[layer.kind]
            slot = f"{keras_class}_{seen[keras_class]}" if seen[keras_class] else keras_class
            seen[keras_class] += 1
            values = keras_variables(model, name) if layer.weight_shapes() else []
            if values or name_of:
                variables = root.create_group(f"layers/{slot}/vars")
                if name_of:
                    variables.attrs["name"] = name_of(name)
                for i, value in enumerate(values):
                    variables[str(i)] = value
        if name_of:
            root.create_group("vars").attrs["name"] = model.arch
            if nested:
                f.create_group("vars").attrs["name"] = "sequential"
    return path


def write_archive(path: Path, members: dict[str, bytes | Path]) -> Path:
    """A zip archive as Keras 3's `model.save` writes it (members stored, in this order)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            if isinstance(content, Path):
                archive.write(content, name)
            else:
                archive.writestr(name, content)
    return path


def keras_archive(path: Path, weights_h5: Path) -> Path:
    metadata = {"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"}
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "config": {"name": "vgg16"}}
    members = {"metadata.json": json.dumps(metadata).encode(), "config.json": json.dumps(config).encode()}
    return write_archive(path, {**members, "model.weights.h5": weights_h5})


def random_batch_norms(model: KerasApplication) -> KerasApplication:
    """Distinct values in every BatchNorm tensor (a fresh one has gamma 1, beta 0, mean 0, variance 1),
    so a mix-up of their order cannot go unseen."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.layers.values():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean, module.running_var):
                    if tensor is not None:
                        tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return model


def assert_same_network(loaded: KerasApplication, source: KerasApplication, size: int | None = None) -> None:
    """Every tensor of `loaded` equals `source`'s; with `size`, so do the activations on one image."""
    expected = source.state_dict()
    for key, value in loaded.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, expected[key]), key
    if size:
        image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(loaded.eval()(image), source.eval()(image))


def edited_copy(source: Path, target: Path, edit: Callable[[h5py.File], None]) -> Path:
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        edit(f)
    return target


@pytest.fixture(scope="module")
def vgg16() -> KerasApplication:
    torch.manual_seed(0)
    return create_keras_backbone("vgg16")[0]


@pytest.fixture(scope="module")
def vgg16_files(vgg16, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("keras3")
    weights = write_weights_h5(tmp / "vgg16.weights.h5", vgg16)
    return {"weights": weights, "keras": keras_archive(tmp / "vgg16.keras", weights)}


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(("kind", "label"), [("weights", "Keras 3 .weights.h5"), ("keras", "Keras 3 .keras archive")])
def test_vgg16_loads_exactly(vgg16, vgg16_files, keras_h5, kind, label) -> None:
    model = keras_h5.empty_backbone("vgg16")
    message = load_keras_h5(model, vgg16_files[kind])
    assert f"13 Keras layers (26 tensors) from vgg16.{'weights.h5' if kind == 'weights' else 'keras'}" in message
    assert f"({label} of Keras model 'vgg16')" in message and "matched by name" in message
    assert_same_network(model, vgg16, size=32)


def test_cut_backbone_checks_and_skips_the_rest(vgg16, vgg16_files, keras_h5) -> None:
    model = keras_h5.empty_backbone("vgg16", cut="block2", pooling="avg")
    message = load_keras_h5(model, vgg16_files["keras"])
    assert "4 Keras layers (8 tensors)" in message and "skipped 9 layers after the cut at block2_pool" in message
    assert_same_network(model, vgg16)


def test_resnet50_without_names_loads_by_path(tmp_path, keras_h5) -> None:
    """Files of Keras 3 versions that wrote no layer names match as Keras' load_weights does: by path."""
    source = random_batch_norms(create_keras_backbone("resnet50")[0])
    path = write_weights_h5(tmp_path / "resnet50.weights.h5", source, name_of=None)
    with h5py.File(path) as f:
        assert "name" not in f["layers/batch_normalization_52/vars"].attrs and len(f["layers"]) == 106
    model = keras_h5.empty_backbone("resnet50")
    assert "matched by Keras 3 layer path" in load_keras_h5(model, path)
    assert_same_network(model, source, size=32)


def test_inception_v3_from_a_second_model_in_a_session(tmp_path, keras_h5) -> None:
    """A second InceptionV3 in one Keras session names its layers conv2d_94.., batch_normalization_94..;
    its BatchNorms have no gamma (scale=False): three variables each."""
    source = random_batch_norms(create_keras_backbone("inception_v3")[0])

    def second(name: str) -> str:
        head, _, number = name.rpartition("_")
        if name in ("conv2d", "batch_normalization"):
            return f"{name}_94"
        return f"{head}_{int(number) + 94}" if head in ("conv2d", "batch_normalization") else name

    path = write_weights_h5(tmp_path / "inception_v3.weights.h5", source, name_of=second)
    with h5py.File(path) as f:
        assert f["layers/batch_normalization/vars"].attrs["name"] == "batch_normalization_94"
        assert len(f["layers/batch_normalization/vars"]) == 3
    model = keras_h5.empty_backbone("inception_v3")
    assert "creation-order number" in load_keras_h5(model, path)
    assert_same_network(model, source, size=75)


def test_keras2_file_named_weights_h5_loads_as_keras2(vgg16, tmp_path, keras_h5) -> None:
    """The content decides the format, not the name: Keras 2's layout under a Keras 3 name still loads."""
    layers = vgg16.weight_layers()
    weights = {n: list(zip((f"{n}/kernel:0", f"{n}/bias:0"), keras_variables(vgg16, n), strict=True)) for n in layers}
    path = keras_h5.write(tmp_path / "vgg16.weights.h5", vgg16.layer_names(), weights)
    model = keras_h5.empty_backbone("vgg16")
    assert "(Keras 2 .h5)" in load_keras_h5(model, path)
    assert_same_network(model, vgg16)


def test_application_nested_in_a_sequential_model(vgg16, tmp_path, keras_h5) -> None:
    """Sequential([VGG16, ...]) nests the application under layers/functional; weightless layers around it
    and the optimizer's state do not matter, a Dense head does: it is not part of the backbone."""

    def add_optimizer(f: h5py.File) -> None:
        f.create_group("optimizer/vars").create_dataset("0", data=np.int64(3))
        f.create_group("layers/global_average_pooling2d/vars").attrs["name"] = "global_average_pooling2d"

    nested = write_weights_h5(tmp_path / "nested.weights.h5", vgg16, nested=True)
    with h5py.File(nested, "r+") as f:
        add_optimizer(f)
    model = keras_h5.empty_backbone("vgg16")
    assert "ignored its optimizer state" in load_keras_h5(model, nested)
    assert_same_network(model, vgg16)

    def add_head(f: h5py.File) -> None:
        dense = f.create_group("layers/dense/vars")
        dense.attrs["name"] = "dense"
        dense["0"], dense["1"] = np.zeros((512, 2), "f4"), np.zeros(2, "f4")

    with_head = edited_copy(nested, tmp_path / "with_head.weights.h5", add_head)
    pattern = r"with_head\.weights\.h5: does not fit.*not in the model: dense.*get_layer\('vgg16'\)\.save_weights"
    with pytest.raises(ImgclsError, match=pattern):
        load_keras_h5(keras_h5.empty_backbone("vgg16"), with_head)


def test_bfloat16_variables_widen_exactly(vgg16, vgg16_files, tmp_path, keras_h5) -> None:
    """Keras stores bfloat16 variables as raw 2-byte values with attribute dtype='bfloat16'."""
    kernel = keras_variables(vgg16, "block1_conv1")[0]
    top_bits = (kernel.view(np.uint32) >> 16).astype(np.uint16)

    def to_bfloat16(f: h5py.File) -> None:
        del f["layers/conv2d/vars/0"]
        f["layers/conv2d/vars"].create_dataset("0", data=top_bits.view("V2")).attrs["dtype"] = "bfloat16"

    path = edited_copy(vgg16_files["weights"], tmp_path / "bf16.weights.h5", to_bfloat16)
    model = keras_h5.empty_backbone("vgg16")
    load_keras_h5(model, path)
    widened = (top_bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(model.get_layer("block1_conv1").weight.detach(), widened.transpose(3, 2, 0, 1))


@pytest.mark.parametrize("kind", ["weights", "keras"])
def test_weights_option_routes_keras3_files(vgg16, vgg16_files, keras_h5, kind) -> None:
    """`--weights FILE` (`load_pretrained`) hands both Keras 3 files to the Keras reader."""
    model = keras_h5.empty_backbone("vgg16", cut="block1")
    assert "Keras 3" in load_pretrained("keras/vgg16", model, vgg16_files[kind])
    assert_same_network(model, vgg16)


# --------------------------------------------------------------------------- failures


def drop_variable(f: h5py.File) -> None:
    del f["layers/conv2d_5/vars/1"]


def drop_first_variable(f: h5py.File) -> None:
    del f["layers/conv2d_5/vars/0"]


def drop_layer(f: h5py.File) -> None:
    del f["layers/conv2d_5"]


def reshape_kernel(f: h5py.File) -> None:
    del f["layers/conv2d_5/vars/0"]
    f["layers/conv2d_5/vars/0"] = np.zeros((3, 3, 256, 128), "f4")


def stray_tensor(f: h5py.File) -> None:
    f["layers/conv2d_5/kernel"] = np.zeros(3, "f4")


def integer_bias(f: h5py.File) -> None:
    del f["layers/conv2d_5/vars/1"]
    f["layers/conv2d_5/vars/1"] = np.zeros(256, "i4")


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (drop_variable, r"layer 'block3_conv2' has 1 weights \(layers/conv2d_5/vars/0\), expected 2 \(kernel, bias\)"),
        (drop_first_variable, r"layer 'block3_conv2' \(layers/conv2d_5/vars\) holds variables 1, but .* are missing"),
        (drop_layer, r"does not fit Keras vgg16 .*12 layers with weights, the model 13; missing .*: block3_conv2;"),
        (reshape_kernel, r"'layers/conv2d_5/vars/0' has shape \(3, 3, 256, 128\), expected \(3, 3, 256, 256\) "),
        (stray_tensor, r"/layers/conv2d_5/kernel is a tensor outside any layer's vars group"),
        (integer_bias, r"block3_conv2': weight 'layers/conv2d_5/vars/1' is int32, expected floating point"),
    ],
)  # fmt: skip
def test_a_damaged_weights_file_names_the_layer_and_loads_nothing(vgg16_files, tmp_path, edit, pattern) -> None:
    path = edited_copy(vgg16_files["weights"], tmp_path / "edited.weights.h5", edit)
    model, _ = create_keras_backbone("vgg16", cut="block1")
    before = model.get_layer("block1_conv1").weight.clone()
    with pytest.raises(ImgclsError, match=r"edited\.weights\.h5: .*" + pattern):
        load_keras_h5(model, path)
    assert torch.equal(model.get_layer("block1_conv1").weight, before)


def test_truncated_files_are_reported_as_damaged(vgg16_files, tmp_path) -> None:
    data = vgg16_files["weights"].read_bytes()
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(data[: len(data) // 2])
    inner = keras_archive(tmp_path / "inner.keras", truncated)
    model, _ = create_keras_backbone("vgg16", cut="block1")
    with pytest.raises(ImgclsError, match=r"truncated\.weights\.h5: a damaged HDF5 \(\.h5\) file"):
        load_keras_h5(model, truncated)
    with pytest.raises(
        ImgclsError, match=r"inner\.keras: its model\.weights\.h5 is not a readable HDF5 file \(.*truncated"
    ):
        load_keras_h5(model, inner)


def test_a_file_of_another_architecture_says_which(vgg16, vgg16_files, tmp_path) -> None:
    model, _ = create_keras_backbone("resnet50", cut="conv1")
    with pytest.raises(ImgclsError, match=r"vgg16\.keras: does not fit Keras resnet50 .*looks like Keras vgg16"):
        load_keras_h5(model, vgg16_files["keras"])
    nameless = write_weights_h5(tmp_path / "nameless.weights.h5", vgg16, name_of=None)
    with pytest.raises(ImgclsError, match=r"carry no names; by their paths it has 0 batch_normalization, 13 conv2d, "
                       r"the model 53 batch_normalization, 53 conv2d"):  # fmt: skip
        load_keras_h5(model, nameless)


def test_archives_that_are_not_keras_models(tmp_path) -> None:
    model, _ = create_keras_backbone("vgg16", cut="block1")
    text = tmp_path / "text.keras"
    text.write_text("not a zip")
    with pytest.raises(ImgclsError, match=r"text\.keras: not a zip archive, so not a Keras 3 \.keras file"):
        load_keras_h5(model, text)
    config = {"config.json": b"{}", "metadata.json": b"{}"}
    cases = {
        "no_weights": (config, r"no model\.weights\.h5 inside \(it holds config\.json, metadata\.json\); .*incomplete"),
        "npz": ({**config, "model.weights.npz": b"npz"}, r"no model\.weights\.h5 inside .*\.npz format"),
        "photos": ({"cat.jpg": b"jpeg"}, r"no model\.weights\.h5 inside \(it holds cat\.jpg\); nor a config\.json"),
        "not_hdf5": ({**config, "model.weights.h5": b"text"}, r"its model\.weights\.h5 is not a readable HDF5 file"),
    }
    for name, (members, pattern) in cases.items():
        with pytest.raises(ImgclsError, match=rf"{name}\.keras: {pattern}"):
            load_keras_h5(model, write_archive(tmp_path / f"{name}.keras", members))


def test_a_corrupted_archive_is_reported_as_damaged(tmp_path) -> None:
    path = write_archive(tmp_path / "corrupt.keras", {"config.json": b"{}", "model.weights.h5": b"x" * 4096})
    data = bytearray(path.read_bytes())
    data[data.index(b"x" * 4096) + 100] = ord("y")  # the member is stored: change one byte, keep its CRC
    path.write_bytes(bytes(data))
    model, _ = create_keras_backbone("vgg16", cut="block1")
    with pytest.raises(ImgclsError, match=r"corrupt\.keras: a damaged zip archive.*CRC"):
        load_keras_h5(model, path)


def test_files_without_weights_and_folders(tmp_path) -> None:
    model, _ = create_keras_backbone("vgg16", cut="block1")
    empty = tmp_path / "empty.weights.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("layers/input_layer/vars").attrs["name"] = "input_layer"
        f.create_group("vars").attrs["name"] = "functional"
    with pytest.raises(ImgclsError, match=r"empty\.weights\.h5: a Keras 3 \.weights\.h5 without any weights"):
        load_keras_h5(model, empty)
    folder = tmp_path / "saved_model"
    folder.mkdir()
    with pytest.raises(ImgclsError, match=r"saved_model: a folder.*SavedModel.*model\.save\('x\.keras'\)"):
        load_keras_h5(model, folder)


# --------------------------------------------------------------------------- real Keras

KERAS_SCRIPT = """
import sys

import keras
import numpy as np

out, size = sys.argv[1], int(sys.argv[2])
keras.utils.set_random_seed(0)
model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
model.save_weights(f"{out}/vgg16.weights.h5")
model.save(f"{out}/vgg16.keras")
pixels = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
features = model.predict(keras.applications.vgg16.preprocess_input(pixels.copy()), verbose=0)
np.save(f"{out}/pixels.npy", pixels)
np.save(f"{out}/features.npy", features)
print(keras.__version__)
"""


@pytest.mark.skipif(not os.environ.get("IMGCLS_KERAS_PYTHON"), reason="IMGCLS_KERAS_PYTHON names no Python with Keras")
def test_real_keras3_vgg16_files_give_keras_activations(tmp_path, keras_h5) -> None:
    """Keras 3 saves a random VGG16 both ways and its activations on two 64-px images; keras/vgg16 loads
    each file and must give the same activations (float32: to 1e-4 of their scale)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    command = [os.environ["IMGCLS_KERAS_PYTHON"], "-c", KERAS_SCRIPT, str(tmp_path), "64"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    pixels = torch.from_numpy(np.load(tmp_path / "pixels.npy")).permute(0, 3, 1, 2) / 255
    images = (pixels - torch.tensor(CAFFE_MEAN).view(1, 3, 1, 1)) / torch.tensor(CAFFE_STD).view(1, 3, 1, 1)
    expected = np.load(tmp_path / "features.npy").transpose(0, 3, 1, 2)
    scale = float(np.abs(expected).max())
    assert scale > 0
    for name in ("vgg16.weights.h5", "vgg16.keras"):
        model = keras_h5.empty_backbone("vgg16")
        print(load_keras_h5(model, tmp_path / name))
        with torch.no_grad():
            difference = float(np.abs(model.eval()(images).numpy() - expected).max())
        print(f"Keras {done.stdout.strip()} {name}: max abs difference {difference:.3g}, activations up to {scale:.3g}")
        assert difference <= 1e-4 * max(1.0, scale), (name, difference, scale)
