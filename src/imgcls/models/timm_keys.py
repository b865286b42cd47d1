"""Weights saved in timm's layout (`imgcls export --format hf`) back under `ImageClassifier`'s names.

A leaf beside `classifier`, which reads such files in `load_model` without importing timm; the way
there (`timm_layout.to_timm`) explains the layout. The safetensors metadata names it."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.errors import ImgclsError

LAYOUT_KEY = "imgcls.layout"
CLASSIFIER_KEY = "imgcls.classifier"  # the timm model's classifier module, e.g. `classifier`, `fc`, `head.fc`
TIMM_LAYOUT = "timm"


def head_linear_name(head: nn.Module) -> str:
    """The name of the one Linear of a transfer head (Flatten → [Dropout] → Linear)."""
    linears = [name for name, module in head.named_children() if isinstance(module, nn.Linear)]
    if len(linears) != 1:
        raise ImgclsError("only a head of one linear layer has a timm equivalent")
    return linears[0]


def from_timm(
    state: dict[str, torch.Tensor], metadata: dict[str, str], output: str, head: nn.Module, buffers: dict
) -> dict[str, torch.Tensor]:
    """The `ImageClassifier` state dict for timm-layout tensors: the backbone under `net.backbone.`,
    the classifier as the head's Linear (two logits `[0, z]` back to one for sigmoid), and `buffers`
    (the normalisation, which timm keeps in its config instead)."""
    classifier, linear = metadata[CLASSIFIER_KEY], head_linear_name(head)
    weight, bias = state.pop(f"{classifier}.weight"), state.pop(f"{classifier}.bias")
    if output == "sigmoid":
        weight, bias = weight[1:] - weight[:1], bias[1:] - bias[:1]
    converted = {f"net.backbone.{key}": value for key, value in state.items()}
    converted.update({f"net.head.{linear}.weight": weight, f"net.head.{linear}.bias": bias})
    return converted | buffers
