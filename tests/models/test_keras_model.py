"""`KerasApplication`: Keras' 'caffe' input (BGR), cutting at a layer, block or alias, Keras-style
`layers[-4:]` and `layers after`, blocks as submodules, frozen BatchNorm in inference mode, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgcls.errors import ImgclsError
from imgcls.models.keras import create_keras_backbone, hwio_to_oihw


def test_caffe_models_see_bgr() -> None:
    """block1_conv1 picking input channel 0 (Keras' B after the flip) outputs relu(B * 255 - 103.939)."""
    model, info = create_keras_backbone("vgg16", cut="block1_conv1")
    kernel = np.zeros((3, 3, 3, 64), dtype=np.float32)
    kernel[1, 1, 0, :] = 1.0  # centre tap, BGR channel 0
    conv = model.get_layer("block1_conv1")
    with torch.no_grad():
        conv.weight.copy_(hwio_to_oihw(kernel))
        conv.bias.zero_()
        image = torch.rand(1, 3, 6, 6)
        normalised = (image - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
        out = model(normalised)
    expected = torch.relu(image[:, 2] * 255 - 103.939)
    torch.testing.assert_close(out[:, 0], expected, rtol=1e-5, atol=1e-3)


def test_inception_cut_at_mixed7_on_150px_gives_768x7x7() -> None:
    model, info = create_keras_backbone("inception_v3", cut="mixed7")
    assert info.feature_shape == (768, 17, 17)  # at 299
    assert model.output_shape(150) == (768, 7, 7)
    assert model.block_names() == ["stem"] + [f"mixed{i}" for i in range(8)]
    model.train()  # batch statistics keep random-weight activations in range
    with torch.no_grad():
        out = model(torch.randn(1, 3, 150, 150))
    assert out.shape == (1, 768, 7, 7)
    assert "conv2d_69" in model.layers and "conv2d_70" not in model.layers  # mixed7's last conv is the 70th


def test_resnet50_forward_small_input_and_cut_aliases() -> None:
    model, _ = create_keras_backbone("resnet50", cut="conv3", pooling="avg")
    assert model.output_layer == "conv3_block4_out"
    model.train()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert create_keras_backbone("resnet50")[0].output_shape(32) == (2048, 1, 1)


def test_vgg16_last_four_layers_and_trainable() -> None:
    model, info = create_keras_backbone("vgg16")
    assert model.layer_names()[0] == "input_1" and len(model.layer_names()) == 19
    assert model.last_layers(4) == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    assert model.block_names() == [f"block{i}" for i in range(1, 6)]
    assert model.set_trainable(model.last_layers(4)) == 3 * (3 * 3 * 512 * 512 + 512)
    assert not model.get_layer("block4_conv3").weight.requires_grad
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 512, 1, 1)
    cut, cut_info = create_keras_backbone("vgg16", cut="block4")
    assert cut.output_layer == "block4_pool" and cut_info.feature_shape == (512, 14, 14)


@pytest.mark.parametrize(("name", "cut"), [("vgg16", None), ("resnet50", "conv3"), ("inception_v3", "mixed7")])
def test_blocks_are_submodules_holding_their_layers(name: str, cut: str | None) -> None:
    with torch.device("meta"):
        model, _ = create_keras_backbone(name, cut=cut)
    seen = set()
    for block in model.block_names():
        params = {id(p) for p in model.get_submodule(block).parameters()}
        expected = {id(p) for layer in model.block_layers(block) for p in model.get_layer(layer).parameters()}
        assert params == expected and params, block
        seen |= params
    assert seen == {id(p) for p in model.parameters()}


def test_backbones_set_trainable_after_mixed6() -> None:
    from imgcls.models.backbones import block_names, set_trainable

    with torch.device("meta"):
        model, _ = create_keras_backbone("inception_v3", cut="mixed7")
    assert block_names(model) == model.block_names()
    assert set_trainable(model, "mixed6") == ["mixed7"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("mixed7.")}
    assert {"mixed7.conv2d_60.weight", "mixed7.conv2d_69.weight"} <= trainable  # mixed7: the 61st..70th convs
    assert "mixed6.conv2d_59.weight" in dict(model.named_parameters()) and "mixed6.conv2d_59.weight" not in trainable


def test_frozen_batchnorm_runs_in_inference_mode() -> None:
    model, _ = create_keras_backbone("inception_v3", cut="stem")
    model.set_trainable(model.layers_after("activation_3"))  # only the last conv/bn of the stem train
    model.train()
    assert not model.get_layer("batch_normalization").training
    assert model.get_layer("batch_normalization_4").training


def test_bad_names_raise() -> None:
    with pytest.raises(ImgclsError, match="mixed7"):
        create_keras_backbone("inception_v3", cut="mixed77")
    with pytest.raises(ImgclsError, match="vgg16"):
        create_keras_backbone("vgg19")
    with pytest.raises(ImgclsError, match="pooling"):
        create_keras_backbone("vgg16", pooling="mean")
