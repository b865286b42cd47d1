"""Seeing inside a run: `imgcls mistakes`, `imgcls data suspects` and `report.html`, on one tiny real run.

The run is a `transfer` head (EfficientNet-Lite0 features at 128 px) trained on 16+16 real photos,
with one dog photo planted under the cat class. Its class and file names carry HTML (`<`, `&`,
quotes, an `<img onerror>`): every output must show them as text. Mistakes are checked against the
model's own predictions, suspects must put the planted dog near the top, and the report (written by
`train` itself) is opened in a real headless browser.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import imgcls
from imgcls.cli import app, render
from imgcls.evaluation import predict_run, top_mistakes
from imgcls.models.classifier import ModelSpec, build_classifier, save_model
from imgcls.report import page as report_module
from imgcls.suspects import find_suspects, fit_logistic_regression, out_of_fold_probabilities, stratified_folds

pytestmark = [pytest.mark.slow, pytest.mark.shared_data, pytest.mark.usefixtures("one_thread")]
CAT, DOG = "cat", 'dog & "wolf" <i>'  # class names are folder names: HTML must stay text
PLANTED = "planted <img src=x onerror=alert(1)>.jpg"  # a dog photo filed under cat/
TINY = {"image_size": 128, "batch_size": 8, "epochs": 3, "progress": False}
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables are not cut at 80 columns."""
    monkeypatch.setattr(render, "console", Console(width=200))


@pytest.fixture(scope="module")
def env(training_env, tmp_path_factory):
    with training_env(tmp_path_factory.mktemp("imgcls-cache")):
        yield


