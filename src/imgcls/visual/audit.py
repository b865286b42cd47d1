"""Figures that audit a model and its labels: the most confident mistakes, the likely mislabelled images.

Pure drawing on results already computed (`evaluation.top_mistakes`, `suspects.find_suspects`):
photos as thumbnails, each captioned with its file, labels and probabilities (`grids.image_grid`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from imgcls.data.decode import BadImageError, load_image
from imgcls.evaluation import Mistake, Predictions
from imgcls.files import display_path
from imgcls.suspects import Suspect, SuspectReport
from imgcls.visual import grids

if TYPE_CHECKING:
    from matplotlib.figure import Figure

THUMBNAIL = 224  # pixels, longest side
COLUMNS = 4
NAME_CHARS = 24  # a caption line of a 2.6-inch tile at 9 pt holds about 30 characters
LABEL_CHARS = 14


def mistakes_figure(predicted: Predictions, found: Sequence[Mistake], path: Path) -> Path:
    return plot_mistakes(found, path, mistakes_title(predicted, found))


def mistakes_title(predicted: Predictions, found: Sequence[Mistake]) -> str:
    """How many mistakes are shown, of how many wrong, among how many images."""
    wrong = int((predicted.probs.argmax(1) != predicted.labels).sum())
    return (
        f"Most confident mistakes: {len(found)} of {wrong} wrong among {len(predicted.labels):,} images "
        f"({predicted.described}); probability of the predicted class"
    )


def suspects_figure(report: SuspectReport, shown: Sequence[Suspect], path: Path) -> Path:
    title = (
        f"Likely mislabelled: the {len(shown)} most suspicious of {report.data}; "
        f"probabilities out of fold ({report.folds} folds)"
    )
    return plot_suspects(shown, path, title)


def plot_mistakes(mistakes: Sequence[Mistake], path: Path, title: str) -> Path:
    return grids.save_figure(mistakes_grid(mistakes, title), path)


def mistakes_grid(mistakes: Sequence[Mistake], title: str) -> Figure:
    """The figure of `plot_mistakes` (for a notebook): each photo with its file, true and predicted class."""
    captions = [
        f"{short(m.path.name, NAME_CHARS)}\ntrue: {short(m.true_label)}\n"
        f"predicted: {short(m.predicted_label)} {m.probability:.1%}"
        for m in mistakes
    ]
    return _grid_figure([m.path for m in mistakes], captions, title)


def plot_suspects(suspects: Sequence[Suspect], path: Path, title: str) -> Path:
    captions = [
        f"{short(s.path.name, NAME_CHARS)} ({s.split})\nlabel {short(s.given_label)}: p = {s.given_probability:.1%}\n"
        f"model: {short(s.predicted_label)} {s.predicted_probability:.1%}"
        for s in suspects
    ]
    return _grid([s.path for s in suspects], captions, path, title)


def thumbnail(path: Path, side: int = THUMBNAIL) -> np.ndarray:
    """(h, w, 3) uint8, longest side `side`, EXIF orientation applied; a grey square when unreadable."""
    try:
        image = Image.fromarray(load_image(path))
    except BadImageError:
        return np.full((side, side, 3), 200, np.uint8)
    image.thumbnail((side, side))
    return np.asarray(image)


def short(text: str, limit: int = LABEL_CHARS) -> str:
    """`text` cut in the middle with an ellipsis when longer than `limit` (keeps both ends readable)."""
    text = display_path(text)
    if len(text) <= limit:
        return text
    tail = limit // 3
    return text[: limit - tail - 1] + "…" + text[-tail:]


def _grid(paths: Sequence[Path], captions: list[str], path: Path, title: str) -> Path:
    return grids.save_figure(_grid_figure(paths, captions, title), path)


def _grid_figure(paths: Sequence[Path], captions: list[str], title: str) -> Figure:
    columns = max(1, min(COLUMNS, len(paths)))
    wrapped = "\n".join(textwrap.wrap(title, width=int(11 * 2.6 * columns)))  # ~11 characters per inch at 11 pt
    return grids.image_grid_figure([thumbnail(p) for p in paths], captions, wrapped, columns=columns)
