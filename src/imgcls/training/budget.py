"""`--budget 60s`: the transfer configuration (backbone, input size, resize) that fits the time,
chosen by cross-validation on the training photos.

How it weighs them:
1. The reference candidate is timed on a few training photos (decode + features, cold cache);
   the others' seconds per photo follow from their measured cost relative to it (`CANDIDATES`).
   A candidate whose features for every photo would not be ready within the budget is dropped.
2. When the time left covers it, the candidates that fit are compared on a stratified sample of
   the training photos by the out-of-fold log loss of a cross-validated logistic head
   (`imgcls.training.logistic`). One replaces the preferred one (the first that fits, in the order
   of `CANDIDATES`: strongest first) only when it beats it by more than one standard error of the
   paired difference: small samples do not get to overturn what larger measurements showed.
3. The winner becomes the run's recipe; config.yaml's `budget` says what was weighed and why.

Validation photos are never looked at, so the run's val score stays an honest estimate. Probe
features are cached like any others: the winner's are not computed twice.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from imgcls.data.discover import Dataset
from imgcls.errors import ImgclsError
from imgcls.features import recipe_extractor
from imgcls.models.backbones import create_backbone, load_pretrained
from imgcls.recipes import DEFAULT_RECIPE, Recipe, get_recipe, is_binary, with_backbone
from imgcls.run import TrainOptions
from imgcls.training.logistic import fit_logistic_cv

log = logging.getLogger("imgcls")


@dataclass(frozen=True)
class Candidate:
    backbone: str
    image_size: int  # px, square
    resize: str  # crop | squash | pad
    cost: float  # seconds per photo (decode + features) relative to the reference; benchmarks/bench_budget.py

    @property
    def name(self) -> str:
        return f"{self.backbone}@{self.image_size}/{self.resize}"


CANDIDATES: dict[str, Candidate] = {  # strongest first: the one preferred when the comparison is a tie
    c.name: c
    for c in (
        Candidate("efficientnet_lite2", 260, "crop", 1.66),
        Candidate("efficientnet_lite0", 224, "crop", 1.0),
        Candidate("efficientnet_lite0", 224, "squash", 1.04),
        Candidate("efficientnet_lite0", 224, "pad", 1.02),
        Candidate("efficientnet_lite0", 192, "crop", 0.81),
    )
}
REFERENCE = "efficientnet_lite0@224/crop"
PLANNED = ("backbone", "image_size", "resize")  # what the budget chooses, unless the user set it
DEFAULT_BUDGET = {  # `imgcls train` without --budget, on the default recipe
    "seconds": 60.0,
    "fine_tune_seconds": 300.0,  # with --fine-tune
    "max_train_photos": 10_000,  # more: no default budget (say --budget to have one)
}
# stage 2 in feature-seconds per photo of the same backbone and size (bench_budget.py --fine-tune-step:
# a PyTorch training step costs 2.25x the ONNX features, an eval forward 1.66x, for Lite0 and Lite2 alike)
FINE_TUNE_COST = {"train": 2.25, "eval": 1.7}  # every epoch trains on train and scores val; then one last pass
TIMING_PHOTOS = 64  # timed for the reference (its features are kept): two batches
SAMPLE_PHOTOS = {"min": 64, "max": 600}  # training photos each candidate is compared on
RESERVE = {"seconds": 10.0, "share": 0.05}  # for the head, metrics, model files, ONNX export: 7 s on cats-vs-dogs


@dataclass
class Weighed:
    """One candidate as the budget saw it (what config.yaml's `budget.candidates` lists)."""

    name: str
    seconds_estimate: float  # every photo's features (and building them), and stage 2 with --fine-tune
    fits: bool
    cv_accuracy: float | None = None
    note: str = ""
    fine_tune_epochs: int | None = None  # with --fine-tune: the epochs of stage 2 that fit
    out_of_fold: torch.Tensor | None = field(default=None, repr=False)  # each sample photo's held-out log loss

    @property
    def cv_loss(self) -> float | None:
        return None if self.out_of_fold is None else float(self.out_of_fold.mean())

    def as_dict(self) -> dict[str, Any]:
        found = {"name": self.name, "seconds_estimate": round(self.seconds_estimate, 1), "fits": self.fits}
        if self.fine_tune_epochs is not None:
            found["fine_tune_epochs"] = self.fine_tune_epochs
        if self.cv_loss is not None:
            found |= {"cv_loss": round(self.cv_loss, 5), "cv_accuracy": round(self.cv_accuracy, 4)}
        return found | ({"note": self.note} if self.note else {})


def budget_applies(recipe: Recipe, options: TrainOptions, dataset: Dataset) -> float | None:
    """The budget in seconds for this run: `--budget` as given, else the default one for the default
    recipe left as it is, on up to 10,000 training photos; None: no planning."""
    if options.budget and (recipe.model != "transfer" or options.engine != "local" or options.devices != 1):
        raise ImgclsError(
            "--budget chooses the backbone of a transfer recipe in one process: "
            f"not for {recipe.name} with --engine {options.engine} --devices {options.devices}"
        )
    if options.budget is not None:
        return options.budget or None  # 0: --budget off
    if recipe.model != "transfer" or options.engine != "local" or options.devices != 1:
        return None
    small = len(dataset.splits["train"]) <= DEFAULT_BUDGET["max_train_photos"]
    if _fixed(recipe) or not small:
        return None
    return DEFAULT_BUDGET["fine_tune_seconds" if recipe.fine_tune else "seconds"]


def plan(dataset: Dataset, recipe: Recipe, budget: float, started: float) -> tuple[Recipe, dict[str, Any]]:
    """The recipe of the configuration chosen within `budget` seconds counted from `started`
    (`time.perf_counter()`), and the record of the choice."""
    deadline = started + budget - max(RESERVE["seconds"], RESERVE["share"] * budget)
    names = _candidates(recipe)
    if not names:
        why = "no candidate has the backbone, size and resize given: they are kept"
        log.info("budget %.0f s: %s", budget, why)
        return recipe, {"seconds": budget, "picked": None, "why": why, "candidates": []}
    train, backbones = dataset.splits["train"], {}
    timed = REFERENCE if REFERENCE in names else names[0]
    setup, per_photo = _time(_candidate_recipe(recipe, timed), _sample(train, TIMING_PHOTOS), backbones)
    setup, per_photo = setup / CANDIDATES[timed].cost, per_photo / CANDIDATES[timed].cost
    weighed = [_estimate(name, recipe, dataset, (setup, per_photo), deadline, timed) for name in names]
    fitting = [w for w in weighed if w.fits]
    if not fitting:
        cheapest = min(weighed, key=lambda w: w.seconds_estimate)
        return _chosen(recipe, cheapest, weighed, budget, "none fits the budget: the fastest")
    size = _sample_size(fitting, (setup, per_photo), deadline, timed, len(train))
    if len(fitting) == 1 or size < SAMPLE_PHOTOS["min"]:
        why = "the only one that fits" if len(fitting) == 1 else "the strongest that fits; no time to compare others"
        return _chosen(recipe, fitting[0], weighed, budget, why)
    sample = _sample(train, size)
    for candidate in fitting:
        _cross_validate(candidate, _candidate_recipe(recipe, candidate.name), sample, dataset.classes, backbones)
    winner, why = _pick(fitting, size)
    return _chosen(recipe, winner, weighed, budget, why)


def _fixed(recipe: Recipe) -> dict[str, Any]:
    """What the budget would choose that the user set: the values that differ from the default recipe's."""
    default = get_recipe(DEFAULT_RECIPE)
    return {key: _planned(recipe, key) for key in PLANNED if _planned(recipe, key) != _planned(default, key)}


def _planned(recipe: Recipe, key: str) -> Any:
    return recipe.model_args.get("backbone") if key == "backbone" else getattr(recipe, key)


def _candidates(recipe: Recipe) -> list[str]:
    """Candidates whose weights are installed (an imgcls installed without its dependencies may lack one) and that keep
    what the user set: a backbone, size or resize other than the default recipe's is kept as given."""
    from imgcls.models.weights import efficientnet_lite_file

    fixed = _fixed(recipe)
    found = []
    for name, candidate in CANDIDATES.items():
        if any(getattr(candidate, key) != value for key, value in fixed.items()):
            continue
        try:
            efficientnet_lite_file(int(candidate.backbone[-1]))
            found.append(name)
        except ImgclsError:
            log.info("budget: %s left out: its weights package is not installed", name)
    return found


def _candidate_recipe(recipe: Recipe, name: str, fine_tune_epochs: int | None = None) -> Recipe:
    candidate = CANDIDATES[name]
    size = candidate.image_size
    return with_backbone(recipe, candidate.backbone).override(
        image_size=size,
        resize=candidate.resize,
        fine_tune_image_size=_fine_tune_size(recipe, size) if recipe.fine_tune_image_size else None,
        fine_tune_epochs=fine_tune_epochs,
    )


def _photos_to_extract(dataset: Dataset, recipe: Recipe) -> int:
    """Feature computations a run needs: every view of training photos, and the photo (and its
    mirror, for flip TTA) of every other split."""
    others = sum(len(samples) for name, samples in dataset.splits.items() if name != "train")
    return len(dataset.splits["train"]) * recipe.views + others * (2 if recipe.flip_tta else 1)


def _sample(samples: list, count: int) -> list:
    """`count` photos spread evenly over classes and the split's order (deterministic)."""
    if count >= len(samples):
        return list(samples)
    by_class: dict[int, list] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    share = max(1, count // len(by_class))
    chosen = []
    for members in by_class.values():
        step = max(1, len(members) // share)
        chosen += members[::step][:share]
    return chosen


def _extractor(recipe: Recipe, backbones: dict[str, nn.Module]):
    """The recipe's feature extractor, on the pretrained backbone of that name built once per plan
    (Lite0 at 224 px crop, squash and pad share one)."""
    name = recipe.model_args["backbone"]
    if name not in backbones:
        backbones[name], _ = create_backbone(name)
        load_pretrained(name, backbones[name], recipe.weights)
    return recipe_extractor(backbones[name], recipe)


def _extract(extractor, samples: list):
    return extractor.extract([s.path for s in samples], [s.label for s in samples])


def _time(recipe: Recipe, samples: list, backbones: dict[str, nn.Module]) -> tuple[float, float]:
    """Seconds to build a candidate (weights, ONNX session) and seconds per photo (decode + features):
    the faster of its batches, as the steady rate of thousands of photos is (the first batches of a
    process run slower)."""
    began = time.perf_counter()
    extractor = _extractor(recipe, backbones)
    # builds its ONNX session; a first full batch allocates what later ones reuse
    extractor.forward(torch.zeros(extractor.batch_size, 3, recipe.image_size, recipe.image_size))
    built = time.perf_counter() - began
    rates = []
    for start in range(0, len(samples), extractor.batch_size):
        batch = samples[start : start + extractor.batch_size]
        began = time.perf_counter()
        _extract(extractor, batch)
        rates.append((time.perf_counter() - began) / len(batch))
    return built, min(rates)


def _estimate(name: str, recipe: Recipe, dataset: Dataset, reference: tuple[float, float], deadline, timed) -> Weighed:
    """Seconds for every photo's features (and, but for the one `timed`, building the backbone), plus
    with --fine-tune the epochs of stage 2 that fit (at least one, or the candidate does not fit);
    `reference`: the reference's seconds to build and per photo."""
    setup, per_photo = reference
    cost = CANDIDATES[name].cost
    seconds = cost * per_photo * _photos_to_extract(dataset, recipe) + (0.0 if name == timed else cost * setup)
    left = deadline - time.perf_counter()
    epochs = None
    if recipe.fine_tune:
        size = CANDIDATES[name].image_size
        scale = cost * (_fine_tune_size(recipe, size) / size) ** 2 * per_photo
        evaluated = FINE_TUNE_COST["eval"] * len(dataset.splits[dataset.eval_split]) * scale  # the kept model
        trained = FINE_TUNE_COST["train"] * len(dataset.splits["train"]) * scale
        per_epoch = trained + FINE_TUNE_COST["eval"] * len(dataset.splits["val"]) * scale
        seconds += evaluated
        epochs = max(0, min(recipe.fine_tune_epochs, int((left - seconds) // per_epoch)))
        seconds += max(epochs, 1) * per_epoch
    fits = seconds <= left and epochs != 0
    note = "" if fits else f"needs about {seconds:.0f} s; {max(left, 0):.0f} s left"
    if fits and epochs is not None and epochs < recipe.fine_tune_epochs:
        note = f"time for {epochs} of {recipe.fine_tune_epochs} fine-tuning epochs"
    return Weighed(name, seconds, fits, note=note, fine_tune_epochs=epochs)


def _fine_tune_size(recipe: Recipe, size: int) -> int:
    """Stage 2 at the recipe's fine-tuning size, never below the candidate's own (progressive resizing
    goes up: Lite0 from 192 to 224 px; Lite2 stays at 260)."""
    return max(size, recipe.fine_tune_image_size or size)


def _sample_size(fitting: list[Weighed], reference: tuple[float, float], deadline: float, timed: str, photos: int):
    """The most training photos every fitting candidate can be compared on, building the ones not
    built yet, while the costliest of them still has time for all its work afterwards."""
    setup, per_photo = reference
    others = fitting[1:]  # the first one's sample features are reused when it wins
    builds = sum(CANDIDATES[w.name].cost * setup for w in others if w.name != timed)
    left = deadline - time.perf_counter() - max(w.seconds_estimate for w in fitting) - builds
    per_sample_photo = sum(CANDIDATES[w.name].cost for w in others) * per_photo
    return min(int(left / per_sample_photo) if per_sample_photo > 0 else photos, SAMPLE_PHOTOS["max"], photos)


def _cross_validate(candidate: Weighed, recipe: Recipe, sample: list, classes: list[str], backbones) -> None:
    found = _extract(_extractor(recipe, backbones), sample)
    outputs = 1 if is_binary(recipe, classes) else len(classes)
    fit = fit_logistic_cv(found.features, found.labels, outputs)
    candidate.cv_accuracy, candidate.out_of_fold = fit.cv_accuracy, fit.out_of_fold_loss


def _pick(fitting: list[Weighed], size: int) -> tuple[Weighed, str]:
    """The preferred (first) candidate, unless another's out-of-fold loss is lower by more than one
    standard error of the paired per-photo difference."""
    preferred = fitting[0]
    best = min(fitting, key=lambda w: w.cv_loss)
    on = f"on {size} training photos"
    if best is preferred:
        return preferred, f"the strongest that fits, and the lowest cross-validated loss {on}"
    difference = preferred.out_of_fold - best.out_of_fold
    error = float(difference.std()) / math.sqrt(len(difference))
    if float(difference.mean()) > error:
        beats = f"cross-validated loss {best.cv_loss:.4f} beats {preferred.name}'s {preferred.cv_loss:.4f}"
        return best, f"{beats} by more than one standard error ({error:.4f}) {on}"
    return (
        preferred,
        f"the strongest that fits: {best.name}'s lower loss {on} is within one standard error ({error:.4f})",
    )


def _chosen(recipe: Recipe, winner: Weighed, weighed: list[Weighed], budget: float, why: str):
    record = {"seconds": budget, "picked": winner.name, "why": why, "candidates": [w.as_dict() for w in weighed]}
    log.info("budget %.0f s: %s (%s)", budget, winner.name, why)
    for candidate in weighed:
        score = (
            ""
            if candidate.cv_loss is None
            else f", cv loss {candidate.cv_loss:.4f}, cv accuracy {candidate.cv_accuracy:.2%}"
        )
        log.info(
            "  %s: about %.0f s of work%s%s",
            candidate.name,
            candidate.seconds_estimate,
            score,
            f" ({candidate.note})" if candidate.note else "",
        )
    return _candidate_recipe(recipe, winner.name, winner.fine_tune_epochs or None), record
