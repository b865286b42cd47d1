"""Weights saved in timm's layout (`imgcls export --format hf`) back under `ImageClassifier`'s names.

A leaf beside `classifier`, which reads such folders in `load_model` without importing timm; the way
there (`timm_layout.to_timm`) explains the layout. The folder's `config.json` says which layout its
weights are in (`imgcls.layout`) and names timm's classifier module (`imgcls.classifier`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from imgcls.errors import ImgclsError

HF_CONFIG = "config.json"  # the Hugging Face folder's description, as timm reads it
TIMM_LAYOUT = "timm"


def timm_classifier(folder: Path) -> str | None:
    """The classifier module (`classifier`, `fc`, `head.fc`...) when `folder`'s weights are in timm's
    layout, else None (imgcls's own layout: a run folder, or another architecture's export)."""
    try:
        fields = json.loads((folder / HF_CONFIG).read_text()).get("imgcls", {})
    except (OSError, ValueError, AttributeError):
        return None
    return fields.get("classifier") if fields.get("layout") == TIMM_LAYOUT else None


def head_linear_name(head: nn.Module) -> str:
    """The name of the one Linear of a transfer head (Flatten → [Dropout] → Linear)."""
    linears = [name for name, module in head.named_children() if isinstance(module, nn.Linear)]
    if len(linears) != 1:
        raise ImgclsError("only a head of one linear layer has a timm equivalent")
    return linears[0]


def from_timm(
    state: dict[str, torch.Tensor], classifier: str, output: str, head: nn.Module, buffers: dict
) -> dict[str, torch.Tensor]:
    """The `ImageClassifier` state dict for timm-layout tensors: the backbone under `net.backbone.`,
    the classifier as the head's Linear (two logits `[0, z]` back to one for sigmoid), and `buffers`
    (the normalisation, which timm keeps in its config instead)."""
    linear = head_linear_name(head)
    weight, bias = state.pop(f"{classifier}.weight"), state.pop(f"{classifier}.bias")
    if output == "sigmoid":
        weight, bias = weight[1:] - weight[:1], bias[1:] - bias[:1]
    converted = {f"net.backbone.{key}": value for key, value in state.items()}
    converted.update({f"net.head.{linear}.weight": weight, f"net.head.{linear}.bias": bias})
    return converted | buffers
