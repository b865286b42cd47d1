"""`imgcls summary`: a Keras-like table (layer, output shape, parameters) of a model or recipe."""

from __future__ import annotations

import torch
from torchinfo import summary

from imgcls.errors import ImgclsError
from imgcls.models.registry import accepts, create_model, get_model_entry, list_models


def build_for_summary(name: str, num_classes: int = 2, image_size: int | None = None) -> tuple[torch.nn.Module, tuple]:
    """The network a recipe (or bare model) trains, with the input shape it sees."""
    from imgcls.recipes import get_recipe, list_recipes, model_spec

    if name in {r.name for r in list_recipes()}:
        recipe = get_recipe(name).override(image_size=image_size)
        spec = model_spec(recipe, [f"class_{k}" for k in range(num_classes)])
        net = create_model(spec.architecture, spec.num_outputs, spec.channels, **spec.arch_args)
        return net, (1, spec.channels, spec.image_size, spec.image_size)
    if name in list_models():
        size = image_size or get_model_entry(name).default_size
        kwargs = {"image_size": size} if accepts(name, "image_size") else {}
        outputs = 1 if num_classes == 2 else num_classes  # two classes: one logit, as recipes do
        return create_model(name, outputs, 3, **kwargs), (1, 3, size, size)
    raise ImgclsError(f"{name!r} is neither a recipe nor a model; see `imgcls recipes` and `imgcls models`")


def model_summary(name: str, num_classes: int = 2, image_size: int | None = None) -> str:
    net, shape = build_for_summary(name, num_classes, image_size)
    stats = summary(
        net,
        input_size=shape,
        col_names=("output_size", "num_params"),
        verbose=0,
        depth=4,
        row_settings=("var_names",),
        mode="train" if getattr(net, "auxiliary_outputs", False) else "eval",  # show GoogLeNet's aux heads too
    )
    return str(stats)
