"""imgcls in a Jupyter notebook: the data check and the evaluation as cards, a run's photos as figures.

`imgcls.check(...)` and `imgcls.evaluate(...)` return the dicts that `imgcls data check --json` and
`imgcls evaluate --json` print, typed (`CheckResult`, `EvaluationResult`) so that a notebook shows
them as HTML. `show_samples` and `show_mistakes` return matplotlib figures: a notebook shows a figure
where a cell returns it, a script may save it, and nothing blocks.

Importing this module also gives `Run.show_samples` and `Run.show_mistakes` their drawing
(`imgcls.run.folder.provide_pictures`): they decode, predict and draw in layers above the run,
which the run layer may not import. `Run.show_curves` needs only `imgcls.plots`, below it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgcls.run import Run
from imgcls.run.folder import provide_pictures
from imgcls.run.html import Html, bullets, card, count_row, fields, join, link, percent, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("imgcls")
ERROR_COLOUR, WARNING_COLOUR = "#cf222e", "#9a6700"


class Result(dict):
    """A command's JSON result as the Python API returns it: the same dict, with a card for notebooks."""

    def as_dict(self) -> dict[str, Any]:
        """A plain dict, as `--json` prints it."""
        return dict(self)


class CheckResult(Result):
    """The report of `imgcls data check`."""

    @property
    def ok(self) -> bool:
        """Nothing must be fixed (no leakage, label conflict or unreadable file)."""
        return bool(self.get("ok"))

    def _repr_html_(self) -> str:
        return check_card(self)


class EvaluationResult(Result):
    """The metrics of `imgcls evaluate`."""

    def _repr_html_(self) -> str:
        return evaluation_card(self)


# --------------------------------------------------------------------------- cards


def check_card(report: dict) -> Html:
    """Counts per split and class, formats and sizes, then the findings: errors, warnings, notes."""
    classes, splits = report.get("classes", []), report.get("splits", {})
    counts = [count_row(split, info["counts"], classes) for split, info in splits.items()]
    errors = list(report.get("errors", []))
    warnings = [problem for problem in report.get("problems", []) if problem not in errors]
    unreadable = [f"{item['path']}: {item['reason']}" for item in report.get("unreadable", [])]
    formats = report.get("formats", {})
    rows = [
        ("folder", link(report["root"]) if report.get("root") else None),
        ("classes", join(classes)),
        ("images", table(counts, ("split", *classes, "total"), row_headers=True)),
        ("formats", join(f"{name} {count:,}" for name, count in formats.items()) if formats else None),
        ("sizes", _sizes(report.get("sizes") or {})),
        ("errors", bullets(errors, colour=ERROR_COLOUR)),
        ("warnings", bullets(warnings, colour=WARNING_COLOUR)),
        ("unreadable", bullets(unreadable)),
        ("notes", bullets(report.get("notes", []))),
    ]
    verdict = "ok" if report.get("ok") else "must be fixed"
    return card(f"Data check: {report.get('n_images', 0):,} images, {verdict}", fields(rows), "check")


def _sizes(sizes: dict) -> str | None:
    """Median width and height with their ranges, and the bytes in all."""

    def span(name: str) -> str:
        stats = sizes.get(name) or {}
        return f"{name} {stats.get('median')} px ({stats.get('min')}–{stats.get('max')})"

    if not sizes.get("width", {}).get("median"):
        return None
    total = (sizes.get("bytes") or {}).get("total") or 0
    return f"{span('width')}, {span('height')}; {total / 1e6:,.1f} MB in all"


def evaluation_card(metrics: dict) -> Html:
    """Accuracy, loss and ROC AUC, the per-class table, the confusion matrix and the figures written."""
    classes = metrics.get("classes", [])
    per_class = [
        (name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", f"{row['support']:,}")
        for name, row in metrics.get("per_class", {}).items()
    ]
    matrix = metrics.get("confusion_matrix", [])
    confusion = [(name, *(f"{n:,}" for n in row)) for name, row in zip(classes, matrix, strict=True)]
    figures = [(label, metrics.get(key)) for label, key in (("confusion matrix", "confusion_png"), ("ROC", "roc_png"))]
    skipped = [f"{item['path']}: {item['reason']}" for item in metrics.get("skipped", [])]
    mirrored = ", each averaged with its mirror image (flip TTA)" if metrics.get("flip_tta") else ""
    if metrics.get("eval_crops", [1.0]) != [1.0]:
        mirrored += f", on centre crops {metrics['eval_crops']}"
    rows = [
        ("images", f"{metrics.get('n_images', 0):,}{mirrored}"),
        ("loss", _number(metrics.get("loss"))),
        ("ROC AUC", _number(metrics.get("roc_auc"))),
        ("macro F1", _number(metrics.get("macro_f1"), 3)),
        ("per class", table(per_class, ("class", "precision", "recall", "F1", "support"))),
        ("confusion matrix", table(confusion, ("true \\ predicted", *classes), row_headers=True)),
        ("unreadable", bullets(skipped)),
        ("figures", join([link(path, label) for label, path in figures if path], " · ") or None),
    ]
    title = f"Evaluation on the {metrics.get('data', 'data')}: accuracy {percent(metrics.get('accuracy'))}"
    return card(title, fields(rows), "evaluation")


def _number(value: float | None, digits: int = 4) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- figures


def show_curves(run: Run | str | Path) -> Figure:
    """Training and validation accuracy and loss per epoch (`Run.show_curves`)."""
    return Run.open(run).show_curves()


def show_samples(source: Run | str | Path, count: int = 15, split: str = "train", seed: int = 0) -> Figure:
    """`count` photos of one split, classes in turn, each with its class and file: of a run's own split
    (a `Run`), or of a data folder or built-in name before any training (as `imgcls show samples`)."""
    from imgcls.data.discover import discover
    from imgcls.visual.show import samples_figure

    dataset = source.dataset if isinstance(source, Run) else discover(source, seed=seed)
    figure, unreadable = samples_figure(dataset, count, split, seed)
    for error in unreadable:
        log.warning("%s", error)
    return figure


def show_mistakes(run: Run | str | Path, count: int = 16, data: str | Path | None = None) -> Figure:
    """The `count` most confident wrong predictions on the run's held-out split (or on other DATA),
    each with its file, true and predicted class: what `imgcls mistakes` writes to mistakes.png."""
    from imgcls.evaluation import predict_run, top_mistakes
    from imgcls.visual.audit import mistakes_grid, mistakes_title

    predicted = predict_run(run, data, cached_features=True)
    found = top_mistakes(predicted, count)
    if not found:
        return _message(f"No mistakes: all {len(predicted.labels):,} images right ({predicted.described})")
    return mistakes_grid(found, mistakes_title(predicted, found))


def _message(text: str) -> Figure:
    """A figure of one line of text, so that a show_* function always returns a figure."""
    from imgcls.plots import plt  # pyplot with the backend imgcls.plots chose

    figure = plt.figure(figsize=(8, 0.8))
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    plt.close(figure)
    return figure


provide_pictures(samples=show_samples, mistakes=show_mistakes)
