"""The `imgcls` command: evaluate, predict, user errors (exit 2, no traceback), recipes/models/summary.

One tiny run is trained once for the module; commands run in-process through `CliRunner` on
`imgcls.cli.app`, and through the real entry point (`imgcls.cli.main`) in a subprocess where
exit codes and tracebacks matter.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import imgcls
from imgcls.cli import app, render
from imgcls.errors import ImgclsError
from imgcls.recipes import DEFAULT_RECIPE, list_recipes

IMGCLS = Path(sys.executable).with_name("imgcls")
SEED_CNN_PARAMETERS = "10,641,441"

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_run(cats_dogs_tree, training_env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seed-basic-cnn without flip TTA (the recipe has it), 48 px, 2 epochs, on 16+16 train / 8+8 val photos."""
    root = tmp_path_factory.mktemp("cli-run")
    data = cats_dogs_tree(root / "data", train=16, val=8)
    with training_env(root / "cache"):
        return imgcls.train(
            data,
            "seed-basic-cnn",
            out=root / "runs",
            image_size=48,
            epochs=2,
            batch_size=8,
            flip_tta=False,
            progress=False,
        )


@pytest.fixture(autouse=True)
def _env(imgcls_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh cache for every test, and a wide console so tables are not cut at 80 columns."""
    monkeypatch.setattr(render, "console", Console(width=200))


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def val_files(run: Path) -> tuple[list[Path], np.ndarray]:
    split = json.loads((run / "split.json").read_text())
    root = Path(split["root"])
    items = split["splits"]["val"]
    return [root / rel for rel, _ in items], np.array([label for _, label in items])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


# --------------------------------------------------------------------------- evaluate


@pytest.mark.shared_data
def test_evaluate_json_agrees_with_predict(trained_run: Path) -> None:
    result = invoke("evaluate", trained_run, "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1 and result.stdout.endswith("}\n")  # exactly one JSON object
    metrics = json.loads(result.stdout)
    for key in ("accuracy", "loss", "n_images", "per_class", "confusion_matrix", "roc_auc"):
        assert key in metrics, key

    files, labels = val_files(trained_run)
    classifier = imgcls.load(trained_run)
    predictions = classifier.predict(files)
    assert [p.error for p in predictions] == [None] * len(files)
    probs = np.array([[p.probabilities[c] for c in classifier.classes] for p in predictions])
    predicted = probs.argmax(1)
    assert [classifier.classes[k] for k in predicted] == [p.label for p in predictions]

    assert metrics["n_images"] == len(files) == 16
    assert metrics["classes"] == classifier.classes == ["cat", "dog"]
    assert metrics["accuracy"] == pytest.approx((predicted == labels).mean(), abs=1e-12)
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)).mean()
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    assert metrics["confusion_matrix"] == matrix.tolist()
    for k, name in enumerate(classifier.classes):
        row = metrics["per_class"][name]
        assert row["support"] == int((labels == k).sum())
        assert row["recall"] == pytest.approx(matrix[k, k] / matrix[k].sum())
        if matrix[:, k].sum():
            assert row["precision"] == pytest.approx(matrix[k, k] / matrix[:, k].sum())
    assert metrics["roc_auc"] == pytest.approx(auc(probs[:, 1], labels), abs=1e-5)

    # the same numbers as the run's own metrics.json, written at the end of training
    saved = json.loads((trained_run / "metrics.json").read_text())
    assert saved["confusion_matrix"] == metrics["confusion_matrix"]
    assert saved["loss"] == pytest.approx(metrics["loss"], rel=1e-6)


@pytest.mark.shared_data
def test_evaluate_table_and_other_data(trained_run: Path) -> None:
    result = invoke("evaluate", trained_run)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "Confusion matrix" in result.stdout
    assert "ROC AUC" in result.stdout

    # DATA with train/ and val/: its val split, which here is the run's own val photos
    data = Path(json.loads((trained_run / "split.json").read_text())["root"])
    other = json.loads(invoke("evaluate", trained_run, data, "--json").stdout)
    own = json.loads(invoke("evaluate", trained_run, "--json").stdout)
    assert other["n_images"] == 16
    assert other["confusion_matrix"] == own["confusion_matrix"]
    assert other["accuracy"] == own["accuracy"]


@pytest.mark.shared_data
def test_evaluate_with_flip_tta_averages_mirror_images(trained_run: Path) -> None:
    plain = json.loads(invoke("evaluate", trained_run, "--json").stdout)
    mirrored = json.loads(invoke("evaluate", trained_run, "--flip-tta", "--json").stdout)
    assert (plain["flip_tta"], mirrored["flip_tta"]) == (False, True)  # trained without: as trained

    files, labels = val_files(trained_run)
    classifier = imgcls.Classifier.load(trained_run, engine="torch")
    classifier.model.flip_tta = True
    probs = np.array([[p.probabilities[c] for c in classifier.classes] for p in classifier.predict(files)])
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)).mean()
    assert mirrored["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert mirrored["loss"] != pytest.approx(plain["loss"], rel=1e-4)
    assert "flip TTA" in invoke("evaluate", trained_run, "--flip-tta").stdout


# --------------------------------------------------------------------------- predict


@pytest.fixture
def photo_inputs(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Relative arguments: one file, one folder (2 photos), one glob (2 photos), one unreadable file."""
    files, _ = val_files(trained_run)
    cats, dogs = files[:8], files[8:]
    (tmp_path / "in" / "folder").mkdir(parents=True)
    (tmp_path / "in" / "globbed").mkdir()
    (tmp_path / "in" / "single.jpg").symlink_to(cats[0])
    for index, source in enumerate([cats[1], dogs[0]]):
        (tmp_path / "in" / "folder" / f"f{index}.jpg").symlink_to(source)
    for index, source in enumerate([cats[2], dogs[1]]):
        (tmp_path / "in" / "globbed" / f"g{index}.jpg").symlink_to(source)
    (tmp_path / "in" / "globbed" / "skip.txt").write_text("not matched by the glob")
    (tmp_path / "in" / "broken.jpg").write_text("this is text, not a JPEG")
    monkeypatch.chdir(tmp_path)
    return ["in/single.jpg", "in/folder", "in/globbed/*.jpg", "in/broken.jpg"]


EXPECTED_FILES = [
    "in/single.jpg",
    "in/folder/f0.jpg",
    "in/folder/f1.jpg",
    "in/globbed/g0.jpg",
    "in/globbed/g1.jpg",
    "in/broken.jpg",
]


@pytest.mark.shared_data
def test_predict_json(trained_run: Path, photo_inputs: list[str]) -> None:
    result = invoke("predict", trained_run, *photo_inputs, "--format", "json", "--top-k", "2")
    assert result.exit_code == 1, result.output
    assert "1 of 6 file(s) could not be read" in result.stderr
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == EXPECTED_FILES

    broken = rows[-1]
    assert broken["label"] is None and broken["probability"] is None and broken["probabilities"] == {}
    assert "not an image" in broken["error"]

    expected = imgcls.load(trained_run).predict(EXPECTED_FILES[:-1])
    for row, prediction in zip(rows[:-1], expected, strict=True):
        assert row["error"] is None
        assert row["label"] == prediction.label
        assert set(row["probabilities"]) == {"cat", "dog"}
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-6)
        assert row["probability"] == pytest.approx(max(row["probabilities"].values()))
        assert row["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-6)


@pytest.mark.shared_data
def test_predict_csv(trained_run: Path, photo_inputs: list[str]) -> None:
    result = invoke("predict", trained_run, *photo_inputs, "--format", "csv", "--top-k", "2")
    assert result.exit_code == 1, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["file", "label", "probability", "cat", "dog", "error"]
    assert [r["file"] for r in rows] == EXPECTED_FILES
    for row in rows[:-1]:
        assert row["error"] == ""
        assert row["label"] in ("cat", "dog")
        assert float(row["cat"]) + float(row["dog"]) == pytest.approx(1, abs=1e-5)
        assert float(row["probability"]) == pytest.approx(float(row[row["label"]]))
    assert rows[-1]["label"] == rows[-1]["probability"] == rows[-1]["cat"] == ""
    assert "not an image" in rows[-1]["error"]


@pytest.mark.shared_data
def test_predict_table(trained_run: Path, photo_inputs: list[str]) -> None:
    result = invoke("predict", trained_run, *photo_inputs, "--format", "table", "--top-k", "2")
    assert result.exit_code == 1, result.output
    assert "top 1" in result.stdout and "top 2" in result.stdout
    for name in EXPECTED_FILES:
        assert name in result.stdout, name
    good = [line for line in result.stdout.splitlines() if "in/" in line and "broken" not in line]
    assert len(good) == 5
    assert all(line.count("%") == 2 and "cat" in line and "dog" in line for line in good), good
    assert "not an image" in result.stdout


@pytest.mark.shared_data
def test_predict_all_readable_exits_0_and_user_errors(trained_run: Path, photo_inputs: list[str]) -> None:
    result = invoke("predict", trained_run, "in/folder", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 2

    result = invoke("predict", trained_run, "in/nothing-*.jpg")
    assert isinstance(result.exception, ImgclsError) and "no file matches" in str(result.exception)
    result = invoke("predict", trained_run, "in/single.jpg", "--format", "xml")
    assert isinstance(result.exception, ImgclsError) and "--format" in str(result.exception)


# --------------------------------------------------------------------------- train: user errors


def run_main(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(IMGCLS), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["missing", "single-class"])
def test_train_bad_data_exits_2_without_traceback(
    case: str, tmp_path: Path, imgcls_env: dict[str, str], images
) -> None:
    if case == "missing":
        data, expected = tmp_path / "no-such-folder", "no such folder"
    else:
        data, expected = tmp_path / "one-class", "only one class"
        images.tree(data, {"cats": 4})
    out = tmp_path / "runs"

    result = run_main(["train", str(data), "--out", str(out), "--epochs", "1"], imgcls_env, tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    message = result.stderr.strip()
    assert message.startswith("error:"), message
    assert "\n\n" not in message  # one paragraph
    assert expected in message and str(data) in message, message
    assert not out.exists() and not (tmp_path / "runs").exists(), "a run folder was created"


# --------------------------------------------------------------------------- listings


def test_recipes_lists_every_recipe() -> None:
    result = invoke("recipes")
    assert result.exit_code == 0, result.output
    for recipe in list_recipes():
        assert recipe.name in result.stdout
    assert f"{DEFAULT_RECIPE} (default)" in result.stdout


def test_models_lists_the_registry() -> None:
    result = invoke("models")
    assert result.exit_code == 0, result.output
    assert "seed-basic-cnn" in result.stdout and "small-resnet" in result.stdout
    filtered = invoke("models", "seed-*")
    assert "seed-basic-cnn" in filtered.stdout and "small-resnet" not in filtered.stdout


def test_summary_of_the_seed_cnn() -> None:
    result = invoke("summary", "seed-basic-cnn")
    assert result.exit_code == 0, result.output
    assert f"Total params: {SEED_CNN_PARAMETERS}" in result.stdout
    assert "[1, 16, 150, 150]" in result.stdout


def test_summary_of_an_unknown_name_is_a_user_error() -> None:
    result = invoke("summary", "no-such-model")
    assert isinstance(result.exception, ImgclsError)
    assert "neither a recipe nor a model" in str(result.exception)
