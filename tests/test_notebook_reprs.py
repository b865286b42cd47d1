"""What Jupyter shows of imgcls's results: the cards of a Run, a Prediction, a data check and an
evaluation hold their real values, escaped; the show_* functions return figures.

The runs here are written by hand (config, metrics, history), so the cards are checked in
milliseconds; the example notebook (tests/test_notebooks.py) shows them after real training."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.figure import Figure

import imgcls
from imgcls.data.check import check_dataset
from imgcls.errors import ImgclsError
from imgcls.metrics import classification_metrics
from imgcls.predict import Prediction
from imgcls.run import Run, write_history
from imgcls.run import folder as run_folder
from imgcls.visual.notebook import CheckResult, EvaluationResult, evaluation_card

BOLD_CLASS = "<b>dog"  # a class name (and folder) that must reach the page as text, not as markup
ESCAPED_CLASS = "&lt;b&gt;dog"
HISTORY = [
    {"stage": "head", "epoch": 1, "loss": 0.6, "accuracy": 0.7, "val_loss": 0.4, "val_accuracy": 0.8},
    {"stage": "head", "epoch": 2, "loss": 0.3, "accuracy": 0.9, "val_loss": 0.2, "val_accuracy": 0.9},
    {"stage": "head", "epoch": 3, "loss": 0.2, "accuracy": 0.95, "val_loss": 0.25, "val_accuracy": 0.89},
]


class TableRows(HTMLParser):
    """The text of every table row of a card, cell by cell, in the order rows end (a nested table's
    rows come before the row holding them)."""

    def __init__(self, markup: str):
        super().__init__()
        self.rows: list[list[str]] = []
        self.open: list[list[str]] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "tr":
            self.open.append([])
        elif tag in ("td", "th"):
            self.open[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.rows.append(self.open.pop())

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1]:
            self.open[-1][-1] += data


def rows(markup: str) -> list[list[str]]:
    return TableRows(markup).rows


def written_run(folder: Path, finished: bool = True) -> Run:
    """A transfer run's folder as training leaves it: config (with `kept` when finished), metrics, history."""
    run = Run(folder)
    folder.mkdir(parents=True)
    config = {
        "data": {
            "root": str(folder.parent / "photos"),
            "classes": ["cat", BOLD_CLASS],
            "counts": {"train": {"cat": 1000, BOLD_CLASS: 1000}, "val": {"cat": 500, BOLD_CLASS: 500}},
        },
        "recipe": {"name": "transfer", "model": "transfer", "model_args": {"backbone": "efficientnet_lite0"}},
    }
    config["recipe"] |= {"image_size": 192, "epochs": 3}
    if finished:
        config["kept"] = {"stage": "head", "epoch": 2, "image_size": 192, "monitor": "val_loss"}
        metrics = {"split": "val", "accuracy": 0.912, "loss": 0.2, "n_images": 1000, "roc_auc": 0.97}
        (folder / run_folder.METRICS).write_text(json.dumps(metrics))
    (folder / run_folder.CONFIG).write_text(yaml.safe_dump(config))
    write_history(run.history_path, HISTORY)
    return run


def test_a_finished_runs_card_shows_its_values_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the notebook's folder: links are relative to it
    run = written_run(tmp_path / "runs" / "transfer")
    run.curves_path.write_bytes(b"png")
    card = run._repr_html_()
    assert 'class="imgcls-run"' in card and "Run transfer" in card
    assert "transfer (efficientnet_lite0): 192 px, 3 epochs" in card
    assert ESCAPED_CLASS in card and BOLD_CLASS not in card
    table = rows(card)
    assert ["classes", f"cat, {BOLD_CLASS}"] in table and ["status", "finished"] in table
    assert ["best epoch", "head epoch 2 of 3: val_loss 0.2000 (the model kept, at 192 px)"] in table  # not the last
    assert ["metrics", "accuracy 91.2%, loss 0.2000, ROC AUC 0.9700 on 1,000 val images"] in table
    assert ["split", "cat", BOLD_CLASS, "total"] in table and ["train", "1,000", "1,000", "2,000"] in table
    assert '<a href="runs/transfer/curves.png"' in card
    assert "report.html" not in card  # only files that exist are linked


def test_an_unfinished_run_says_so_and_a_damaged_one_shows_the_error(tmp_path: Path) -> None:
    unfinished = written_run(tmp_path / "unfinished", finished=False)
    card = unfinished._repr_html_()
    assert "not finished" in card and "best epoch" not in card and "none yet" in card
    (unfinished.path / run_folder.CONFIG).write_text("{ not yaml")
    assert "not readable YAML" in Run(unfinished.path)._repr_html_()


