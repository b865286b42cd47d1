"""Seeing inside a trained model: Grad-CAM heatmaps and intermediate activations (computation only).

Both run the PyTorch model (`Classifier.model`), even when the classifier predicts with ONNX
Runtime: Grad-CAM needs gradients, and activations need the layers by name.

Grad-CAM (Selvaraju et al. 2017) weights each channel of the last convolutional feature map by the
spatial mean of the class score's gradient, sums, keeps the positive part and upsamples it to the
input. "Last convolutional feature map" is found generically: the output of the module that
finishes last among those returning a (B, C, h, w) map with h or w > 1, adaptive pools excepted
(they only resize). That is the seed CNN's last pooling stage, ResNet's last block and a timm
backbone's final conv/BN/activation, and it needs no per-architecture table.
"""

from __future__ import annotations

import fnmatch
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.classifier import ImageClassifier, probabilities

if TYPE_CHECKING:
    from imgcls.inference import Classifier, ImageInput

_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_TARGETS: weakref.WeakKeyDictionary[nn.Module, str | None] = weakref.WeakKeyDictionary()


@dataclass
class Explanation:
    label: str  # predicted (or requested) class name
    probability: float  # the model's probability for that class
    class_index: int
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the model's input size
    overlay: np.ndarray  # (H, W, 3) uint8: the input pixels as the model saw them, heatmap blended (jet)


@dataclass
class Activation:
    name: str  # module path in the model, e.g. "net.0" or "net.backbone.blocks.3.0.conv_pw"
    kind: str  # module type, e.g. "Conv2d", "MaxPool2d"
    maps: np.ndarray  # (C, h, w) float32: the layer's output for one image

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.maps.shape)


# --------------------------------------------------------------------------- Grad-CAM


def supports_grad_cam(classifier: Classifier) -> bool:
    """Whether the model has a convolutional feature map with spatial size > 1 to explain with."""
    return grad_cam_layer(classifier) is not None


def grad_cam_layer(classifier: Classifier) -> str | None:
    """Name of the module whose output Grad-CAM uses (found once per model by a dry forward)."""
    model = classifier.model
    if model not in _TARGETS:
        spec = classifier.spec
        probe = torch.zeros(1, spec.channels, spec.image_size, spec.image_size)
        finished: list[str] = []
        with _hooks(model, _spatial_modules(model), lambda name, output: finished.append(name)), torch.no_grad():
            model.one_view(probe)
        _TARGETS[model] = finished[-1] if finished else None
    return _TARGETS[model]


def explain(classifier: Classifier, item: ImageInput, class_index: int | None = None) -> Explanation:
    """Grad-CAM for one image: for `class_index`, else the predicted class."""
    layer = grad_cam_layer(classifier)
    if layer is None:
        raise ImgclsError(
            f"Grad-CAM needs a convolutional feature map larger than 1x1; model {classifier.spec.architecture!r} "
            f"at {classifier.spec.image_size}px has none"
        )
    pixels = classifier.pixels(item)
    feature_map, logits = _forward_keeping(classifier.model, layer, pixels)
    logits_shown = logits.detach()
    model = classifier.model
    if model.flip_tta or model.eval_crops != (1.0,):  # the heatmap explains the image as it is; the answer
        with torch.no_grad():  # is the prediction's (mirror image, centre crops)
            logits_shown = model.eval()(_as_batch(pixels))
    probs = probabilities(logits_shown, classifier.spec.output)[0]
    index = int(probs.argmax()) if class_index is None else _checked_index(class_index, len(classifier.classes))
    score = _class_score(logits, index, classifier.spec.output)
    (gradient,) = torch.autograd.grad(score, feature_map)
    heatmap = _cam(feature_map.detach()[0], gradient[0], pixels.shape[:2])
    return Explanation(
        label=classifier.classes[index],
        probability=float(probs[index]),
        class_index=index,
        heatmap=heatmap,
        overlay=blend_heatmap(pixels, heatmap),
    )


