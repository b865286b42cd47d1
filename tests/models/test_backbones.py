"""Backbones: every name form builds a (B, 3, H, W) -> (B, D) feature extractor with the right
BackboneInfo, unknown names say what is valid, and fine-tuning unfreezes exactly the chosen blocks
while BatchNorm statistics of frozen blocks stay put."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import imgcls.models.keras
from imgcls.errors import ImgclsError
from imgcls.models.backbones import (
    BackboneInfo,
    block_names,
    create_backbone,
    freeze_batchnorm_stats,
    set_trainable,
)

LITE0_BLOCKS = ["conv_stem+bn1"] + [f"blocks.{i}" for i in range(6)] + ["blocks.6+conv_head+bn2"]


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0")


@pytest.mark.parametrize(
    ("name", "size", "dim", "mean", "interpolation"),
    [
        ("efficientnet_lite0", 224, 1280, (0.5, 0.5, 0.5), "bicubic"),
        ("efficientnet_lite1", 240, 1280, (0.5, 0.5, 0.5), "bicubic"),
        ("efficientnet_lite2", 260, 1280, (0.5, 0.5, 0.5), "bicubic"),
        ("timm/mobilenetv2_100", 224, 1280, (0.485, 0.456, 0.406), "bicubic"),
        ("timm/resnet18", 224, 512, (0.485, 0.456, 0.406), "bicubic"),
        ("torchvision/resnet18", 224, 512, (0.485, 0.456, 0.406), "bilinear"),
        ("torchvision/resnet50", 224, 2048, (0.485, 0.456, 0.406), "bilinear"),
        ("torchvision/vgg16", 224, 512, (0.485, 0.456, 0.406), "bilinear"),
        ("torchvision/alexnet", 224, 256, (0.485, 0.456, 0.406), "bilinear"),
        ("torchvision/inception_v3", 299, 2048, (0.5, 0.5, 0.5), "bilinear"),
    ],
)
def test_names_build_pooled_feature_extractors(name, size, dim, mean, interpolation):
    backbone, info = create_backbone(name)
    assert isinstance(info, BackboneInfo)
    assert (info.name, info.input_size, info.feature_shape, info.mean, info.resize) == (
        name,
        size,
        (dim,),
        mean,
        "crop",
    )
    assert info.interpolation == interpolation and 0.8 < info.crop_pct <= 1.0
    side = 80 if "inception" in name or "alexnet" in name else 64  # small: tests stay light
    backbone.train()  # training mode: inception must return a tensor (no aux logits)
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, side, side))
    assert isinstance(out, torch.Tensor) and out.shape == (2, dim)


def test_lite_backbones_are_the_tf_variant(lite0):
    backbone, info = lite0
    assert backbone.pretrained_cfg["architecture"] == "tf_efficientnet_lite0"
    assert info.crop_pct == 0.875
    assert backbone.num_classes == 0


def test_unknown_names_list_the_forms():
    for bad in ("efficientnet_lite9", "resnet50", "pytorch/resnet50", "timm/"):
        with pytest.raises(ImgclsError, match=r"timm/<any timm model>.*torchvision/.*keras/"):
            create_backbone(bad)
    with pytest.raises(ImgclsError, match="timm has no model named 'resnet5000'.*Similar timm models: resnet50,"):
        create_backbone("timm/resnet5000")
    with pytest.raises(ImgclsError, match="Unsupported torchvision backbone 'squeezenet1_0'"):
        create_backbone("torchvision/squeezenet1_0")


def test_keras_names_are_delegated(monkeypatch):
    made = nn.Conv2d(3, 4, 1)
    info = BackboneInfo("keras/inception_v3", 299, (0.5,) * 3, (0.5,) * 3, "squash", (2048,))
    calls = []

    def fake(name, **kw):
        calls.append((name, kw))
        return made, info

    monkeypatch.setattr(imgcls.models.keras, "create_keras_backbone", fake)
    assert create_backbone("keras/inception_v3", pooling="avg") == (made, info)
    assert calls == [("inception_v3", {"pooling": "avg"})]


# --------------------------------------------------------------------------- blocks and freezing


def trainable(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_lite0_blocks_are_timm_coarse_groups(lite0):
    assert block_names(lite0[0]) == LITE0_BLOCKS


def test_last_2_trains_exactly_the_last_two_blocks(lite0):
    backbone = lite0[0]
    names = [n for n, _ in backbone.named_parameters()]
    expected = {n for n in names if n.startswith(("blocks.5.", "blocks.6.", "conv_head.", "bn2."))}
    # by hand: blocks.5 = 4 inverted residuals x (3 convs + 3 BN x 2) = 36, blocks.6 = 9, head conv + BN = 3
    assert len(expected) == 36 + 9 + 3
    assert set_trainable(backbone, "last:2") == ["blocks.5", "blocks.6+conv_head+bn2"]
    assert trainable(backbone) == expected
    # the other options
    assert set_trainable(backbone, None) == [] and trainable(backbone) == set()
    assert set_trainable(backbone, "all") == LITE0_BLOCKS and trainable(backbone) == set(names)
    assert set_trainable(backbone, "last:0") == [] and trainable(backbone) == set()
    assert set_trainable(backbone, "last:99") == LITE0_BLOCKS
    assert set_trainable(backbone, "blocks.5") == ["blocks.5", "blocks.6+conv_head+bn2"]
    assert trainable(backbone) == expected
    assert set_trainable(backbone, "conv_head") == ["blocks.6+conv_head+bn2"]  # a part of a group name
    set_trainable(backbone, None)


def test_unknown_unfreeze_choices_list_the_blocks(lite0):
    with pytest.raises(
        ImgclsError, match=r"no such block\. Use none, all, last:N, or one of: conv_stem\+bn1, blocks\.0"
    ):
        set_trainable(lite0[0], "mixed6")
    with pytest.raises(ImgclsError, match="last:N"):
        set_trainable(lite0[0], "last:two")


def test_torchvision_blocks_are_top_level_children():
    backbone, _ = create_backbone("torchvision/resnet18")
    assert block_names(backbone) == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    assert set_trainable(backbone, "last:2") == ["layer3", "layer4"]
    expected = {n for n, _ in backbone.named_parameters() if n.startswith(("layer3.", "layer4."))}
    assert trainable(backbone) == expected and len(expected) == 30


class KerasLike(nn.Module):
    """What a keras/ backbone provides: layers by Keras name, and block_names() in order."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({name: nn.Conv2d(3, 3, 1) for name in ("conv1", "mixed5", "mixed6", "mixed7")})

    def block_names(self) -> list[str]:
        return list(self.layers)

    def forward(self, x):
        for layer in self.layers.values():
            x = layer(x)
        return x