def test_a_prediction_shows_its_label_probabilities_and_file() -> None:
    probabilities = {"cat": 0.1, BOLD_CLASS: 0.85, "fox": 0.05}
    card = Prediction("photos/<i>a</i>.jpg", BOLD_CLASS, 0.85, probabilities)._repr_html_()
    assert f"{ESCAPED_CLASS}: 85.0%" in card and "&lt;i&gt;a&lt;/i&gt;.jpg" in card and "<i>" not in card
    table = rows(card)
    assert ["file", "photos/<i>a</i>.jpg"] in table
    probabilities_shown = [row[:2] for row in table if len(row) == 3]  # label, probability, bar
    assert probabilities_shown == [[BOLD_CLASS, "85.0%"], ["cat", "10.0%"], ["fox", "5.0%"]]  # most probable first
    unreadable = Prediction("broken.jpg", error="cannot identify image file")._repr_html_()
    assert "unreadable" in unreadable and "cannot identify image file" in unreadable


def test_a_check_shows_counts_and_findings(images, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    images.tree(root / "train", {"cat": 3, BOLD_CLASS: 2})
    images.tree(root / "val", {"cat": 1, BOLD_CLASS: 1})
    (root / "train" / "cat" / "broken.png").write_bytes(b"not a picture")
    result = imgcls.check(root)
    assert isinstance(result, CheckResult) and not result.ok
    expected = check_dataset(root)
    assert {**result.as_dict(), "seconds": 0} == {**expected, "seconds": 0}  # the dict --json prints
    assert type(result.as_dict()) is dict
    card = result._repr_html_()
    assert "Data check: 8 images, must be fixed" in card
    assert ESCAPED_CLASS in card and BOLD_CLASS not in card
    table = rows(card)
    assert ["split", BOLD_CLASS, "cat", "total"] in table  # classes in folder-name order
    assert ["train", "2", "4", "6"] in table and ["val", "1", "1", "2"] in table  # 3 cats and the broken file
    assert "1 unreadable file(s)" in card and "broken.png" in card
    assert "leakage" in card  # the same tiny picture in train and val: byte-identical copies


def test_an_evaluation_shows_accuracy_per_class_and_confusion() -> None:
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    metrics = {
        "data": "val split of the run",
        **classification_metrics(probabilities, [0, 1, 1, 1], ["cat", BOLD_CLASS]),
    }
    card = EvaluationResult(metrics)._repr_html_()
    assert card == evaluation_card(metrics)
    assert "Evaluation on the val split of the run: accuracy 75.0%" in card
    assert ESCAPED_CLASS in card and BOLD_CLASS not in card
    table = rows(card)
    assert ["cat", "0.500", "1.000", "0.667", "1"] in table
    assert [BOLD_CLASS, "1.000", "0.667", "0.800", "3"] in table  # precision, recall, F1, support
    assert ["true \\ predicted", "cat", BOLD_CLASS] in table
    assert ["cat", "1", "0"] in table and [BOLD_CLASS, "1", "2"] in table  # one dog taken for a cat


def test_curves_are_a_figure_of_the_history(tmp_path: Path) -> None:
    run = written_run(tmp_path / "transfer")
    for figure in (run.show_curves(), imgcls.show_curves(run.path)):
        assert isinstance(figure, Figure) and len(figure.axes) == 2
        accuracy = [line.get_ydata().tolist() for line in figure.axes[0].get_lines()]
        assert [0.7, 0.9, 0.95] in accuracy and [0.8, 0.9, 0.89] in accuracy
    with pytest.raises(ImgclsError, match="no epoch has finished yet"):
        Run(tmp_path / "empty").show_curves()


def test_run_pictures_need_the_notebook_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = written_run(tmp_path / "transfer")
    monkeypatch.setattr(run_folder, "PICTURES", {})
    with pytest.raises(ImgclsError, match="imgcls.visual.notebook"):
        run.show_mistakes()
    monkeypatch.undo()
    assert imgcls.Run is Run and set(run_folder.PICTURES) == {"samples", "mistakes"}


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_real_run_shows_samples_mistakes_and_its_evaluation(tiny_runs) -> None:
    run = imgcls.Run.open(tiny_runs.transfer)
    samples = run.show_samples(count=4)
    assert isinstance(samples, Figure) and len([axis for axis in samples.axes if axis.images]) == 4
    assert isinstance(run.show_mistakes(), Figure)
    assert isinstance(imgcls.show_samples(tiny_runs.data, count=2, split="val"), Figure)
    evaluation = imgcls.evaluate(run)
    assert isinstance(evaluation, EvaluationResult) and evaluation["classes"] == ["cat", "dog"]
    assert f"accuracy {evaluation['accuracy']:.1%}" in evaluation._repr_html_()
