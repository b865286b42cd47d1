"""A timm-style model registry: `@register_model` on a builder, `list_models`, `create_model`.

A leaf: model modules import it and register themselves; it imports none of them. The built-in
ones are imported by `imgcls/models/__init__.py`, which Python runs before this module, so
`from imgcls.models.registry import create_model` always finds them.

Every builder takes `num_outputs` and `in_channels` (plus its own keyword arguments) and
returns an `nn.Module` mapping (B, C, H, W) float images to (B, num_outputs) logits. The
name and arguments are stored in `model.json`, so a saved model is rebuilt from them alone.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from imgcls.errors import ImgclsError

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: ModelBuilder
    description: str
    default_size: int  # pixels, square input the model was designed for
    min_size: int = 1  # pixels, the smallest square input it takes (Flatten heads need a 1x1 map)


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, description: str, default_size: int = 224, min_size: int = 1
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: `@register_model("seed-basic-cnn", "...", 150)` above a builder function."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, builder, description, default_size, min_size)
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def get_model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ImgclsError(f"unknown model {name!r}; `imgcls models` lists them: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def accepts(name: str, parameter: str) -> bool:
    """Whether a model's builder takes `parameter` (e.g. image_size for a Flatten head)."""
    return parameter in inspect.signature(get_model_entry(name).builder).parameters


def create_model(name: str, num_outputs: int, in_channels: int = 3, **kwargs) -> nn.Module:
    return get_model_entry(name).builder(num_outputs=num_outputs, in_channels=in_channels, **kwargs)
