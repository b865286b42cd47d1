"""Metrics from predicted probabilities: accuracy, loss, per-class P/R/F1, confusion, ROC AUC, top mistakes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgcls.data.discover import Dataset
from imgcls.data.labels import LabelOptions
from imgcls.errors import DataError
from imgcls.files import display_path
from imgcls.metrics import classification_metrics, roc_curve_points
from imgcls.models.classifier import ImageClassifier, ModelSpec, predict_probabilities, probabilities
from imgcls.run import HeldOut, Run


@dataclass
class Predictions:
    """A run's model on a set of labelled images: what `evaluate`, `mistakes` and the report share."""

    probs: np.ndarray  # (N, n_classes)
    labels: np.ndarray  # (N,) int64, in the run's class order
    paths: list[Path]  # the N readable files
    classes: list[str]
    described: str  # e.g. "val split of the run"
    skipped: list  # BadImageError of unreadable files
    root: Path | None = None  # the data folder the paths are in
    flip_tta: bool = False  # each image's logits were averaged with its mirror image's


@dataclass
class Mistake:
    """A wrong prediction; `loss` = -log p(true label), so the most confident mistakes rank first."""

    path: Path
    true_label: str
    predicted_label: str
    probability: float  # of the predicted label
    true_probability: float  # of the true label
    loss: float

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "path": display_path(self.path)}


def predict_run(
    run: Run | Path | str,
    data: str | Path | None = None,
    cached_features: bool = False,
    flip_tta: bool | None = None,
    labels: LabelOptions | None = None,
) -> Predictions:
    """Predictions of a run's model on its own held-out split (test, else val) or on other DATA.

    `flip_tta`: average with mirror images or not, whatever the model was trained with (None: as trained).
    `labels`: DATA labelled by file names or a CSV (see `imgcls.data.labels`).

    `cached_features`: a transfer model runs as backbone features (cached on disk, float16, as its
    training stored them) + head, so a frozen backbone costs nothing: seconds instead of minutes for
    1,000 photos. Probabilities then differ from the full float32 forward by about 1e-3."""
    from imgcls.data.cache import decode_all

    run = Run.open(run)
    own_split = data is None and labels is None
    if own_split and flip_tta is None and run.held_out is not None:  # training predicted it in this process
        return _remembered(run, run.held_out)
    model, spec = run.load_model()
    model.flip_tta = spec.flip_tta if flip_tta is None else flip_tta
    if own_split:
        dataset: Dataset = run.dataset
        split = dataset.eval_split
        samples = dataset.splits[split]
        described = f"{split} split of the run"
    else:
        dataset, samples, described = _samples_for(data, spec.classes, labels)
    paths, labels = [s.path for s in samples], [s.label for s in samples]
    if cached_features and _features_are_cached(run, spec) and not model.flip_tta:
        found = _head_on_features(run, model, spec, paths, labels)
    else:
        decoded = decode_all(paths, labels, run.decode_settings())
        probs = predict_probabilities(model, spec.output, decoded.images) if len(decoded.labels) else None
        found = probs, decoded.labels.numpy(), decoded.paths, decoded.skipped
    if found[0] is None:
        raise DataError(f"{described}: no readable images to evaluate")
    return Predictions(found[0], found[1], found[2], spec.classes, described, found[3], dataset.root, model.flip_tta)


def _remembered(run: Run, held_out: HeldOut) -> Predictions:
    dataset, spec = run.dataset, run.spec
    described = f"{dataset.eval_split} split of the run"
    return Predictions(
        held_out.probs, held_out.labels, held_out.paths, spec.classes, described, held_out.skipped,
        dataset.root, spec.flip_tta,
    )  # fmt: skip


def _features_are_cached(run: Run, spec: ModelSpec) -> bool:
    """A transfer run trained on RGB: its backbone features are on disk, keyed by its recipe."""
    return spec.architecture == "transfer" and spec.channels == 3 and run.transfer_recipe is not None