def link(source: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(source)
    return dest


def photos(root: Path, split: str, name: str, start: int, count: int) -> list[Path]:
    files = sorted((root / split / name).glob("*.jpg"))[start : start + count]
    assert len(files) == count, f"{root / split / name}: not enough photos"
    return files


@pytest.fixture(scope="module")
def data(cats_vs_dogs_dir: Path, tmp_path_factory) -> Path:
    """train/{cat, DOG}: 16 photos each + one dog under cat/; val/: 6 each."""
    root = tmp_path_factory.mktemp("data") / "photos"
    for split, count in (("train", 16), ("val", 6)):
        for source, target in ((CAT, CAT), ("dog", DOG)):
            for photo in photos(cats_vs_dogs_dir, split, source, 0, count):
                link(photo, root / split / target / photo.name)
    link(photos(cats_vs_dogs_dir, "train", "dog", 100, 1)[0], root / "train" / CAT / PLANTED)
    return root


@pytest.fixture(scope="module")
def run(env, data, tmp_path_factory) -> Path:
    return imgcls.train(data, "transfer", out=tmp_path_factory.mktemp("runs"), **TINY)


@pytest.fixture(scope="module")
def other_data(cats_vs_dogs_dir: Path, tmp_path_factory) -> Path:
    """Unseen photos, two dogs filed under cat/: confident mistakes by construction."""
    root = tmp_path_factory.mktemp("other") / "photos"
    for photo in photos(cats_vs_dogs_dir, "val", "cat", 100, 4):
        link(photo, root / CAT / photo.name)
    for photo in photos(cats_vs_dogs_dir, "val", "dog", 100, 4):
        link(photo, root / DOG / photo.name)
    for photo in photos(cats_vs_dogs_dir, "val", "dog", 200, 2):
        link(photo, root / CAT / f"filed-wrong-{photo.name}")
    return root


def assert_png(path: Path, min_size: tuple[int, int] = (300, 200)) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_size[0] and image.height >= min_size[1], image.size


# --------------------------------------------------------------------------- mistakes


def test_mistakes_are_the_wrong_predictions_by_loss(run, other_data, tmp_path):
    result = runner.invoke(app, ["mistakes", str(run), str(other_data), "--json", "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    classifier = imgcls.load(run)
    files = sorted(p for p in other_data.rglob("*.jpg"))
    truth = {f: (CAT if f.parent.name == CAT else DOG) for f in files}
    predicted = {Path(p.source): p for p in classifier.predict(files)}
    wrong = [f for f in files if predicted[f].label != truth[f]]
    assert found["n_images"] == len(files) == 10
    assert found["n_wrong"] == len(wrong) == len(found["mistakes"])  # fewer than --top: all of them
    assert {Path(m["path"]) for m in found["mistakes"]} == set(wrong)
    assert {f for f in files if f.name.startswith("filed-wrong-")} <= set(wrong)  # the dogs filed as cats
    losses = [m["loss"] for m in found["mistakes"]]
    assert losses == sorted(losses, reverse=True)
    for mistake in found["mistakes"]:
        model = predicted[Path(mistake["path"])]
        assert mistake["true_label"] == truth[Path(mistake["path"])] != mistake["predicted_label"] == model.label
        assert mistake["probability"] == pytest.approx(model.probability, abs=5e-3)  # float16 cached features
        assert mistake["loss"] == pytest.approx(-np.log(model.probabilities[mistake["true_label"]]), rel=0.05, abs=0.05)
    assert found["png"] == str(tmp_path / "m.png")
    assert_png(tmp_path / "m.png")


def test_mistakes_default_to_the_runs_val_split(run):
    metrics = json.loads((run / "metrics.json").read_text())
    predicted = predict_run(run, cached_features=True)
    assert len(predicted.labels) == metrics["n_images"] == 12
    mistakes = top_mistakes(predicted, limit=None)
    assert len(mistakes) == round(metrics["n_images"] * (1 - metrics["accuracy"]))
    assert all(m.predicted_label != m.true_label for m in mistakes)
    assert top_mistakes(predicted, limit=1) == mistakes[:1]
    result = runner.invoke(app, ["mistakes", str(run)])
    assert result.exit_code == 0, result.output
    assert f"{len(mistakes)} of 12 images wrong (val split of the run)" in result.output


# --------------------------------------------------------------------------- suspects


def test_suspects_put_the_planted_dog_at_the_top(run):
    found = find_suspects(run)
    assert len(found.suspects) == 16 + 17 + 12
    assert found.features == "the run's frozen efficientnet_lite0 backbone"
    names = [s.path.name for s in found.suspects]
    assert PLANTED in names[:3], names[:5]
    planted = found.suspects[names.index(PLANTED)]
    assert (planted.given_label, planted.predicted_label, planted.split) == (CAT, DOG, "train")
    assert planted.score == pytest.approx(1 - planted.given_probability) and planted.score > 0.5
    scores = [s.score for s in found.suspects]
    assert scores == sorted(scores, reverse=True)


def test_runs_without_a_frozen_backbone_are_judged_by_lite0(env, data, tmp_path):
    """A from-scratch network (here an untrained seed CNN: its own judgement would be noise) is not
    refitted per fold: the default pretrained backbone's features judge the labels."""
    spec = ModelSpec("seed-basic-cnn", [CAT, DOG], image_size=32, arch_args={"image_size": 32}, output="sigmoid")
    save_model(tmp_path / "cnn-run", build_classifier(spec), spec)
    found = find_suspects(tmp_path / "cnn-run", data)
    assert found.features.startswith("efficientnet_lite0 with ImageNet weights")
    assert found.root == data and {s.split for s in found.suspects} == {"train", "val"}
    names = [s.path.name for s in found.suspects]
    assert len(names) == 45 and PLANTED in names[:3], names[:5]


def test_suspects_command_json_and_grid(run, tmp_path):
    out = tmp_path / "suspects.png"
    result = runner.invoke(app, ["data", "suspects", str(run), "--top", "5", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["n_images"] == 45 and len(found["suspects"]) == 5 and found["folds"] == 5
    assert PLANTED in [Path(s["path"]).name for s in found["suspects"][:3]]
    assert found["png"] == str(out)
    assert_png(out)
    table = runner.invoke(app, ["data", "suspects", str(run), "--top", "3", "--out", str(tmp_path / "t.png")])
    assert table.exit_code == 0 and f"train/{CAT}/{PLANTED}" in table.output


def test_suspects_of_csv_labelled_photos_find_the_planted_dog(run, data, tmp_path):
    """The same photos described by a CSV (path,label,split) instead of folders: the same verdict."""
    rows = ["path,label,split"] + [
        f"{photo.relative_to(data)},{photo.parent.name},{photo.parent.parent.name}"
        for photo in sorted(data.rglob("*.jpg"))
    ]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["data", "suspects", str(run), str(data), "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["n_images"] == 45
    assert PLANTED in [Path(s["path"]).name for s in found["suspects"][:3]]
    assert {s["split"] for s in found["suspects"]} == {"train", "val"}  # the CSV's splits, not one pool


def test_out_of_fold_heads_never_see_the_image_they_judge():
    """A lone image of class 1 among 40 of class 0 (random features): a head fitted on all of them
    memorises it, out of fold it gets no support at all, so its label looks wrong."""
    features = torch.randn(41, 8, generator=torch.Generator().manual_seed(0))
    labels = np.zeros(41, dtype=np.int64)
    labels[-1] = 1
    folds = stratified_folds(labels, 5, seed=0)
    assert sorted(np.bincount(folds).tolist()) == [8, 8, 8, 8, 9]
    in_sample = torch.softmax(fit_logistic_regression(features, torch.from_numpy(labels), 2)(features), 1)
    assert in_sample[-1, 1] > 0.5
    probs = out_of_fold_probabilities(features, labels, 2, folds=5)
    assert probs[-1, 1] < 0.01
    assert np.median(probs[:-1, 0]) > 0.9


# --------------------------------------------------------------------------- report


def test_training_wrote_a_report_that_a_browser_shows(run, page, tmp_path):
    report = run / "report.html"
    assert report.is_file()
    html = report.read_text(encoding="utf-8")
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    metrics = json.loads((run / "metrics.json").read_text())
    text = page.inner_text("body")
    assert f"{metrics['accuracy']:.2%}" in text and f"{metrics['loss']:.4f}" in text
    for heading in ("Most confident mistakes", "Grad-CAM", "Likely mislabelled images", "Duplicates and leakage"):
        assert heading in text
    assert DOG in text and PLANTED in text  # shown as text, not parsed as HTML
    assert page.locator("img[src='x']").count() == 0
    images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt])")
    assert len(images) >= 10  # confusion matrix, ROC, curves, Grad-CAM, suspects
    assert [alt for complete, width, alt in images if not complete or width == 0] == []
    assert page.problems == []
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=str(tmp_path / "report-phone.png"), full_page=True)


def test_report_sections_explain_what_they_cannot_show(run, tmp_path):
    """The run's photos gone: the page still opens, with the metrics, and says why a section is empty."""
    moved = shutil.copytree(run, tmp_path / "moved-run", ignore=shutil.ignore_patterns("checkpoints", "report.html"))
    for name in ("split.json",):
        split = json.loads((moved / name).read_text())
        split["root"] = str(tmp_path / "gone")
        (moved / name).write_text(json.dumps(split))
    config = (
        (moved / "config.yaml").read_text().replace(str(json.loads((run / "split.json").read_text())["root"]), "/gone")
    )
    (moved / "config.yaml").write_text(config)
    path = report_module.write_report(moved, suspects=True)
    html = path.read_text(encoding="utf-8")
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['accuracy']:.2%}" in html
    assert "could not be computed" in html and "no readable images" in html
    assert f"data folder {tmp_path / 'gone'} not found" in html  # where the run's split says its photos are


def test_a_failing_report_does_not_fail_training(run, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "_write", broken)
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        assert report_module.write_report_safely(run) is None
    assert "disk full" in caplog.text and f"imgcls report {run}" in caplog.text
    assert os.path.getsize(run / "report.html") > 0  # the earlier report is still there
