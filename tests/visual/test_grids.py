"""`imgcls show samples|augment|activations` and `imgcls explain` on small real runs and photos.

Each command runs in-process through `CliRunner`; the tests read back the PNG files it prints
(valid PNG, the figure's size), and check what was drawn by spying on the drawing functions of
`imgcls.visual.grids`: the augmented copies really are the photo transformed as asked, one feature
map per channel, nothing existing overwritten.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from imgcls.cli import app
from imgcls.data.decode import load_image
from imgcls.errors import ImgclsError
from imgcls.inference import Classifier
from imgcls.recipes import get_recipe
from imgcls.visual import grids

pytestmark = [pytest.mark.slow, pytest.mark.shared_data, pytest.mark.usefixtures("one_thread")]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(isolated_cache):
    """No test touches ~/.cache."""


def invoke(*args) -> tuple[object, list[Path]]:
    result = runner.invoke(app, [str(a) for a in args])
    return result, [Path(line) for line in result.stdout.splitlines() if line.endswith(".png")]


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        return image.size


def spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple]:
    """Record the arguments of `grids.<name>` and still draw."""
    calls: list[tuple] = []
    real = getattr(grids, name)

    def recorded(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(grids, name, recorded)
    return calls


def photos(tiny_runs, split: str = "val") -> list[Path]:
    return sorted((tiny_runs.data / split).rglob("*.jpg"))


# --------------------------------------------------------------------------- show samples


def test_samples_grid_shows_every_class_and_never_overwrites(tiny_runs, tmp_path, monkeypatch):
    drawn = spy(monkeypatch, "image_grid")
    result, paths = invoke("show", "samples", tiny_runs.data, "--out", tmp_path, "--count", 6)
    assert result.exit_code == 0, result.output
    assert paths == [tmp_path / "samples-train.png"]
    assert png_size(paths[0]) == (1300, 670)  # 5 columns x 2 rows
    images, captions = drawn[0][0], drawn[0][1]
    assert len(images) == len(captions) == 6
    assert [c.split("\n")[0] for c in captions] == ["cat", "dog"] * 3  # classes in turn
    for image, caption in zip(images, captions, strict=True):
        label, name = caption.split("\n")
        assert (tiny_runs.data / "train" / label / name).is_file() and max(image.shape[:2]) <= 256
    before = paths[0].read_bytes()
    again, second = invoke("show", "samples", tiny_runs.data, "--out", tmp_path, "--count", 6, "--seed", 1)
    assert again.exit_code == 0 and second == [tmp_path / "samples-train-2.png"]
    assert paths[0].read_bytes() == before


# --------------------------------------------------------------------------- show augment


def test_augment_shows_the_photo_transformed_as_asked(tiny_runs, tmp_path, monkeypatch):
    grid, rows = spy(monkeypatch, "image_grid"), spy(monkeypatch, "operation_rows")
    photo = photos(tiny_runs, "train")[0]
    result, paths = invoke("show", "augment", photo, "--aug", "horizontal_flip=true", "--count", 8, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert paths == [tmp_path / "augment.png", tmp_path / "augment-tf-image.png"]
    assert png_size(paths[0]) == (1300, 670) and png_size(paths[1]) == (1370, 1235)
    original = load_image(photo, (150, 150))  # no recipe: the seeds' 150 px
    images = grid[0][0]
    assert len(images) == 9 and np.array_equal(images[0], original)
    flipped = [np.array_equal(i, original[:, ::-1]) for i in images[1:]]
    kept = [np.array_equal(i, original) for i in images[1:]]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    operations = dict(rows[0][0])
    assert len(operations) == 5 and all(len(images) == 5 for images in operations.values())
    (crop_name,) = [name for name in operations if "random_crop" in name]
    for crop in operations[crop_name][1:]:
        assert crop.shape == (100, 100, 3) and any(
            np.array_equal(original[top : top + 100, left : left + 100], crop)
            for top in range(51)
            for left in range(51)
        )
    (brightness_name,) = [name for name in operations if "random_brightness" in name]
    for brighter in operations[brightness_name][1:]:
        change = brighter.astype(int) - original
        unclipped = (brighter > 0) & (brighter < 255)
        assert np.ptp(change[unclipped]) <= 1  # one delta added to every pixel (tf.image semantics)


def test_augment_follows_a_recipe_and_rejects_one_without_augmentation(tiny_runs, tmp_path, monkeypatch):
    grid = spy(monkeypatch, "image_grid")
    result, paths = invoke("show", "augment", tiny_runs.data, "--recipe", "scratch", "--count", 2, "--out", tmp_path)
    assert result.exit_code == 0, result.output and len(paths) == 2
    size = get_recipe("scratch").image_size
    assert grid[0][0][0].shape == (size, size, 3)  # the scratch recipe's size
    assert "recipe scratch" in grid[0][3]
    result, _ = invoke("show", "augment", tiny_runs.data, "--recipe", "seed-basic-cnn", "--out", tmp_path)
    assert isinstance(result.exception, ImgclsError) and "has no augmentation" in str(result.exception)
    result, _ = invoke("show", "augment", tiny_runs.data, "--aug", "rotaton_range=10", "--out", tmp_path)
    assert isinstance(result.exception, ImgclsError) and "rotation_range" in str(result.exception)


# --------------------------------------------------------------------------- show activations


def test_activations_one_png_per_layer_one_map_per_channel(tiny_runs, tmp_path, monkeypatch):
    drawn = spy(monkeypatch, "feature_map_grid")
    photo = photos(tiny_runs)[0]
    result, paths = invoke("show", "activations", tiny_runs.seed_cnn, photo, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    names = ["01-net.0", "02-net.1", "03-net.3", "04-net.4", "05-net.6", "06-net.7"]
    assert paths == [tmp_path / photo.stem / f"{name}.png" for name in names]
    model = Classifier.load(tiny_runs.seed_cnn, engine="torch").model
    modules = dict(model.named_modules())
    for path, (maps, _, title) in zip(paths, drawn, strict=True):
        width, height = png_size(path)
        assert 450 <= width <= 1400 and 200 <= height <= 1100
        layer = modules[path.stem.split("-", 1)[1]]
        expected = layer.out_channels if isinstance(layer, nn.Conv2d) else maps.shape[0]
        assert maps.shape[0] == expected and f"all {expected} maps" in title
        mosaic = grids.feature_mosaic(maps)
        assert count_tiles(mosaic) == expected
    assert [maps.shape[0] for maps, *_ in drawn] == [16, 16, 32, 32, 64, 64]


def test_activations_cap_wide_layers_and_pick_layers(tiny_runs, tmp_path, monkeypatch):
    drawn = spy(monkeypatch, "feature_map_grid")
    photo = photos(tiny_runs)[1]
    args = ("show", "activations", tiny_runs.seed_cnn, photo, "--out", tmp_path)
    result, paths = invoke(*args, "--layers", "net.6", "--layers", "2", "--max-maps", 20)
    assert result.exit_code == 0, result.output
    assert [p.name for p in paths] == ["02-net.1.png", "05-net.6.png"]
    assert [d[0].shape[0] for d in drawn] == [16, 20]
    assert "first 20 of 64 maps" in drawn[1][2]
    result, _ = invoke(*args, "--layers", "fc*")
    assert isinstance(result.exception, ImgclsError) and "no convolution or pooling layer" in str(result.exception)


def count_tiles(mosaic: np.ndarray) -> int:
    """Maps in a mosaic: filled pixels whose upper and left neighbours are gaps start a tile."""
    filled = ~np.isnan(mosaic)
    above = np.pad(filled, ((1, 0), (0, 0)))[:-1]
    left = np.pad(filled, ((0, 0), (1, 0)))[:, :-1]
    return int((filled & ~above & ~left).sum())


def test_feature_mosaic_tiles_in_reading_order():
    maps = np.random.default_rng(0).normal(size=(11, 5, 7)).astype(np.float32)
    mosaic = grids.feature_mosaic(maps, columns=4)
    assert mosaic.shape == (3 * 5 + 2, 4 * 7 + 3)  # 3 rows x 4 columns, 1-pixel gaps
    assert count_tiles(mosaic) == 11
    standardised = mosaic[6:11, 8:15]  # row 1, column 1: map 5
    assert np.allclose(standardised, np.clip((maps[5] - maps[5].mean()) / maps[5].std() * 64 + 128, 0, 255))


# --------------------------------------------------------------------------- explain


def test_explain_one_png_per_image_and_reports_unreadable_files(tiny_runs, tmp_path, monkeypatch):
    drawn = spy(monkeypatch, "explanation_panels")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a photo")
    chosen = photos(tiny_runs)[:2]
    result, paths = invoke("explain", tiny_runs.seed_cnn, *chosen, bad, "--out", tmp_path / "cams")
    assert result.exit_code == 1, result.output
    assert "bad.jpg" in result.output and "not an image" in result.output
    assert paths == [tmp_path / "cams" / f"gradcam-{p.stem}.png" for p in chosen]
    assert all(png_size(p) == (1150, 430) for p in paths)
    classifier = Classifier.load(tiny_runs.seed_cnn, engine="torch")
    for photo, (pixels, heatmap, overlay, _, title) in zip(chosen, drawn, strict=True):
        prediction = classifier.predict(photo)[0]
        assert pixels.shape == (64, 64, 3) and heatmap.shape == (64, 64) and overlay.shape == (64, 64, 3)
        assert f"predicted {prediction.label} {prediction.probability:.1%}" in title
        assert f"(in folder {photo.parent.name})" in title


def test_explain_grid_and_class_choice_on_a_transfer_run(tiny_runs, tmp_path, monkeypatch):
    drawn = spy(monkeypatch, "explanation_grid")
    chosen = photos(tiny_runs)[:5]
    result, paths = invoke("explain", tiny_runs.transfer, *chosen, "--grid", "--class", "dog", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert paths == [tmp_path / "gradcam-grid.png"] and png_size(paths[0]) == (1040, 670)  # 4 columns x 2 rows
    overlays, captions, _, title = drawn[0]
    assert len(overlays) == 5 and all(o.shape == (64, 64, 3) for o in overlays)
    assert all("class dog" in caption for caption in captions) and "class dog" in title
    result, _ = invoke("explain", tiny_runs.transfer, chosen[0], "--class", "horse", "--out", tmp_path)
    assert isinstance(result.exception, ImgclsError) and "cat, dog" in str(result.exception)


def test_explain_writes_into_the_run_folder_by_default(tiny_runs):
    photo = photos(tiny_runs)[-1]
    result, paths = invoke("explain", tiny_runs.seed_cnn, photo)
    assert result.exit_code == 0, result.output
    assert len(paths) == 1 and paths[0].parent == tiny_runs.seed_cnn / "explain" and paths[0].is_file()
