"""Labels from file names (Kaggle's flat `cat.N.jpg`) and from a CSV of path,label[,split]: the same
Dataset as class folders, problems reported with file names and CSV row numbers, and everything
downstream (check, train, evaluate) working the same. Real photos from the shared cats-vs-dogs set."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgcls.cli import app
from imgcls.data.discover import discover
from imgcls.data.labels import LabelOptions
from imgcls.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")
NAMES = LabelOptions(label_from="name")


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("path", "label")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_kaggle_names_give_classes_a_stratified_split_and_list_unmatched_files(kaggle_folder: Path) -> None:
    dataset = discover(kaggle_folder, val_split=0.25, seed=3, labels=NAMES)
    assert dataset.classes == ["cat", "dog"]
    assert dataset.counts() == {"train": {"cat": 9, "dog": 9}, "val": {"cat": 3, "dog": 3}}
    assert dataset.split_is_generated and dataset.source.startswith("names,")
    for split in dataset.splits.values():
        for sample in split:
            assert sample.path.name.startswith(dataset.classes[sample.label] + ".")
    assert dataset.unlabelled == [kaggle_folder / "IMG_2041 copy.jpg"]
    assert any("IMG_2041 copy.jpg" in note for note in dataset.notes)
    again = discover(kaggle_folder, val_split=0.25, seed=3, labels=NAMES)
    assert again.split_manifest() == dataset.split_manifest()  # reproducible


def test_label_pattern_and_its_errors(tmp_path: Path, kaggle_folder: Path) -> None:
    renamed = tmp_path / "phone"
    renamed.mkdir()
    for photo in kaggle_folder.glob("*.*.jpg"):
        kind, number, _ = photo.name.split(".")
        shutil.copy(photo, renamed / f"IMG_{number:0>4}_{kind.upper()}.jpg")
    dataset = discover(renamed, labels=LabelOptions(pattern=r"_([A-Z]+)\.jpg$"))
    assert dataset.classes == ["CAT", "DOG"] and sum(map(len, dataset.splits.values())) == 24

    with pytest.raises(DataError, match="exactly one"):
        discover(renamed, labels=LabelOptions(pattern=r"IMG_(\d+)_([A-Z]+)"))
    with pytest.raises(DataError, match="not a valid regular expression"):
        discover(renamed, labels=LabelOptions(pattern=r"(unclosed"))
    with pytest.raises(DataError, match="no file name matches"):
        discover(renamed, labels=LabelOptions(pattern=r"^dog\.(\d+)"))
    with pytest.raises(DataError, match="only one class"):
        discover(renamed, labels=LabelOptions(pattern=r"(IMG)_"))


def test_names_inside_split_folders_keep_those_splits(kaggle_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "splits"
    for photo in sorted(kaggle_folder.glob("*.*.jpg")):
        split = "val" if int(photo.name.split(".")[1]) < 3 else "train"
        (root / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / split / photo.name)
    dataset = discover(root, labels=NAMES)
    assert dataset.source == "names"
    assert dataset.counts() == {"train": {"cat": 9, "dog": 9}, "val": {"cat": 3, "dog": 3}}


def test_csv_with_split_column_and_missing_files(kaggle_folder: Path, tmp_path: Path) -> None:
    rows = [
        [f"{k}.{n}.jpg", k, "test" if n < 2 else "val" if n < 5 else "train"] for k in ("cat", "dog") for n in range(12)
    ]
    rows.append(["dog.99.jpg", "dog", "train"])  # no such file: reported, not fatal
    labels = write_csv(kaggle_folder / "labels.csv", rows, ("path", "label", "split"))
    dataset = discover(None, labels=LabelOptions(csv=labels))
    assert dataset.root == kaggle_folder and dataset.source == "csv"
    assert dataset.counts() == {
        "train": {"cat": 7, "dog": 7},
        "val": {"cat": 3, "dog": 3},
        "test": {"cat": 2, "dog": 2},
    }
    assert dataset.unlabelled == [kaggle_folder / "dog.99.jpg"]
    # paths relative to DATA win over the CSV's own folder
    elsewhere = write_csv(tmp_path / "elsewhere.csv", [r[:2] for r in rows[:-1]])
    from_data = discover(kaggle_folder, labels=LabelOptions(csv=elsewhere))
    assert sum(map(len, from_data.splits.values())) == 24 and not from_data.unlabelled


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [["cat.0.jpg", "cat"], ["dog.0.jpg", "dog"], ["cat.0.jpg", "cat"]],
            r"rows 2, 4: .*cat\.0\.jpg is listed more",
        ),
        ([["cat.0.jpg", "cat"], ["dog.0.jpg", "dog"], ["cat.0.jpg", "dog"]], r"rows 2, 4: .*several labels"),
        ([["cat.0.jpg", "cat;dog"], ["dog.0.jpg", "dog"]], r"row 2: several labels 'cat;dog'; multi-label"),
        ([["cat.0.jpg", ""], ["dog.0.jpg", "dog"]], r"row 2: empty label"),
    ],
)
def test_csv_errors_give_row_numbers(kaggle_folder: Path, rows: list[list[str]], message: str) -> None:
    labels = write_csv(kaggle_folder / "bad.csv", rows)
    with pytest.raises(DataError, match=message):
        discover(None, labels=LabelOptions(csv=labels))


def test_csv_header_and_split_errors(kaggle_folder: Path) -> None:
    no_label = write_csv(kaggle_folder / "a.csv", [["cat.0.jpg", "x"]], ("path", "animal"))
    with pytest.raises(DataError, match="no 'label' column .*has path, animal"):
        discover(None, labels=LabelOptions(csv=no_label))
    bad_split = write_csv(kaggle_folder / "b.csv", [["cat.0.jpg", "cat", "holdout"]], ("path", "label", "split"))
    with pytest.raises(DataError, match="row 2: split 'holdout' is not one of"):
        discover(None, labels=LabelOptions(csv=bad_split))
    with pytest.raises(DataError, match="exclude each other"):
        LabelOptions(label_from="name", csv=no_label)


def test_flat_folder_without_flags_says_how_to_label_it(kaggle_folder: Path) -> None:
    with pytest.raises(DataError, match=r"--label-from name \(e\.g\. .*\.jpg\).*--labels FILE\.csv"):
        discover(kaggle_folder)


def test_cli_check_train_and_evaluate_on_names_and_csv(kaggle_folder: Path, tmp_path: Path, imgcls_env) -> None:
    runner = CliRunner()
    checked = runner.invoke(app, ["data", "check", str(kaggle_folder), "--label-from", "name", "--json"])
    report = json.loads(checked.stdout)
    assert report["classes"] == ["cat", "dog"] and report["unlabelled"] == ["IMG_2041 copy.jpg"]
    assert any("without a label" in problem for problem in report["problems"])
    assert any("labels from file names" in note for note in report["notes"])

    tiny = ["--recipe", "seed-basic-cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress"]
    trained = runner.invoke(
        app,
        ["train", str(kaggle_folder), "--label-from", "name", *tiny, "--out", str(tmp_path / "runs"), "--no-report"],
    )
    assert trained.exit_code == 0, trained.output + repr(trained.exception)
    run = tmp_path / "runs" / "seed-basic-cnn"
    split = json.loads((run / "split.json").read_text())
    assert split["classes"] == ["cat", "dog"] and split["source"].startswith("names,")

    labels = write_csv(tmp_path / "all.csv", [[str(p), p.name.split(".")[0]] for p in kaggle_folder.glob("*.*.jpg")])
    own = json.loads(runner.invoke(app, ["evaluate", str(run), "--json"]).stdout)
    by_csv = json.loads(runner.invoke(app, ["evaluate", str(run), "--labels", str(labels), "--json"]).stdout)
    by_name = runner.invoke(app, ["evaluate", str(run), str(kaggle_folder), "--label-from", "name", "--json"])
    by_name = json.loads(by_name.stdout)
    assert own["n_images"] == len(split["splits"]["val"]) == 4  # round(20% of 12) per class
    assert by_csv["n_images"] == by_name["n_images"] == 24  # other data without a split: all of it
    assert by_csv["confusion_matrix"] == by_name["confusion_matrix"]


def test_show_samples_of_a_flat_folder_captions_the_name_labels(kaggle_folder: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["show", "samples", str(kaggle_folder), "--label-from", "name", "--count", "4", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    (png,) = tmp_path.glob("samples-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
