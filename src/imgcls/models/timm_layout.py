"""A transfer model on a timm backbone with a linear head, as a plain timm classifier, and back.

Why: a Hugging Face folder in timm's layout loads with `timm.create_model("local-dir:DIR",
pretrained=True)` (or `hf-hub:user/repo`) without imgcls. timm builds the network from the
architecture name and `num_classes`; its classifier (`classifier`, `fc`, `head.fc`... whatever
`get_classifier()` is) takes the place of imgcls's head Linear. A one-logit sigmoid head becomes two
logits `[0, z]`, whose softmax is exactly `[1 - sigmoid(z), sigmoid(z)]`. Normalisation, which
imgcls keeps inside `ImageClassifier`, becomes the folder's `pretrained_cfg` mean/std.

The folder's `config.json` records the layout (`imgcls.layout`, `imgcls.classifier`), so `load_model`
turns such weights back into an `ImageClassifier` without importing timm (`timm_keys`).
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.data.decode import PAD_GREY
from imgcls.errors import ImgclsError
from imgcls.models.backbones import timm_architecture
from imgcls.models.classifier import ImageClassifier, ModelSpec, probabilities
from imgcls.models.timm_keys import head_linear_name


def timm_name(spec: ModelSpec) -> str | None:
    """The timm architecture this model can be exported as, or None (another backbone or a hidden layer)."""
    if spec.architecture != "transfer" or spec.arch_args.get("hidden") or spec.channels != 3:
        return None  # grayscale models normalise one channel before copying it: not what timm's config says
    if spec.resize == "pad" and any(round(255 * m) != PAD_GREY for m in spec.mean):
        return None  # timm's letterbox (crop_mode "border") fills with the mean colour; imgcls with grey
    return timm_architecture(spec.arch_args.get("backbone", "efficientnet_lite0"))


def to_timm(model: ImageClassifier, spec: ModelSpec) -> tuple[nn.Module, str]:
    """A timm model with this model's weights (eval mode) and the name of its classifier module.
    Checked: it gives the same probabilities as `model` on random pixels, or an ImgclsError says why not."""
    import timm

    arch = timm_name(spec)
    if arch is None:
        raise ImgclsError(f"{spec.architecture} with {spec.arch_args} has no plain-timm equivalent")
    converted = timm.create_model(
        arch, pretrained=False, num_classes=len(spec.classes), **spec.arch_args.get("backbone_args", {})
    )
    prefix = _classifier_prefix(converted)
    weight, bias = _head_linear(model)
    if spec.output == "sigmoid":
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    state = dict(model.net.backbone.state_dict())
    state.update({f"{prefix}.weight": weight, f"{prefix}.bias": bias})
    try:
        converted.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ImgclsError(f"timm's {arch} does not take this model's weights ({str(error).splitlines()[0]})") from None
    converted.eval()
    _check_same_output(model, converted, spec)
    return converted, prefix


def _classifier_prefix(model: nn.Module) -> str:
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier and name:
            return name
    raise ImgclsError(f"{type(model).__name__}: timm's classifier is not a named module")


def _head_linear(model: ImageClassifier) -> tuple[torch.Tensor, torch.Tensor]:
    linear = getattr(model.net.head, head_linear_name(model.net.head))
    return linear.weight.detach().clone(), linear.bias.detach().clone()


@torch.no_grad()
def _check_same_output(model: ImageClassifier, converted: nn.Module, spec: ModelSpec) -> None:
    pixels = torch.randint(0, 256, (2, spec.channels, spec.image_size, spec.image_size)).float()
    ours = probabilities(model.eval().one_view(pixels), spec.output)
    normalised = (pixels - model.mean) / model.std
    if spec.channels == 1:
        normalised = normalised.expand(-1, 3, -1, -1)
    theirs = torch.softmax(converted(normalised), dim=1)
    if not torch.allclose(ours, theirs, atol=1e-4):
        difference = (ours - theirs).abs().max().item()
        raise ImgclsError(f"the timm form of this model predicts differently (max difference {difference:.2g})")
