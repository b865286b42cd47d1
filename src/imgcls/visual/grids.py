"""Figures made of pictures: sample grids, augmentation previews, feature maps, Grad-CAM.

Pure drawing: every function takes arrays and captions already computed (by `imgcls.explain`,
`imgcls.augment`, `visual.show`) and writes one PNG, returning its path; `image_grid_figure`
returns the figure itself, for a notebook. Images are (H, W, C) uint8 arrays, C = 1 or 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from imgcls import plots
from imgcls.plots import plt  # pyplot with the backend imgcls.plots chose

DPI = 100


def image_grid(images: Sequence[np.ndarray], captions: Sequence[str], path: Path, title: str, columns: int = 5) -> Path:
    """Images in rows of `columns`, each with its caption above it (the seeds' show_batch/plotImages)."""
    return save_figure(image_grid_figure(images, captions, title, columns), path)


def image_grid_figure(images: Sequence[np.ndarray], captions: Sequence[str], title: str, columns: int = 5) -> Figure:
    """The figure of `image_grid`, closed to pyplot: a notebook shows it once, where it is returned."""
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 3.1 * rows + 0.5), squeeze=False, layout="constrained"
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions, strict=False):
        _show(axis, image)
        axis.set_title(caption, fontsize=9)
    figure.suptitle(title, fontsize=11)
    plt.close(figure)
    return figure


def operation_rows(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: Path, title: str, first_caption: str = "original"
) -> Path:
    """One row per operation (its name at the left), each showing the same photo transformed several times."""
    columns = max(len(images) for _, images in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(2.3 * columns + 2.2, 2.35 * len(rows) + 0.6), layout="constrained"
    )
    axes = np.asarray(axes).reshape(len(rows), columns)
    for row, (name, images) in enumerate(rows):
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column < len(images):
                _show(axis, images[column], keep_frame=True)
                if row == 0:
                    axis.set_title(first_caption if column == 0 else f"sample {column}", fontsize=9)
        axes[row, 0].set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center", labelpad=8)
    return _save(figure, path, title)


def feature_mosaic(maps: np.ndarray, columns: int = 8) -> np.ndarray:
    """(N, h, w) maps -> one (rows*(h+gap)-gap, columns*(w+gap)-gap) picture, tiles in reading order,
    each standardised on its own like seed 000 (mean 128, 64 per standard deviation; flat maps 0);
    gaps and unused tiles are NaN (drawn white)."""
    count, height, width = maps.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    gap = _gap(height, width)
    mosaic = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap), np.nan, dtype=np.float32)
    for index in range(count):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        mosaic[top : top + height, left : left + width] = _standardise(maps[index])
    return mosaic


def feature_map_grid(maps: np.ndarray, path: Path, title: str, columns: int = 8) -> Path:
    """(N, h, w) feature maps as one `feature_mosaic`; ticks give the channel numbers."""
    count, height, width = maps.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    gap = _gap(height, width)
    mosaic = feature_mosaic(maps, columns)
    scale = min(11.0 / columns, 9.0 / rows, 1.6)  # inches per map
    size = (max(columns * scale, 4.5) + 1.2, rows * scale * height / width + 1.3)
    figure, axis = plt.subplots(figsize=size, layout="constrained")
    colours = plt.get_cmap("viridis").with_extremes(bad="white")
    image = axis.imshow(mosaic, cmap=colours, vmin=0, vmax=255, interpolation="nearest")
    axis.set_xticks([c * (width + gap) + (width - 1) / 2 for c in range(columns)], [str(c) for c in range(columns)])
    axis.set_yticks(
        [r * (height + gap) + (height - 1) / 2 for r in range(rows)], [str(r * columns) for r in range(rows)]
    )
    axis.tick_params(length=0, labelsize=8)
    axis.set_xlabel("channel = row start + column")
    axis.set_ylabel("row start (channel)")
    for spine in axis.spines.values():
        spine.set_visible(False)
    colorbar = figure.colorbar(image, cax=axis.inset_axes((1.015, 0.0, 0.025, 1.0)))  # as tall as the maps
    colorbar.set_label("activation (standardised per map)", fontsize=8)
    colorbar.set_ticks([0, 128, 255], labels=["-2σ", "mean", "+2σ"], fontsize=8)
    return _save(figure, path, title)


def explanation_panels(pixels: np.ndarray, heatmap: np.ndarray, overlay: np.ndarray, path: Path, title: str) -> Path:
    """Input as the model saw it | Grad-CAM heatmap (with its scale) | the two blended."""
    figure, axes = plt.subplots(1, 3, figsize=(11.5, 4.3), layout="constrained")
    size = f"{pixels.shape[1]}×{pixels.shape[0]} px"
    _show(axes[0], pixels)
    axes[0].set_title(f"Model input ({size})", fontsize=10)
    image = axes[1].imshow(heatmap, cmap="jet", vmin=0, vmax=1)
    axes[1].axis("off")
    axes[1].set_title("Grad-CAM heatmap", fontsize=10)
    colorbar = figure.colorbar(image, ax=axes[1], fraction=0.046, pad=0.03)
    colorbar.set_label("relative relevance to the class (0 = least, 1 = most)", fontsize=8)
    _show(axes[2], overlay)
    axes[2].set_title("Overlay", fontsize=10)
    return _save(figure, path, title)


def explanation_grid(overlays: Sequence[np.ndarray], captions: Sequence[str], path: Path, title: str) -> Path:
    """Several Grad-CAM overlays at once, each captioned with its file and prediction."""
    return image_grid(overlays, captions, path, title, columns=4)


# --------------------------------------------------------------------------- helpers


def _show(axis, image: np.ndarray, keep_frame: bool = False) -> None:
    if image.ndim == 3 and image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        axis.imshow(image)
    if not keep_frame:
        axis.axis("off")


def _gap(height: int, width: int) -> int:
    """Pixels between feature maps: thin for small maps, so 2x2 maps are not mostly gap."""
    return max(1, round(min(height, width) / 16))


def _standardise(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float32)
    spread = values.std()
    if spread <= 0:
        return np.zeros_like(values)
    return np.clip((values - values.mean()) / spread * 64 + 128, 0, 255)


def save_figure(figure: Figure, path: Path) -> Path:
    """`figure` as a PNG at `path`, written atomically (at this module's DPI), then closed."""
    return plots.save_figure(figure, path, DPI)


def _save(figure: Figure, path: Path, title: str) -> Path:
    figure.suptitle(title, fontsize=11)
    return save_figure(figure, path)
