"""A linear head fitted as L2-regularised logistic regression, its strength chosen by cross-validation.

Why: a linear probe's one real hyper-parameter is its regularisation. A fixed 20 epochs of AdamW
at a fixed weight decay under- or over-fits depending on the dataset; full-batch L-BFGS on
standardised features fits one strength in a fraction of a second on 2,000 x 1,280 features, so
k folds x a path of strengths cost seconds. The out-of-fold log loss it leaves behind also scores
whole configurations (backbone, size, resize) against each other (`imgcls.training.budget`).

The fit is folded back into the head's `nn.Linear` (standardisation included), so the model file,
ONNX export and timm layout are those of any transfer run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# lambda of: mean loss + lambda / 2 * |W|^2 on standardised features, tried from strong to weak
STRENGTHS = tuple(10.0 ** (k / 2) for k in range(2, -11, -1))  # 10 .. 1e-5
FOLDS = 5
MAX_ITERATIONS = 50  # L-BFGS iterations per fit: 200 gave the same out-of-fold losses to 4 digits, 5x slower
DEFAULT_STRENGTH = 1e-2  # when a class has one image and nothing can be cross-validated
WORSE_STEPS_TO_STOP = 2  # the path stops once the cross-validated loss rose this many strengths in a row


@dataclass
class LogisticFit:
    """The fitted head's weights on raw features, the chosen strength and what cross-validation saw."""

    weight: torch.Tensor  # (outputs, features)
    bias: torch.Tensor  # (outputs,)
    strength: float
    cv_loss: dict[float, float] = field(default_factory=dict)  # mean out-of-fold log loss per strength
    cv_accuracy: float = math.nan  # out-of-fold accuracy at the chosen strength
    out_of_fold_loss: torch.Tensor | None = None  # (images,) each image's log loss when held out
    folds: int = 0  # 0: too few images of a class to cross-validate (the default strength was used)

    def apply_to(self, linear: nn.Linear) -> None:
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            linear.bias.copy_(self.bias)


def fit_logistic_cv(
    features: torch.Tensor,
    labels: torch.Tensor,
    outputs: int,
    scored: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    folds: int = FOLDS,
    seed: int = 0,
    strengths: tuple[float, ...] = STRENGTHS,
) -> LogisticFit:
    """Fit on `features` (images, views, dim); held-out images are scored on `scored` (images, dim),
    e.g. the mean of a photo's and its mirror's features for flip-TTA models (default: view 0).
    `outputs`: 1 for one logit (sigmoid), else one per class (softmax), as the head has."""
    features, labels = features.float(), labels.long()
    scored = features[:, 0] if scored is None else scored.float()
    fold_of = stratified_folds(labels, folds, seed)
    n_folds = int(fold_of.max()) + 1
    cv_loss: dict[float, float] = {}
    out_of_fold: dict[float, tuple[torch.Tensor, float]] = {}  # per-image loss, accuracy
    starts: list[torch.Tensor | None] = [None] * n_folds
    worse = 0
    for strength in strengths if n_folds > 1 else ():
        losses, correct = torch.zeros(len(labels)), 0
        for fold in range(n_folds):
            train, held = fold_of != fold, fold_of == fold
            fitted = _fit(features[train], labels[train], outputs, strength, class_weights, starts[fold])
            starts[fold] = fitted.params
            fold_losses, fold_correct = fitted.score(scored[held], labels[held])
            losses[held], correct = fold_losses, correct + fold_correct
        cv_loss[strength], out_of_fold[strength] = float(losses.mean()), (losses, correct / len(labels))
        worse = worse + 1 if cv_loss[strength] > min(cv_loss.values()) else 0
        if worse >= WORSE_STEPS_TO_STOP:
            break
    best = min(cv_loss, key=cv_loss.__getitem__) if cv_loss else DEFAULT_STRENGTH
    weight, bias = _fit(features, labels, outputs, best, class_weights, None).raw_weights()
    losses, accuracy = out_of_fold.get(best, (None, math.nan))
    return LogisticFit(weight, bias, best, cv_loss, accuracy, losses, n_folds if cv_loss else 0)


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Each image's fold, classes spread evenly over the folds; fewer folds when a class has fewer
    images (one fold, i.e. no cross-validation, when a class has a single image)."""
    counts = torch.bincount(labels)
    folds = max(1, min(folds, int(counts[counts > 0].min())))
    generator = torch.Generator().manual_seed(seed)
    fold_of = torch.zeros(len(labels), dtype=torch.long)
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold_of[members] = torch.arange(len(members)) % folds
    return fold_of


@dataclass
class _Fitted:
    params: torch.Tensor  # (dim + 1, outputs) on standardised features, bias last
    mean: torch.Tensor
    std: torch.Tensor
    binary: bool

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        return ((rows - self.mean) / self.std) @ self.params[:-1] + self.params[-1]

    def score(self, rows: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Each row's log loss (unweighted: what validation reports) and how many are right."""
        with torch.no_grad():
            logits = self.logits(rows)
        predicted = (logits[:, 0] > 0).long() if self.binary else logits.argmax(1)
        return _loss(logits, labels, self.binary, None, reduction="none"), int((predicted == labels).sum())

    def raw_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, dim) weight and bias of the same function on unstandardised features."""
        weight = self.params[:-1] / self.std[:, None]
        bias = self.params[-1] - (self.mean[:, None] * weight).sum(0)
        return weight.T.contiguous(), bias.contiguous()


def _fit(features, labels, outputs, strength, class_weights, start) -> _Fitted:
    """Full-batch L-BFGS with a strong-Wolfe line search; `start` warm-starts along the path."""
    rows = features.flatten(0, 1)
    targets = labels.repeat_interleave(features.shape[1])
    mean, std = rows.mean(0), rows.std(0).clamp_min(1e-6)
    standard = (rows - mean) / std
    params = torch.zeros(rows.shape[1] + 1, outputs) if start is None else start.clone()
    params.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [params], lr=1.0, max_iter=MAX_ITERATIONS, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = standard @ params[:-1] + params[-1]
        loss = _loss(logits, targets, outputs == 1, class_weights) + strength / 2 * params[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return _Fitted(params.detach(), mean, std, outputs == 1)


def _loss(logits, labels, binary: bool, class_weights, reduction: str = "mean") -> torch.Tensor:
    if binary:
        per_image = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    else:
        per_image = F.cross_entropy(logits, labels, reduction="none")
    if class_weights is not None:
        per_image = per_image * class_weights[labels]
    return per_image.mean() if reduction == "mean" else per_image
