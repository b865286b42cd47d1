"""The Keras Applications as Keras builds them: parameter counts of `model.count_params()`, the
preprocessing each expects, the structure (biases, strides, epsilons, kernels) and Keras' layer order."""

from __future__ import annotations

import pytest
import torch

from imgcls.models.keras import create_keras_backbone, keras_param_count

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


def test_inception_layer_order_is_keras_order(keras_h5) -> None:
    with torch.device("meta"):
        model, _ = create_keras_backbone("inception_v3")
    expected = [keras_h5.tf_keras_name(n) for n in KERAS_INCEPTION_V3_LAYERS[:-2]]  # notop: no avg_pool, predictions
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
