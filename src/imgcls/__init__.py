"""imgcls: train, check, explain and ship image classifiers from a folder of pictures.

Layered like fastai: one line for the common case, each layer usable alone.

    run = imgcls.train("photos/")                  # recipe "transfer" by default; returns the Run
    run.metrics["accuracy"], run.history            # the run folder, typed (imgcls.run.Run)
    clf = imgcls.load(run)
    clf.predict(["photo.jpg", pil_image, array])   # -> [Prediction(label=..., probability=...)]

`imgcls.train` takes every option of `imgcls train` under the same name (see `imgcls.api`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgcls.version import __version__

if TYPE_CHECKING:
    from imgcls.inference import Classifier
    from imgcls.run import Run

__all__ = ["train", "load", "Classifier", "Run", "__version__"]


def train(data: str | Path | None = None, recipe: str | None = None, **settings: Any) -> Run:
    """Train a recipe on DATA and return the finished run. `settings`: recipe fields (epochs=5,
    image_size=128...), run options (out=, name=, seed=, devices=...) and the CLI's conveniences
    (backbone=, aug=, label_from=...); `resume=RUN` continues an interrupted run."""
    from imgcls.api import train as train_run

    return train_run(data, recipe, **settings)


def load(run: str | Path | Run) -> Classifier:
    """The trained model of a run folder (or any folder with model.json + model.safetensors)."""
    from imgcls.inference import Classifier

    return Classifier.load(run)


def __getattr__(name: str):  # lazy: `import imgcls` stays fast for the CLI
    if name == "Classifier":
        from imgcls.inference import Classifier

        return Classifier
    if name == "Run":
        from imgcls.run import Run

        return Run
    raise AttributeError(name)
