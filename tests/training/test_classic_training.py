"""Every -fast recipe of the classic networks (issue 4) trains end to end on real CIFAR-10 photos through
`imgcls.train`, and the saved model predicts photos with its main output only (GoogLeNet included)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

import imgcls
from imgcls.inference import Classifier
from imgcls.recipes import get_recipe, list_recipes

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.usefixtures("imgcls_env", "one_thread")]

FAST = [r.name for r in list_recipes() if r.name.endswith("-fast")]


@pytest.mark.parametrize("recipe", FAST)
def test_fast_variant_trains_on_real_cifar_photos(recipe: str, cifar_subset, tmp_path: Path) -> None:
    data = cifar_subset("cifar", per_class=5)  # 50 photos: the seeded 80/20 split keeps 40 for training
    run = imgcls.train(data, recipe, out=tmp_path / "runs", epochs=1, batch_size=16, progress=False)

    with (run / "history.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert math.isfinite(float(row["loss"])) and math.isfinite(float(row["val_loss"]))
    description = json.loads((run / "model.json").read_text())
    assert description["architecture"] == get_recipe(recipe).model
    assert (description["image_size"], description["channels"], description["output"]) == (32, 3, "softmax")
    assert description["arch_args"].items() >= get_recipe(recipe).model_args.items()

    classifier = Classifier.load(run, engine="torch")
    photos = sorted((data / "cat").iterdir())[:2] + sorted((data / "ship").iterdir())[:1]
    predictions = classifier.predict(photos)
    assert [p.error for p in predictions] == [None] * 3
    for prediction in predictions:
        assert set(prediction.probabilities) == set(description["classes"])
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert prediction.label in description["classes"]
