"""imgcls: train, check, explain and ship image classifiers from a folder of pictures.

Layered like fastai: one line for the common case, each layer usable alone.

    run = imgcls.train("cats-vs-dogs")             # recipe "scratch" by default
    clf = imgcls.load(run)
    clf.predict(["photo.jpg", pil_image, array])   # -> [Prediction(label=..., probability=...)]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "load", "Classifier", "__version__"]


def train(data: str | Path = "cats-vs-dogs", recipe: str | None = None, **overrides: Any) -> Path:
    """Train a recipe on DATA and return the run folder. `overrides` are recipe fields
    (epochs=5, image_size=128, ...) or run options (out=, name=, seed=, devices=, class_weights=)."""
    from imgcls.recipes import DEFAULT_RECIPE, get_recipe
    from imgcls.training.fit import TrainOptions
    from imgcls.training.fit import train as fit

    option_names = set(TrainOptions.__dataclass_fields__)
    options = TrainOptions(**{k: v for k, v in overrides.items() if k in option_names})
    chosen = get_recipe(recipe or DEFAULT_RECIPE).override(
        **{k: v for k, v in overrides.items() if k not in option_names}
    )
    return fit(data, chosen, options)


def load(run: str | Path) -> Classifier:  # noqa: F821
    """The trained model of a run folder (or any folder with model.json + model.safetensors)."""
    from imgcls.inference import Classifier

    return Classifier.load(run)


def __getattr__(name: str):  # lazy: `import imgcls` stays fast for the CLI
    if name == "Classifier":
        from imgcls.inference import Classifier

        return Classifier
    raise AttributeError(name)
