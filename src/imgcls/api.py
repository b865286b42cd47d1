"""One way in: `imgcls.train(...)` in Python and `imgcls train` on the command line resolve their
settings here, the same way, so every CLI option of `train` is a keyword of `imgcls.train`.

Three kinds of settings, one flat namespace (as fastai's and Keras' one-liners take them):
- recipe fields (`epochs=5`, `image_size=128`, `fine_tune=True`...; see `imgcls recipes`),
- run options (`out=`, `name=`, `seed=`, `devices=`, `class_weights=`...; `imgcls.run.TrainOptions`),
- conveniences that set several fields at once: `backbone` (size, mean, std and resize of that
  backbone), `augment` (True: the seeds' augmentation, False: none), `aug` (Keras-named KEY=VALUE
  changes), `unfreeze_from`, `channels`, and `label_from` / `label_pattern` / `labels` for data
  that is not a tree of class folders.

`check` and `evaluate` are `imgcls data check` and `imgcls evaluate`: they return the dicts that
`--json` prints, typed so that a notebook shows them as HTML (`imgcls.visual.notebook`).

`lr` and `fine_tune_lr` take a number or "find": Lightning's learning-rate finder then picks the
stage's rate before it trains (`imgcls.training.lr_find`), and the run records the number.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from imgcls.augment import Augment, parse_pairs
from imgcls.data.labels import LabelOptions
from imgcls.errors import ImgclsError
from imgcls.progress import console_logging, is_rank_zero
from imgcls.recipes import (
    DEFAULT_RECIPE,
    FIND_LR,
    LR_FIELDS,
    SEED_AUGMENT,
    Recipe,
    check_whole_network_options,
    get_recipe,
    parse_lr,
    with_backbone,
)
from imgcls.run import Run, TrainOptions
from imgcls.visual.notebook import CheckResult, EvaluationResult

DEFAULT_DATA = "cats-vs-dogs"
OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TrainOptions))
RENAMED = {"unfreeze_from": "unfreeze"}  # CLI name -> recipe field
RESUME_SETTINGS = ("progress", "report", "address")  # all a resumed run takes: the rest is its own
EPOCH_FIELDS = frozenset({"epochs", "lr", "optimizer", "schedule", "batch_size", "weight_decay", "early_stopping"})


def train(
    data: str | Path | None = None,
    recipe: str | Recipe | None = None,
    *,
    resume: Run | str | Path | None = None,
    **settings: Any,
) -> Run:
    """Train `recipe` (default: the `transfer` recipe) on DATA (default: the built-in cats-vs-dogs)
    and return the finished `Run`; or continue an interrupted one with `resume=RUN`. `settings`: see
    the module docstring. Writes report.html at the end unless `report=False`."""
    from imgcls.training.driver import train as train_run

    if settings.get("progress", True):
        console_logging()
    if resume is not None:
        _resume_takes_nothing_else(data, recipe, settings)
        run = _resume(Run.open(resume), settings)
        report = settings.get("report", run.options.report)
    else:
        chosen, options = resolve(recipe, settings)
        data = data_or_default(data, options)
        if options.engine == "ray":
            from imgcls.cluster.train import train_on_ray

            run = train_on_ray(data, chosen, options)
        else:
            run = train_run(data, chosen, options)
        report = options.report
    if is_rank_zero():
        _export_onnx_safely(run)
        if report:
            from imgcls.report import write_report_safely

            write_report_safely(run)
    return run


def data_or_default(data: str | Path | None, options: TrainOptions) -> str | Path | None:
    """DATA as given; none: the built-in cats-vs-dogs, unless a labels CSV names every photo itself."""
    csv_alone = options.labels is not None and options.labels.csv is not None
    return data if data is not None or csv_alone else DEFAULT_DATA


def check(
    data: str | Path | None = None,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    data_dir: Path | None = None,
    label_from: str = "folder",
    label_pattern: str | None = None,
    labels: Path | str | None = None,
    quality: dict[str, float] | None = None,
) -> CheckResult:
    """`imgcls data check DATA`: counts, formats, sizes, unreadable files, duplicates, leakage,
    imbalance and image-quality warnings (`quality`: thresholds to change, e.g. {"min_sharpness":
    0.05}); `result.ok` is false when something must be fixed."""
    from imgcls.data.check import check_dataset
    from imgcls.data.quality import QualityThresholds

    chosen = LabelOptions.from_flags(label_from, label_pattern, labels)
    try:
        thresholds = QualityThresholds().with_settings([f"{k}={v}" for k, v in (quality or {}).items()])
    except ValueError as error:
        raise ImgclsError(f"quality: {error}") from None
    found = check_dataset(data, val_split=val_split, seed=seed, data_dir=data_dir, labels=chosen, quality=thresholds)
    return CheckResult(found)


def evaluate(
    run: Run | str | Path,
    data: str | Path | None = None,
    *,
    flip_tta: bool | None = None,
    data_dir: Path | None = None,
    label_from: str = "folder",
    label_pattern: str | None = None,
    labels: Path | str | None = None,
) -> EvaluationResult:
    """`imgcls evaluate RUN [DATA]`: accuracy, loss, per-class precision/recall/F1, the confusion
    matrix and, for two classes, ROC AUC, on the run's test (else val) split or on other DATA."""
    from imgcls.evaluation import evaluate_run

    if data is not None and data_dir is not None:  # a built-in name read from a local copy
        from imgcls.data.builtin import resolve_builtin

        data = str(resolve_builtin(data, data_dir))
    chosen = LabelOptions.from_flags(label_from, label_pattern, labels)
    return EvaluationResult(evaluate_run(run, data, flip_tta=flip_tta, labels=chosen))


