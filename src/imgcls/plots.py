"""Figures of a run: training curves (like the seeds' plots), confusion matrix, ROC; each saved atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from imgcls.progress import in_notebook

if not in_notebook():  # a notebook keeps its backend (inline), which shows the figures imgcls returns
    matplotlib.use("Agg")  # the one place imgcls chooses it: visual/ draws with this module's pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from imgcls.files import atomic_path  # noqa: E402


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> Path:
    """`figure` as a PNG at `path`, written atomically, then closed to pyplot."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")
    plt.close(figure)
    return path


def plot_curves(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Accuracy and loss, training vs validation, side by side (seeds 003/004)."""
    return save_figure(curves_figure(history, title), path)


def curves_figure(history: list[dict[str, float]], title: str = "") -> Figure:
    """The figure of `plot_curves`, closed to pyplot: a notebook shows it once, where it is returned."""
    epochs = list(range(1, len(history) + 1))  # stages (head, fine-tune) follow one another
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric, label in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        for key, name in ((metric, "Training"), (f"val_{metric}", "Validation")):
            # epochs without validation (val_every, progressive resizing) have no val figures: the line joins the rest
            shown = [(epoch, row[key]) for epoch, row in zip(epochs, history, strict=True) if key in row]
            xs, ys = zip(*shown, strict=True) if shown else ((), ())
            axis.plot(xs, ys, marker="o", markersize=3, label=f"{name} {label.lower()}")
        stages = [row.get("stage", "train") for row in history]
        for index in range(1, len(stages)):
            if stages[index] != stages[index - 1]:
                axis.axvline(index + 0.5, color="grey", linestyle=":", label=f"start of {stages[index]}")
        axis.set_title(f"Training and validation {label.lower()}")
        axis.set_xlabel("Epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole, counted from 1
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right" if metric == "accuracy" else "upper right")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str = "Confusion matrix") -> Path:
    counts = np.asarray(matrix)
    side = max(4.5, 0.55 * len(classes) + 2.5)
    figure, axis = plt.subplots(figsize=(side + 1, side))
    image = axis.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="Images")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("Predicted class")
    axis.set_ylabel("True class")
    axis.set_title(title)
    threshold = counts.max() / 2 if counts.size else 0
    for (row, column), value in np.ndenumerate(counts):
        axis.text(
            column,
            row,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
            fontsize=9,
        )
    figure.tight_layout()
    return save_figure(figure, path)


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, positive: str, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(fpr, tpr, label=f"ROC (AUC = {auc:.3f})")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="Chance")
    axis.set_xlabel("False positive rate")
    axis.set_ylabel(f"True positive rate ({positive})")
    axis.set_title("ROC curve")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_lr_find(
    lrs: list[float], losses: list[float | None], chosen: float, suggested: bool, path: Path, title: str
) -> Path:
    """The learning-rate finder's smoothed loss against the learning rate (log scale), with the rate
    chosen marked: Lightning's suggestion as a dot on the curve, else the recipe's rate kept as a line."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    losses_shown = [loss if loss is not None and np.isfinite(loss) else np.nan for loss in losses]
    axis.plot(lrs, losses_shown, label="Smoothed training loss")
    if suggested and lrs:
        nearest = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - np.log(chosen))))
        axis.plot(
            lrs[nearest], losses_shown[nearest], "o", color="red", markersize=8, label=f"Suggested lr {chosen:.2e}"
        )
    else:
        axis.axvline(chosen, color="grey", linestyle="--", label=f"Recipe's lr {chosen:.2e} (no suggestion)")
    axis.set_xscale("log")
    axis.set_xlabel("Learning rate")
    axis.set_ylabel("Loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left")
    figure.tight_layout()
    return save_figure(figure, path)
