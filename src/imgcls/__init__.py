"""imgcls: train, check, explain and ship image classifiers from a folder of pictures.

Layered like fastai: one line for the common case, each layer usable alone.

    run = imgcls.train("photos/")                  # recipe "transfer" by default; returns the Run
    run.metrics["accuracy"], run.history            # the run folder, typed (imgcls.run.Run)
    clf = imgcls.load(run)
    clf.predict(["photo.jpg", pil_image, array])   # -> [Prediction(label=..., probability=...)]
    imgcls.check("photos/"), imgcls.evaluate(run)   # the dicts `--json` prints, typed

`imgcls.train` takes every option of `imgcls train` under the same name (see `imgcls.api`). In
Jupyter, runs, predictions, checks and evaluations show as HTML, and `run.show_curves()`,
`run.show_samples()`, `run.show_mistakes()` return figures (docs/notebooks.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgcls.version import __version__

if TYPE_CHECKING:
    from imgcls.inference import Classifier
    from imgcls.run import Run
    from imgcls.tune import Tuned
    from imgcls.visual.notebook import CheckResult, EvaluationResult

__all__ = [
    "train",
    "tune",
    "load",
    "check",
    "evaluate",
    "show_curves",
    "show_samples",
    "show_mistakes",
    "Classifier",
    "Run",
    "__version__",
]
NOTEBOOK_NAMES = ("show_curves", "show_samples", "show_mistakes", "CheckResult", "EvaluationResult")


def train(data: str | Path | None = None, recipe: str | None = None, **settings: Any) -> Run:
    """Train a recipe on DATA and return the finished run. `settings`: recipe fields (epochs=5,
    image_size=128...), run options (out=, name=, seed=, devices=...) and the CLI's conveniences
    (backbone=, aug=, label_from=...); `resume=RUN` continues an interrupted run."""
    from imgcls.api import train as train_run

    return train_run(data, recipe, **settings)


def tune(data: str | Path | None = None, recipe: str | None = None, **settings: Any) -> Tuned:
    """Search variants of a recipe on DATA within `budget="10m"` (Optuna; at most `trials=`) and return
    the study (`.best_run`, `.trials`); other settings are fixed for every trial (see `imgcls.tune`)."""
    from imgcls.tune import tune as tune_recipe

    return tune_recipe(data, recipe, **settings)


def load(run: str | Path | Run, engine: str = "auto") -> Classifier:
    """The trained model of a run folder, or of any folder with model.json + model.safetensors (an
    `imgcls export --format hf` folder too). `engine`: auto, torch, onnx or int8, as `imgcls predict`'s."""
    from imgcls.inference import Classifier

    return Classifier.load(run, engine=engine)


def check(data: str | Path | None = None, **options: Any) -> CheckResult:
    """`imgcls data check DATA` (options: val_split=, seed=, label_from=...): counts, unreadable files,
    duplicates, leakage, imbalance; `.ok` is false when something must be fixed."""
    from imgcls.api import check as check_data

    return check_data(data, **options)


def evaluate(run: str | Path | Run, data: str | Path | None = None, **options: Any) -> EvaluationResult:
    """`imgcls evaluate RUN [DATA]` (options: flip_tta=, label_from=...): accuracy, loss, per-class
    precision/recall/F1, confusion matrix, ROC AUC for two classes."""
    from imgcls.api import evaluate as evaluate_run

    return evaluate_run(run, data, **options)


def __getattr__(name: str):  # lazy: `import imgcls` stays fast for the CLI
    if name == "Classifier":
        from imgcls.inference import Classifier

        return Classifier
    if name == "Run":
        import imgcls.visual.notebook  # noqa: F401 - gives Run.show_samples/show_mistakes their drawing
        from imgcls.run import Run

        return Run
    if name in NOTEBOOK_NAMES:
        from imgcls.visual import notebook

        return getattr(notebook, name)
    raise AttributeError(name)