def _resume(run: Run, settings: dict[str, Any]) -> Run:
    """On the engine the run was trained on: a Ray run resumes on Ray (`address=` may say where)."""
    from imgcls.training.driver import resume as resume_training

    progress = settings.get("progress", True)
    if run.options.engine == "ray":
        from imgcls.cluster.train import resume_on_ray

        options = dataclasses.replace(run.options, progress=progress, address=settings.get("address"))
        return resume_on_ray(run, options)
    return resume_training(run, progress=progress)


def _export_onnx_safely(run: Run) -> None:
    """model.onnx beside the weights, so that predicting needs neither torch nor a first-use export;
    a model the exporter cannot take is a warning (PyTorch then predicts), never a failed training."""
    import logging

    from imgcls.export import export_onnx

    try:
        export_onnx(run)
    except Exception as error:  # the model is saved; predict and serve fall back to PyTorch
        log = logging.getLogger("imgcls")
        log.warning("could not write %s (%s); predicting will use PyTorch", run.onnx_path, error)


def _resume_takes_nothing_else(data, recipe, settings: dict[str, Any]) -> None:
    """A resumed run goes on as it was set up: other settings would be silently ignored."""
    given = [name for name, value in settings.items() if value is not None and name not in RESUME_SETTINGS]
    given += [name for name, value in (("data", data), ("recipe", recipe)) if value is not None]
    if given:
        raise ImgclsError(f"resume continues a run with its own settings; leave out: {', '.join(sorted(given))}")