@torch.inference_mode()
def _head_on_features(run: Run, model: ImageClassifier, spec: ModelSpec, paths: list[Path], labels: list[int]):
    from imgcls.features import head_logits, recipe_extractor

    extractor = recipe_extractor(model.net.backbone, run.recipe, spec.image_size)
    found = extractor.extract(paths, labels)
    if len(found.labels) == 0:
        return None, None, None, found.skipped
    if spec.flip_tta:  # as the model predicts: the photo and its mirror
        found = extractor.with_mirrors(found)
    probs = probabilities(head_logits(model.net.head.eval(), found), spec.output).numpy()
    return probs, found.labels.numpy(), found.paths, found.skipped


def evaluate_run(
    run: Run | Path | str,
    data: str | Path | None = None,
    write_plots: bool = True,
    flip_tta: bool | None = None,
    labels: LabelOptions | None = None,
) -> dict:
    """Metrics of a run's model on its own held-out split (test, else val) or on other DATA
    (`flip_tta`, `labels`: see `predict_run`)."""
    from imgcls.plots import plot_confusion, plot_roc

    run = Run.open(run)
    predicted = predict_run(run, data, flip_tta=flip_tta, labels=labels)
    probs, labels, classes = predicted.probs, predicted.labels, predicted.classes
    metrics = {"data": predicted.described, **classification_metrics(probs, labels, classes)}
    metrics["flip_tta"] = predicted.flip_tta
    metrics["eval_crops"] = list(run.spec.eval_crops)
    metrics["skipped"] = [{"path": display_path(e.path), "reason": e.reason} for e in predicted.skipped]
    if write_plots:
        metrics["confusion_png"] = str(
            plot_confusion(
                metrics["confusion_matrix"],
                classes,
                run.figure("evaluation_confusion_matrix"),
                title=f"Confusion matrix: {predicted.described} (accuracy {metrics['accuracy']:.1%})",
            )
        )
        if "roc_auc" in metrics:
            fpr, tpr = roc_curve_points(probs[:, 1], labels)
            metrics["roc_png"] = str(plot_roc(fpr, tpr, metrics["roc_auc"], classes[1], run.figure("roc")))
    return metrics


def top_mistakes(predicted: Predictions, limit: int | None = 16) -> list[Mistake]:
    """Wrong predictions, most confident first (highest loss = lowest probability of the true label)."""
    rows = np.arange(len(predicted.labels))
    true_probs = predicted.probs[rows, predicted.labels]
    guesses = predicted.probs.argmax(axis=1)
    losses = -np.log(np.clip(true_probs, 1e-12, 1.0))
    wrong = np.flatnonzero(guesses != predicted.labels)
    ranked = wrong[np.argsort(-losses[wrong], kind="stable")][:limit]
    return [
        Mistake(
            path=predicted.paths[i],
            true_label=predicted.classes[predicted.labels[i]],
            predicted_label=predicted.classes[guesses[i]],
            probability=float(predicted.probs[i, guesses[i]]),
            true_probability=float(true_probs[i]),
            loss=float(losses[i]),
        )
        for i in ranked
    ]


def mistakes_summary(predicted: Predictions, found: list[Mistake], png: Path | None = None) -> dict:
    """What `imgcls mistakes --json` prints."""
    return {
        "data": predicted.described,
        "n_images": int(len(predicted.labels)),
        "n_wrong": int((predicted.probs.argmax(axis=1) != predicted.labels).sum()),
        "png": None if png is None else str(png),
        "mistakes": [m.as_dict() for m in found],
    }


def _samples_for(data: str | Path | None, classes: list[str], labels: LabelOptions | None = None):
    """Samples of other DATA with labels in the run's class order (matched by class name)."""
    from imgcls.data.discover import Sample, discover

    dataset = discover(data, val_split=0.2, seed=0, labels=labels)
    split = dataset.eval_split
    if split == "val" and dataset.split_is_generated:  # no split given (e.g. class subfolders): evaluate all of it
        split = "all"
        pool = dataset.pooled()
    else:
        pool = dataset.splits[split]
    unknown = sorted(set(dataset.classes) - set(classes))
    if unknown:
        raise DataError(f"{display_path(dataset.root)}: class(es) {unknown} are not known to the model {classes}")
    remap = {k: classes.index(name) for k, name in enumerate(dataset.classes)}
    samples = sorted((Sample(s.path, remap[s.label]) for s in pool), key=lambda s: str(s.path))
    return dataset, samples, f"{split} images of {display_path(dataset.root)}"
