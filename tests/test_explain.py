"""Grad-CAM and activations (`imgcls.explain`).

A hand-built network whose evidence for "red" and "blue" is red and blue pixels shows that the
heatmap lands where the evidence is, for both output kinds (one sigmoid logit: class 0 is its
negation). Every registered architecture (random weights) gets a valid heatmap; two small real
runs (the seed CNN and a timm EfficientNet-Lite0 transfer run, loaded with the ONNX engine) give
heatmaps at the model's input size whose class and probability match `predict`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.explain import activation_layers, activations, explain, grad_cam_layer, supports_grad_cam
from imgcls.inference import Classifier
from imgcls.models.classifier import ImageClassifier, ModelSpec, build_classifier
from imgcls.models.registry import accepts, get_model_entry, list_models

SIZE = 32
RED, BLUE, GREY = (220, 30, 30), (30, 40, 210), (128, 128, 128)
RED_BOX, BLUE_BOX = (slice(2, 10), slice(3, 11)), (slice(21, 29), slice(20, 28))


pytestmark = pytest.mark.usefixtures("one_thread")


def evidence_classifier(output: str) -> Classifier:
    """Classes (blue, red). Conv 1x1: channel 0 = red minus blue, channel 1 = blue minus red; ReLU,
    max-pool, global average, linear: the logits only see how much red and blue there is, and where."""
    conv = nn.Conv2d(3, 2, 1)
    head = nn.Linear(2, 1 if output == "sigmoid" else 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]]).view(2, 3, 1, 1))
        conv.bias.zero_()
        weights = [[4.0, -4.0]] if output == "sigmoid" else [[0.0, 4.0], [4.0, 0.0]]  # logit(s) for red | blue, red
        head.weight.copy_(torch.tensor(weights))
        head.bias.zero_()
    net = nn.Sequential(conv, nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    spec = ModelSpec("evidence", ["blue", "red"], SIZE, output=output)
    return Classifier(ImageClassifier(net, spec.mean, spec.std), spec)


def red_and_blue_photo() -> np.ndarray:
    photo = np.full((SIZE, SIZE, 3), GREY, dtype=np.uint8)
    photo[RED_BOX] = RED
    photo[BLUE_BOX] = BLUE
    return photo


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    return tuple(int(v) for v in np.unravel_index(heatmap.argmax(), heatmap.shape))


def inside(point: tuple[int, int], box: tuple[slice, slice]) -> bool:
    return all(part.start <= value < part.stop for value, part in zip(point, box, strict=True))


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_heatmap_peaks_where_the_class_evidence_is(output):
    classifier = evidence_classifier(output)
    photo = red_and_blue_photo()
    for class_name, own, other in (("red", RED_BOX, BLUE_BOX), ("blue", BLUE_BOX, RED_BOX)):
        result = explain(classifier, photo, classifier.classes.index(class_name))
        assert result.label == class_name and result.class_index == classifier.classes.index(class_name)
        assert result.heatmap.shape == (SIZE, SIZE) and result.heatmap.dtype == np.float32
        assert inside(peak(result.heatmap), own)
        assert result.heatmap[own].mean() > 0.5
        assert result.heatmap[other].max() < 0.05  # evidence for the other class is not evidence for this one
        probabilities = classifier.predict(photo)[0].probabilities
        assert result.probability == pytest.approx(probabilities[class_name], abs=1e-6)


def test_predicted_class_is_the_default_and_overlay_shows_the_photo():
    classifier = evidence_classifier("sigmoid")
    photo = red_and_blue_photo()
    photo[BLUE_BOX] = GREY  # only red evidence left
    result = classifier.explain(photo)
    assert (result.label, result.class_index) == ("red", 1) and result.probability > 0.5
    assert result.overlay.shape == (SIZE, SIZE, 3) and result.overlay.dtype == np.uint8
    hot, cold = result.overlay[RED_BOX].astype(int), result.overlay[BLUE_BOX].astype(int)
    assert np.abs(cold - photo[BLUE_BOX]).mean() < np.abs(hot - photo[RED_BOX]).mean()  # tinted where hot
    assert not np.array_equal(result.overlay, photo)


def test_a_flip_tta_model_explains_the_image_as_it_is_with_the_predicted_probability():
    evidence = evidence_classifier("softmax")
    mirrored = Classifier(
        ImageClassifier(evidence.model.net, evidence.spec.mean, evidence.spec.std, True), evidence.spec
    )
    result = explain(mirrored, red_and_blue_photo(), mirrored.classes.index("red"))
    assert inside(peak(result.heatmap), RED_BOX)  # not where the mirror image has its red

    torch.manual_seed(0)
    spec = ModelSpec("small-resnet", ["a", "b", "c"], SIZE, flip_tta=True)
    classifier = Classifier(build_classifier(spec).eval(), spec)
    photo = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    result = explain(classifier, photo)
    predicted = classifier.predict(photo)[0]
    assert result.label == predicted.label
    assert result.probability == pytest.approx(predicted.probabilities[result.label], abs=1e-5)
    layers = activation_layers(classifier)
    assert [a.name for a in activations(classifier, photo)] == layers  # one forward pass: each layer once


def test_the_target_layer_is_the_last_map_larger_than_one_pixel():
    classifier = evidence_classifier("softmax")
    assert grad_cam_layer(classifier) == "net.2"  # the max-pool (16x16), not the global average (1x1)
    assert supports_grad_cam(classifier)


def test_models_without_a_spatial_map_and_bad_class_indices_are_clear_errors():
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    spec = ModelSpec("pooled-linear", ["a", "b"], SIZE)
    flat = Classifier(ImageClassifier(net, spec.mean, spec.std), spec)
    assert not supports_grad_cam(flat)
    with pytest.raises(ImgclsError, match="Grad-CAM needs a convolutional feature map"):
        explain(flat, red_and_blue_photo())
    with pytest.raises(ImgclsError, match="class index 2 is out of range"):
        explain(evidence_classifier("sigmoid"), red_and_blue_photo(), 2)


@pytest.mark.parametrize("architecture", [name for name in list_models() if name != "transfer"])
def test_every_registered_network_gets_a_heatmap(architecture):
    """Random weights are enough to check the mechanics: a (size, size) map in [0, 1] that varies."""
    size = max(64, getattr(get_model_entry(architecture), "min_size", 1))
    arguments = {"image_size": size} if accepts(architecture, "image_size") else {}
    torch.manual_seed(0)
    spec = ModelSpec(architecture, ["a", "b", "c"], size, arch_args=arguments)
    classifier = Classifier(build_classifier(spec), spec)
    photo = np.random.default_rng(0).integers(0, 256, (size + 10, size, 3), dtype=np.uint8)
    result = explain(classifier, photo)
    assert result.heatmap.shape == (size, size)
    assert result.heatmap.min() >= 0 and result.heatmap.max() <= 1 and result.heatmap.std() > 0
    assert result.label in spec.classes and 0 < result.probability <= 1


# --------------------------------------------------------------------------- real runs


def val_photos(data) -> list:
    return sorted((data / "val").rglob("*.jpg"))


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize(("run_name", "engine"), [("seed_cnn", "onnx"), ("transfer", "torch")])
def test_real_runs_explain_their_predictions(tiny_runs, run_name, engine):
    """The seed CNN predicts with ONNX Runtime (exported on load; Grad-CAM still runs PyTorch), the
    transfer run with PyTorch (exporting EfficientNet costs more time than it tests)."""
    classifier = Classifier.load(getattr(tiny_runs, run_name), engine="auto" if engine == "onnx" else engine)
    assert classifier.engine == engine
    layer = grad_cam_layer(classifier)
    assert layer is not None and (run_name == "seed_cnn" or layer.startswith("net.backbone."))
    for photo in val_photos(tiny_runs.data)[:3]:
        predicted = classifier.predict(photo)[0]
        result = classifier.explain(photo)
        assert result.heatmap.shape == (64, 64) and result.overlay.shape == (64, 64, 3)
        assert result.heatmap.min() >= 0 and result.heatmap.max() == pytest.approx(1) and result.heatmap.std() > 0
        assert result.label == predicted.label
        assert result.probability == pytest.approx(predicted.probability, abs=1e-4)
        other = classifier.explain(photo, 1 - result.class_index)
        assert other.label != result.label and other.probability == pytest.approx(1 - result.probability, abs=1e-5)


@pytest.mark.slow
@pytest.mark.shared_data
def test_activations_of_the_seed_cnn_have_one_map_per_channel(tiny_runs):
    classifier = Classifier.load(tiny_runs.seed_cnn, engine="torch")
    photo = val_photos(tiny_runs.data)[0]
    layers = activations(classifier, photo)
    convolutions = {name: m for name, m in classifier.model.named_modules() if isinstance(m, nn.Conv2d)}
    assert (
        [a.name for a in layers]
        == activation_layers(classifier)
        == ["net.0", "net.1", "net.3", "net.4", "net.6", "net.7"]
    )
    assert [a.kind for a in layers] == ["Conv2d", "MaxPool2d"] * 3
    assert [a.shape for a in layers] == [
        (16, 64, 64),
        (16, 32, 32),
        (32, 32, 32),
        (32, 16, 16),
        (64, 16, 16),
        (64, 8, 8),
    ]
    for layer in layers:
        if layer.name in convolutions:
            assert layer.shape[0] == convolutions[layer.name].out_channels
    pooled = layers[1].maps
    assert pooled.min() < 0  # the pool's own output: our ReLU comes after it (in place), and is not applied here
    chosen = activations(classifier, photo, ["2", "*.7"])
    assert [a.name for a in chosen] == ["net.1", "net.7"]
    with pytest.raises(ImgclsError, match="no convolution or pooling layer matches"):
        activations(classifier, photo, ["net.99"])