def resolve(recipe: str | Recipe | None, settings: dict[str, Any]) -> tuple[Recipe, TrainOptions]:
    """The recipe and run options that `settings` ask for; `None` values mean "as the recipe says"."""
    settings = {k: v for k, v in settings.items() if v is not None}
    chosen = recipe if isinstance(recipe, Recipe) else get_recipe(recipe or DEFAULT_RECIPE)
    found_by_finder = _learning_rates(settings)
    values = {k: settings.pop(k) for k in list(settings) if k in OPTION_NAMES}
    options = _options({**values, "lr_find": (*values.get("lr_find", ()), *found_by_finder)}, settings)
    backbone = settings.pop("backbone", None)
    channels = settings.get("channels")
    if channels not in (None, 1, 3):
        raise ImgclsError(f"--channels {channels}: use 1 (grayscale) or 3 (RGB)")
    settings["augment"] = _augmentation(chosen.augment, settings.pop("augment", None), settings.pop("aug", None))
    fields = {RENAMED.get(k, k): v for k, v in settings.items()}
    chosen = _head_by_epochs_when_asked(chosen.override(**fields), fields, options)
    if backbone:
        if chosen.model != "transfer":
            raise ImgclsError(f"--backbone needs a transfer recipe; {chosen.name} trains {chosen.model}")
        chosen = with_backbone(chosen, backbone).override(
            image_size=fields.get("image_size"), resize=fields.get("resize")
        )
    check_whole_network_options(chosen)
    if "fine_tune_lr" in options.lr_find and not (chosen.model == "transfer" and chosen.fine_tune):
        raise ImgclsError(
            f"--fine-tune-lr find: {chosen.name} has no fine-tune stage here (a transfer recipe with --fine-tune)"
        )
    return chosen, options


def _head_by_epochs_when_asked(recipe: Recipe, fields: dict[str, Any], options: TrainOptions) -> Recipe:
    """`--epochs 30` (or a learning rate, optimizer, schedule, batch size) on a recipe whose head is
    fitted by L-BFGS means "train the head for epochs": those settings would otherwise do nothing."""
    asked = sorted(EPOCH_FIELDS & (fields.keys() | set(options.lr_find)))
    if recipe.model != "transfer" or recipe.head_fit != "lbfgs-cv" or "head_fit" in fields or not asked:
        return recipe
    import logging

    logging.getLogger("imgcls").debug("%s given: the head trains for epochs (head_fit epochs)", ", ".join(asked))
    return recipe.override(head_fit="epochs")


def _learning_rates(settings: dict[str, Any]) -> tuple[str, ...]:
    """The learning-rate fields given as "find", taken out of `settings`: the recipe keeps its value
    as the finder's fallback. The other values given become checked numbers."""
    found_by_finder = []
    for name in LR_FIELDS.keys() & settings.keys():
        value = parse_lr(name, settings[name])
        if value == FIND_LR:
            found_by_finder.append(name)
            del settings[name]
        else:
            settings[name] = value
    return tuple(sorted(found_by_finder))


def _options(values: dict[str, Any], settings: dict[str, Any]) -> TrainOptions:
    """Run options, with the label conveniences and `devices="2"` as the CLI gives it."""
    label_from = settings.pop("label_from", "folder")
    pattern = settings.pop("label_pattern", None)
    labels = values.pop("labels", None)
    given = isinstance(labels, LabelOptions)
    values["labels"] = labels if given else LabelOptions.from_flags(label_from, pattern, labels)
    if values.get("class_weights") not in (None, "auto"):
        raise ImgclsError(f"--class-weights {values['class_weights']!r}: use 'auto' (or leave it out)")
    devices = values.get("devices")
    if isinstance(devices, str) and devices.isdigit():
        values["devices"] = int(devices)
    for key in ("out", "data_dir"):
        if key in values:
            values[key] = Path(values[key])
    options = TrainOptions(**values)
    if options.logger:  # said before any data is read
        from imgcls.training.loggers import check_logger_names

        check_logger_names(options.logger)
    return options


def _augmentation(current: Augment, switch: bool | Augment | dict | None, changes) -> Augment:
    """`augment=False`: none; `True`: the recipe's, or the seeds' when it has none; an `Augment`/dict:
    exactly that; then `aug` changes single settings (Keras names)."""
    if isinstance(switch, Augment):
        current = switch
    elif isinstance(switch, dict):
        current = Augment.from_dict(switch)
    elif switch is False:
        current = Augment()
    elif switch is True and not current.enabled:
        current = SEED_AUGMENT
    if changes:
        current = Augment.from_dict({**current.as_dict(), **parse_pairs(changes)})
    return current
