"""Model registry: every network trains (forward/backward) on 1- and 3-channel input, the seed CNN
has the seed's exact parameter count, and a saved model (safetensors + JSON) round-trips exactly."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from imgcls.models.classifier import ModelSpec, build_classifier, load_model, save_model
from imgcls.models.registry import accepts, create_model, get_model_entry, list_models
from imgcls.recipes import get_recipe, model_spec

pytestmark = pytest.mark.usefixtures("isolated_cache")

SEED_CNN_PARAMETERS = 10_641_441


def small_spec(name: str, channels: int, n_classes: int = 3) -> ModelSpec:
    """A spec at a small input size where the model allows it (its default size otherwise)."""
    entry = get_model_entry(name)
    size = max(32, entry.min_size) if accepts(name, "image_size") else min(entry.default_size, 64)
    return ModelSpec(
        architecture=name,
        classes=[f"c{k}" for k in range(n_classes)],
        image_size=size,
        channels=channels,
        arch_args={"image_size": size} if accepts(name, "image_size") else {},
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_the_builtin_models() -> None:
    names = list_models()
    assert {"seed-basic-cnn", "small-resnet"} <= set(names)
    assert names == sorted(names)
    assert list_models("seed-*") == [n for n in names if n.startswith("seed-")]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name: str, channels: int) -> None:
    torch.manual_seed(0)
    spec = small_spec(name, channels)
    model = build_classifier(spec).train()
    pixels = torch.randint(0, 256, (2, channels, spec.image_size, spec.image_size), dtype=torch.uint8)

    outputs = model(pixels)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)  # GoogLeNet trains (main, aux1, aux2)
    assert all(logits.shape == (2, 3) and torch.isfinite(logits).all() for logits in outputs)
    sum(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])) for logits in outputs).backward()

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for _, p in params)
    assert any(p.grad.abs().sum() > 0 for _, p in params)


@pytest.mark.parametrize("name", list_models())
def test_one_output_for_binary_sigmoid(name: str) -> None:
    spec = small_spec(name, 3, n_classes=2)
    spec.output = "sigmoid"
    assert spec.num_outputs == 1
    pixels = torch.zeros((1, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    assert build_classifier(spec).eval()(pixels).shape == (1, 1)


def test_seed_basic_cnn_parameter_count() -> None:
    from_shapes = (
        (3 * 9 + 1) * 16  # conv 3x3, 3 -> 16
        + (16 * 9 + 1) * 32  # conv 3x3, 16 -> 32
        + (32 * 9 + 1) * 64  # conv 3x3, 32 -> 64
        + (18 * 18 * 64 + 1) * 512  # 150 -> 75 -> 37 -> 18 after three 2x2 max-pools; dense 512
        + 513  # dense 512 -> 1
    )
    assert from_shapes == SEED_CNN_PARAMETERS

    net = create_model("seed-basic-cnn", num_outputs=1, in_channels=3, image_size=150)
    assert count(net) == SEED_CNN_PARAMETERS
    assert net(torch.zeros(1, 3, 150, 150)).shape == (1, 1)

    # the recipe builds the same network for two classes (one sigmoid logit)
    spec = model_spec(get_recipe("seed-basic-cnn"), ["cat", "dog"])
    assert (spec.output, spec.num_outputs, spec.image_size) == ("sigmoid", 1, 150)
    assert count(build_classifier(spec)) == SEED_CNN_PARAMETERS


def _perturb_buffers(model: torch.nn.Module) -> None:
    """Non-default BatchNorm statistics, so the round trip must carry buffers as well as weights."""
    generator = torch.Generator().manual_seed(1)
    for name, buffer in model.named_buffers():
        if buffer.is_floating_point() and name.endswith(("running_mean", "running_var")):
            buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip(name: str, channels: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = small_spec(name, channels, n_classes=4)
    spec.metrics = {"accuracy": 0.5}
    model = build_classifier(spec)
    with torch.no_grad():
        _perturb_buffers(model)
    model.eval()
    save_model(tmp_path / "saved", model, spec)

    # no pickle: JSON description + safetensors weights (8-byte header length, then a JSON header)
    description = json.loads((tmp_path / "saved" / "model.json").read_text())
    assert description["architecture"] == name
    assert description["channels"] == channels
    raw = (tmp_path / "saved" / "model.safetensors").read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    assert header["__metadata__"]["format"] == "imgcls"
    assert set(header) - {"__metadata__"} == set(model.state_dict())

    loaded, loaded_spec = load_model(tmp_path / "saved")
    # (mean/std come back as lists from JSON: compare the JSON forms)
    assert json.loads(loaded_spec.to_json()) == json.loads(spec.to_json())
    assert not loaded.training
    pixels = torch.randint(0, 256, (3, channels, spec.image_size, spec.image_size), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model(pixels), loaded(pixels))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_eval_crops_predict_on_the_centre_alone_and_training_sees_the_whole_image(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = small_spec("small-resnet", 3)
    spec.eval_crops = (0.8, 0.7)
    model = build_classifier(spec)
    save_model(tmp_path / "saved", model, spec)
    loaded, loaded_spec = load_model(tmp_path / "saved")
    assert loaded_spec.eval_crops == (0.8, 0.7) and loaded.eval_crops == (0.8, 0.7)

    size = spec.image_size
    pixels = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8)
    framed = pixels.clone()
    edge = round(size * 0.1) - 1  # the centre 80%, scaled up bilinearly, reads no pixel this near the edge
    framed[..., :edge, :], framed[..., -edge:, :], framed[..., :edge], framed[..., -edge:] = 0, 255, 0, 255
    centre = (slice(None), slice(None), slice(size // 4, -size // 4), slice(size // 4, -size // 4))
    nudged = pixels.clone()
    nudged[centre] = 255 - nudged[centre]
    with torch.no_grad():
        assert torch.equal(loaded(framed), loaded(pixels)), "the frame outside the centre is not seen"
        assert not torch.allclose(loaded(nudged), loaded(pixels), atol=1e-3)
        assert not torch.allclose(loaded.one_view(framed), loaded.one_view(pixels), atol=1e-3)
        views = [loaded.centre_zoom(pixels, zoomed) for zoomed in loaded.zooms]
        assert all(view.shape == pixels.shape for view in views)
        torch.testing.assert_close(loaded(pixels), sum(loaded.one_view(v) for v in views) / 2)  # logits averaged
        loaded.flip_tta = True  # each crop and its mirror image
        mirrored = [loaded.one_view(v.flip(-1)) for v in views]
        expected = (sum(loaded.one_view(v) for v in views) + sum(mirrored)) / 4
        torch.testing.assert_close(loaded(pixels), expected)
        loaded.flip_tta = False
    assert ModelSpec.from_dict({k: v for k, v in spec.__dict__.items() if k != "eval_crops"}).eval_crops == (1.0,)
    loaded.train()
    torch.manual_seed(1)
    training = loaded(framed)
    torch.manual_seed(1)
    assert torch.equal(training, loaded.one_view(framed)), "training sees the whole image"


def test_flip_tta_averages_each_image_with_its_mirror_in_eval_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = small_spec("small-resnet", 3)
    spec.flip_tta = True
    model = build_classifier(spec)
    save_model(tmp_path / "saved", model, spec)
    loaded, loaded_spec = load_model(tmp_path / "saved")
    assert loaded_spec.flip_tta and loaded.flip_tta

    pixels = torch.randint(0, 256, (4, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    with torch.no_grad():
        plain, mirrored = loaded.one_view(pixels), loaded.one_view(pixels.flip(-1))
        assert not torch.allclose(plain, mirrored, atol=1e-3), "the network should not be mirror-symmetric"
        torch.testing.assert_close(loaded(pixels), (plain + mirrored) / 2)
        assert torch.equal(loaded(pixels.flip(-1)), loaded(pixels))  # the mirror image gets the same answer
    model.load_state_dict(loaded.state_dict())
    model.train()
    torch.manual_seed(1)
    training = model(pixels)
    torch.manual_seed(1)  # the same dropout masks, if any
    assert torch.equal(training, model.one_view(pixels)), "training sees one view"
