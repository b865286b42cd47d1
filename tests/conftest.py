"""Shared test helpers: small synthetic images written to disk in any Pillow mode and format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# Four clearly different quadrant colours: any rotation or flip moves them to other corners.
QUADRANTS = {"tl": (220, 30, 30), "tr": (30, 200, 40), "bl": (30, 40, 210), "br": (240, 220, 30)}


def pattern(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: four coloured quadrants plus a gentle gradient (JPEG-friendly, shows rotations)."""
    array = np.empty((height, width, 3), dtype=np.float64)
    half_h, half_w = height // 2, width // 2
    array[:half_h, :half_w] = QUADRANTS["tl"]
    array[:half_h, half_w:] = QUADRANTS["tr"]
    array[half_h:, :half_w] = QUADRANTS["bl"]
    array[half_h:, half_w:] = QUADRANTS["br"]
    ramp = np.linspace(-20, 20, width)[None, :, None] + np.linspace(-10, 10, height)[:, None, None]
    return np.clip(array + ramp, 0, 255).astype(np.uint8)


def make_pil(mode: str = "RGB", size: tuple[int, int] = (32, 24)) -> Image.Image:
    """A Pillow image of `size` (width, height) in `mode`, derived from `pattern`."""
    width, height = size
    rgb = Image.fromarray(pattern(width, height), "RGB")
    if mode == "I;16":
        ramp = np.linspace(0, 65535, width * height).reshape(height, width).astype(np.uint16)
        return Image.fromarray(ramp)
    if mode == "RGBA":
        alpha = np.zeros((height, width), dtype=np.uint8)
        alpha[:, width // 2 :] = 255  # left half fully transparent, right half opaque
        return Image.fromarray(np.dstack([pattern(width, height), alpha]), "RGBA")
    if mode == "LA":
        return make_pil("RGBA", size).convert("LA")
    return rgb.convert(mode)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (32, 24), **save_kwargs) -> Path:
    """Write a `make_pil` image to `path` (format from the suffix unless `format=` is given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_pil(mode, size).save(path, **save_kwargs)
    return path


def write_tree(root: Path, spec: dict[str, int], suffix: str = ".png") -> dict[str, list[Path]]:
    """Create `root/<class>/img_<i><suffix>` tiny images, `spec` = {class: count}; returns the paths."""
    made: dict[str, list[Path]] = {}
    for name, count in spec.items():
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        made[name] = [write_image(folder / f"img_{i:03d}{suffix}", size=(8, 8)) for i in range(count)]
    return made


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """`make_image("a/b.png", mode="P", size=(w, h), **save_kwargs)` writes under tmp_path."""

    def make(name: str, mode: str = "RGB", size: tuple[int, int] = (32, 24), **save_kwargs) -> Path:
        return write_image(tmp_path / name, mode, size, **save_kwargs)

    return make


@pytest.fixture
def images() -> SimpleNamespace:
    """The helpers above for test modules (conftest is not imported directly):
    `images.pattern(w, h)`, `images.make_pil(mode, size)`, `images.write(path, mode, size, **kw)`,
    `images.tree(root, {"cats": 3, "dogs": 2})`, `images.QUADRANTS`."""
    return SimpleNamespace(
        pattern=pattern, make_pil=make_pil, write=write_image, tree=write_tree, QUADRANTS=QUADRANTS
    )


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $IMGCLS_CACHE at a fresh temporary folder so no test touches ~/.cache."""
    folder = tmp_path / "imgcls-cache"
    monkeypatch.setenv("IMGCLS_CACHE", str(folder))
    return folder