def _forward_keeping(model: ImageClassifier, layer: str, pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with gradients, and the output of module `layer` (read after the forward, so in-place
    activations applied to it later are included, and its gradient is taken w.r.t. that same value)."""
    kept: dict[str, torch.Tensor] = {}
    batch = _as_batch(pixels).float().requires_grad_(True)
    target = dict(model.named_modules())[layer]
    with _hooks(model, [(layer, target)], kept.__setitem__), torch.enable_grad():
        logits = model.one_view(batch)  # the image as it is, even for a model with flip TTA
    return kept[layer], logits


def _as_batch(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 pixels as a batch of one (1, C, H, W)."""
    return torch.tensor(pixels).permute(2, 0, 1)[None]


def _class_score(logits: torch.Tensor, index: int, output: str) -> torch.Tensor:
    """The logit of class `index`; a one-logit sigmoid model's logit speaks for class 1, its negation for 0."""
    if output == "sigmoid":
        return logits[0, 0] if index == 1 else -logits[0, 0]
    return logits[0, index]


def _cam(features: torch.Tensor, gradient: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) map and its gradient -> (H, W) float32 in [0, 1] (min-max scaled; zeros when flat)."""
    weights = gradient.float().mean(dim=(1, 2), keepdim=True)
    cam = F.relu((weights * features.float()).sum(dim=0))
    cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    low, high = cam.min(), cam.max()
    scaled = (cam - low) / (high - low) if high - low > 1e-12 * max(float(high), 1.0) else torch.zeros_like(cam)
    return scaled.clamp(0, 1).numpy().astype(np.float32)


def blend_heatmap(pixels: np.ndarray, heatmap: np.ndarray, strength: float = 0.55) -> np.ndarray:
    """(H, W, 3) uint8: the photo with a jet-coloured heatmap; hot regions strongly tinted, cold ones lightly."""
    from matplotlib import colormaps

    rgb = pixels if pixels.shape[-1] == 3 else np.repeat(pixels[..., :1], 3, axis=-1)
    colour = colormaps["jet"](heatmap)[..., :3] * 255
    alpha = (0.25 + strength * heatmap)[..., None]
    return np.clip((1 - alpha) * rgb + alpha * colour, 0, 255).astype(np.uint8)


def _checked_index(index: int, count: int) -> int:
    if not 0 <= index < count:
        raise ImgclsError(f"class index {index} is out of range: the model has {count} classes (0..{count - 1})")
    return int(index)


# --------------------------------------------------------------------------- hooks


def _spatial_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, module) for name, module in model.named_modules() if name and not isinstance(module, _ADAPTIVE_POOLS)
    ]


@contextmanager
def _hooks(model: nn.Module, modules: Sequence[tuple[str, nn.Module]], record) -> Iterator[None]:
    """Call `record(name, output)` for each listed module's 4D output with spatial size > 1, in the
    order modules finish, for forwards on this thread only (a server may predict concurrently)."""
    owner = threading.get_ident()

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            if threading.get_ident() != owner or not isinstance(output, torch.Tensor):
                return
            if output.dim() == 4 and max(output.shape[-2:]) > 1:
                record(name, output)

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------- activations

ACTIVATION_KINDS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def activation_layers(classifier: Classifier) -> list[str]:
    """Names of the convolution and pooling layers, in model order."""
    return [name for name, module in classifier.model.named_modules() if isinstance(module, ACTIVATION_KINDS)]


def activations(classifier: Classifier, item: ImageInput, layers: Sequence[str] | None = None) -> list[Activation]:
    """Each chosen convolution/pooling layer's output for one image, in the order the layers run.

    `layers`: names or fnmatch patterns (``net.0``, ``*conv*``), or their 1-based positions in
    `activation_layers` as strings (as numbered in `imgcls show activations` files); default all of them."""
    names = _select_layers(activation_layers(classifier), layers)
    modules = dict(classifier.model.named_modules())
    captured: dict[str, Activation] = {}

    def record(name: str, output: torch.Tensor) -> None:  # clone: an in-place ReLU may follow
        if name not in captured:
            maps = output.detach()[0].float().contiguous().numpy().copy()
            captured[name] = Activation(name, type(modules[name]).__name__, maps)

    pixels = classifier.pixels(item)
    batch = _as_batch(pixels)
    with _hooks(classifier.model, [(n, modules[n]) for n in names], record), torch.no_grad():
        classifier.model.one_view(batch)
    return list(captured.values())


def _select_layers(available: list[str], wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return available
    chosen: list[str] = []
    for pattern in wanted:
        if pattern.isdigit() and 1 <= int(pattern) <= len(available):
            matches = [available[int(pattern) - 1]]
        else:
            matches = [n for n in available if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not matches:
            shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
            raise ImgclsError(f"--layers {pattern!r}: no convolution or pooling layer matches; layers: {shown}")
        chosen += [n for n in matches if n not in chosen]
    return [n for n in available if n in chosen]
