"""The model file contract: `model.safetensors` (weights) + `model.json` (everything else).

`ImageClassifier` wraps a registry network with its preprocessing, so every consumer
(PyTorch, ONNX Runtime, the server) feeds the same thing: resized pixels in [0, 255], NCHW.
No pickle anywhere: the JSON names the architecture and its arguments, safetensors holds tensors.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.files import atomic_path, atomic_write_text
from imgcls.modelfile import FORMAT_VERSION, SPEC_FILE, WEIGHTS_FILE
from imgcls.models import timm_keys
from imgcls.models.registry import create_model


@dataclass
class ModelSpec:
    architecture: str  # registry name
    classes: list[str]
    image_size: int  # pixels, square
    channels: int = 3
    arch_args: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # on [0, 1] pixels
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize: str = "squash"
    output: str = "softmax"  # softmax: one logit per class | sigmoid: one logit for classes[1]
    flip_tta: bool = False  # predictions average the logits of the image and its mirror image
    # predictions average these views: the centre this share of each side, scaled up to image_size
    eval_crops: tuple[float, ...] = (1.0,)
    metrics: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_outputs(self) -> int:
        return 1 if self.output == "sigmoid" else len(self.classes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in values.items() if k in known})
        spec.eval_crops = tuple(spec.eval_crops)  # a JSON list
        return spec


def channel_stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """RGB statistics reduced to one value for grayscale inputs."""
    if len(values) == channels:
        return tuple(values)
    return (sum(values) / len(values),) * channels


class ImageClassifier(nn.Module):
    """Preprocessing + network: (B, C, H, W) pixels in [0, 255] (uint8 or float) -> logits.

    With `flip_tta`, evaluation mode averages the logits of each image and its left-right mirror
    (test-time augmentation, as airbench and fastai's `tta` do): inside the module, so evaluation,
    prediction, the server and the ONNX export all see the same model. Training is one view.

    With `eval_crops` other than (1,), evaluation mode zooms into the centre (FixRes: random resized
    crops show objects larger in training than a whole photo shows them; timm's `crop_pct`), and
    with several, averages the logits of those views (multi-scale test-time augmentation)."""

    def __init__(
        self,
        net: nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        flip_tta: bool = False,
        eval_crops: tuple[float, ...] = (1.0,),
        image_size: int = 0,
    ):
        super().__init__()
        self.net = net
        self.flip_tta = flip_tta
        self.eval_crops = tuple(eval_crops)
        if any(crop < 1.0 for crop in self.eval_crops) and image_size <= 0:
            raise ValueError("eval_crops below 1 need the model's image_size")
        # sizes fixed here, not read from the input: the ONNX graph then holds plain numbers
        self.zooms = [round(image_size / crop) if crop < 1.0 else 0 for crop in self.eval_crops]
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.one_view(pixels)
        views = [self.centre_zoom(pixels, zoomed) for zoomed in self.zooms]
        if self.flip_tta:
            views += [view.flip(-1) for view in views]
        return sum(self.one_view(view) for view in views) / len(views)

    def centre_zoom(self, pixels: torch.Tensor, zoomed: int) -> torch.Tensor:
        """The image scaled up (bilinear) to `zoomed` pixels a side, then its centre at `image_size`;
        0: the image as it is."""
        if not zoomed:
            return pixels
        top, size = (zoomed - self.image_size) // 2, self.image_size
        pixels = F.interpolate(pixels.float(), size=(zoomed, zoomed), mode="bilinear", align_corners=False)
        return pixels[..., top : top + size, top : top + size]

    def one_view(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits of these pixels alone (what explanations hook into: one forward pass)."""
        return self.net((pixels.float() - self.mean) / self.std)


def build_classifier(spec: ModelSpec) -> ImageClassifier:
    net = create_model(spec.architecture, spec.num_outputs, spec.channels, **spec.arch_args)
    mean, std = channel_stats(spec.mean, spec.channels), channel_stats(spec.std, spec.channels)
    return ImageClassifier(net, mean, std, spec.flip_tta, spec.eval_crops, spec.image_size)


def probabilities(logits: torch.Tensor, output: str) -> torch.Tensor:
    """(B, n_classes) probabilities from either output kind."""
    if output == "sigmoid":
        positive = torch.sigmoid(logits[:, 0].float())
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(logits.float(), dim=1)


@torch.inference_mode()
def predict_probabilities(model: ImageClassifier, output: str, images: torch.Tensor, batch_size: int = 128):
    """(N, n_classes) numpy probabilities for (N, C, H, W) uint8 images, in eval mode."""
    model.eval()
    chunks = [
        probabilities(model(images[i : i + batch_size].contiguous(memory_format=torch.channels_last)), output)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).numpy() if chunks else torch.zeros(0, 0).numpy()


def save_model(folder: Path, model: ImageClassifier, spec: ModelSpec) -> None:
    """Weights, then the description: both atomically, so a reader never sees half a model."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_file(state, str(temporary), metadata={"format": "imgcls", "version": str(FORMAT_VERSION)})
    atomic_write_text(folder / SPEC_FILE, spec.to_json())


def read_spec(folder: Path) -> ModelSpec:
    """`model.json` of a folder, checked: a clear message for a missing, damaged or newer file."""
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise ImgclsError(f"{spec_path}: missing; is {folder} a run folder of a finished training?")
    try:
        spec = ModelSpec.from_dict(json.loads(spec_path.read_text()))
    except (ValueError, TypeError) as error:
        raise ImgclsError(f"{spec_path}: not a valid model description ({error})") from None
    if spec.format_version > FORMAT_VERSION:
        raise ImgclsError(f"{spec_path}: made by a newer imgcls (format {spec.format_version}); upgrade imgcls")
    return spec


def load_model(folder: Path) -> tuple[ImageClassifier, ModelSpec]:
    """Rebuild the network from `model.json` and fill it from `model.safetensors` (strict)."""
    spec, weights_path = read_spec(folder), folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ImgclsError(f"{weights_path}: missing; is {folder} a run folder of a finished training?")
    model = build_classifier(spec)
    model.load_state_dict(_imgcls_state(folder, spec, model), strict=True)
    return model.eval(), spec


def _imgcls_state(folder: Path, spec: ModelSpec, model: ImageClassifier) -> dict[str, torch.Tensor]:
    """The folder's tensors under `model`'s names: a timm-layout export (`imgcls export --format hf`)
    is converted back; anything else is imgcls's own layout."""
    path = folder / WEIGHTS_FILE
    state = load_file(str(path))
    classifier = timm_keys.timm_classifier(folder)
    if classifier is None:
        return state
    try:
        return timm_keys.from_timm(
            state, classifier, spec.output, model.net.head, {"mean": model.mean, "std": model.std}
        )
    except (KeyError, AttributeError, ImgclsError) as error:
        raise ImgclsError(f"{path}: timm-layout weights that do not fit {spec.architecture} ({error})") from None
