"""The cross-validated logistic head: the strength it picks follows the data (strong on noise, weak on
a clean signal), the fit folded into an nn.Linear gives the same logits on raw features, folds keep
every class, and a class of one image still gets a head (no cross-validation, said by `folds=0`)."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.training.logistic import STRENGTHS, fit_logistic_cv, stratified_folds


def blobs(n: int, dim: int, classes: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, dim) features around one centre per class, offset and scaled like pooled CNN features."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.arange(n) % classes
    features = centres[labels] + spread * torch.randn(n, dim, generator=generator)
    return (3.0 + 2.0 * features)[:, None], labels


def test_noise_labels_get_the_strongest_penalty_and_a_clean_signal_a_weak_one():
    features, _ = blobs(200, 64, 2, 1.0)
    noise = torch.randint(0, 2, (200,), generator=torch.Generator().manual_seed(1))
    on_noise = fit_logistic_cv(features, noise, outputs=1)
    clean_features, clean_labels = blobs(200, 64, 2, 0.3)
    on_signal = fit_logistic_cv(clean_features, clean_labels, outputs=1)
    assert on_noise.strength == STRENGTHS[0]
    assert on_signal.strength < on_noise.strength
    assert on_signal.cv_accuracy > 0.95 and 0.3 < on_noise.cv_accuracy < 0.7
    assert on_signal.folds == 5 and len(on_signal.out_of_fold_loss) == 200


def test_the_fit_as_an_nn_linear_gives_its_logits_on_raw_features():
    features, labels = blobs(150, 32, 3, 0.8)
    fit = fit_logistic_cv(features, labels, outputs=3)
    linear = nn.Linear(32, 3)
    fit.apply_to(linear)
    with torch.no_grad():
        predicted = linear(features[:, 0]).argmax(1)
    assert (predicted == labels).float().mean() > 0.95
    assert fit.weight.shape == (3, 32) and fit.cv_accuracy > 0.9


def test_views_of_one_image_stay_in_one_fold_and_every_fold_has_every_class():
    labels = torch.tensor([0] * 12 + [1] * 7)
    folds = stratified_folds(labels, 5, seed=0)
    for fold in range(5):
        assert set(labels[folds == fold].tolist()) == {0, 1}
    features, _ = blobs(19, 8, 2, 0.5)
    two_views = torch.cat([features, features + 0.01], dim=1)
    assert fit_logistic_cv(two_views, labels, outputs=1).folds == 5


def test_a_class_of_one_image_still_gets_a_head():
    features, _ = blobs(9, 8, 2, 0.5)
    labels = torch.tensor([0] * 8 + [1])
    fit = fit_logistic_cv(features, labels, outputs=1)
    assert fit.folds == 0 and fit.cv_loss == {} and torch.isfinite(fit.weight).all()


def test_the_head_keeps_an_output_for_a_class_without_training_images():
    features, labels = blobs(60, 8, 2, 0.5)  # classes 0 and 1 of a 3-class head: class 2's photos were unreadable
    fit = fit_logistic_cv(features, labels, outputs=3)
    assert fit.weight.shape == (3, 8) and fit.bias.shape == (3,)
    linear = nn.Linear(8, 3)
    fit.apply_to(linear)
    assert set(linear(features[:, 0]).argmax(1).tolist()) <= {0, 1}