def test_keras_style_unfreeze_starts_after_the_named_block():
    model = KerasLike()
    assert block_names(model) == ["conv1", "mixed5", "mixed6", "mixed7"]
    assert set_trainable(model, "mixed6") == ["mixed7"]
    assert trainable(model) == {"layers.mixed7.weight", "layers.mixed7.bias"}
    assert set_trainable(model, "last:2") == ["mixed6", "mixed7"]


def test_frozen_batchnorm_statistics_do_not_move(lite0):
    backbone = lite0[0]
    set_trainable(backbone, "last:1")
    backbone.train()
    frozen_count = freeze_batchnorm_stats(backbone)
    bns = {n: m for n, m in backbone.named_modules() if isinstance(m, nn.BatchNorm2d)}
    trainable_bns = {n for n in bns if n.startswith(("blocks.6.", "bn2"))}
    assert frozen_count == len(bns) - len(trainable_bns) and len(trainable_bns) == 4
    before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}
    backbone(torch.randn(2, 3, 64, 64) * 3 + 1)  # training-mode forward pass
    for name, module in bns.items():
        moved = not torch.equal(before[name][0], module.running_mean)
        assert moved == (name in trainable_bns), name
        assert module.training == (name in trainable_bns)
    backbone.train()  # what Lightning does each epoch: the helper must be applied again
    assert all(m.training for m in bns.values())
    set_trainable(backbone, None)
    backbone.eval()


def test_real_keras_inception_unfreezes_like_keras_layers_after():
    model, _ = create_backbone("keras/inception_v3")
    names = block_names(model)
    assert names[0] == "stem" and names[-1] == "mixed10"
    assert set_trainable(model, "mixed6") == ["mixed7", "mixed8", "mixed9", "mixed10"]
    ours = trainable(model)
    model.set_trainable(model.layers_after("mixed6"))  # KerasApplication's own Keras-layer semantics
    assert ours == trainable(model) and len(ours) > 0
    assert set_trainable(model, "conv2d_85") == ["mixed10"]  # a Keras layer that is not a block name
    assert trainable(model) < ours
