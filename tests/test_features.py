"""Cached backbone features: one (V, 1280) row per image with EfficientNet-Lite0 (ImageNet weights),
read back from disk by a fresh extractor, extended view by view, deterministic per image and view,
recomputed only for changed files, separated by every setting that changes them, tolerant of bad
files, and the same through ONNX Runtime and PyTorch.

Everything runs at 64x64 px on a handful of images to stay cheap on a CPU."""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.augment import Augment
from imgcls.data.cache import DecodeSettings
from imgcls.data.download import cache_dir
from imgcls.features import FeatureExtractor, weights_fingerprint
from imgcls.models.backbones import create_backbone, load_pretrained

pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")

SIZE = 64
DIM = 1280
MEAN = STD = (0.5, 0.5, 0.5)  # the `transfer` recipe's normalisation for Lite0
AUGMENT = Augment(random_resized_crop=(0.5, 1.0), horizontal_flip=True)
# Features are cached as float16: two engines whose float32 outputs differ by ~1e-5 can round to
# neighbouring float16 values, one step = 2**-10 of the value (0.004 for values in [4, 6]).
FLOAT16_STEP = {"atol": 1e-3, "rtol": 2e-3}


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    backbone, info = create_backbone("efficientnet_lite0")
    assert info.feature_shape == (DIM,)
    source = load_pretrained("efficientnet_lite0", backbone, "imagenet")
    assert "ImageNet" in source
    return backbone.eval()


def make_extractor(
    backbone: torch.nn.Module,
    size: int = SIZE,
    augment: Augment = AUGMENT,
    engine: str = "torch",
    policy: str = "crop",
    mean: tuple[float, ...] = MEAN,
) -> FeatureExtractor:
    return FeatureExtractor(backbone, DecodeSettings((size, size), 3, policy), mean, STD, augment, engine=engine)


def write_photo(path: Path, seed: int, size: tuple[int, int] = (80, 60)) -> Path:
    """A distinct, textured RGB image (smooth colour field + blobs), different for every seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    channels = [np.sin(x * rng.uniform(3, 12) + rng.uniform(0, 6)) * np.cos(y * rng.uniform(3, 12)) for _ in range(3)]
    array = (np.stack(channels, -1) * 100 + 128 + rng.normal(0, 12, (height, width, 3))).clip(0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), "RGB").save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    return [write_photo(tmp_path / "photos" / f"img_{i}.png", seed=i) for i in range(4)]


LABELS = [0, 0, 1, 1]


class Spy:
    """Records what an extractor computes: (file name, view) pairs prepared and rows run through the backbone."""

    def __init__(self, extractor: FeatureExtractor, fail: bool = False):
        self.views: list[tuple[str, int]] = []
        self.rows = 0
        forward, view = extractor.forward, extractor._view

        def counted_forward(batch: torch.Tensor) -> torch.Tensor:
            if fail:
                raise AssertionError("the backbone ran although every feature was in the disk cache")
            self.rows += len(batch)
            return forward(batch)

        def recorded_view(path: Path, index: int) -> torch.Tensor:
            self.views.append((path.name, index))
            return view(path, index)

        extractor.forward = counted_forward
        extractor._view = recorded_view


def test_features_have_one_row_per_image_and_view(lite0, photos):
    extractor = make_extractor(lite0)
    spy = Spy(extractor)
    result = extractor.extract(photos, LABELS, views=3)
    assert result.features.shape == (4, 3, DIM)
    assert result.features.dtype == torch.float32
    assert torch.isfinite(result.features).all()
    assert result.labels.tolist() == LABELS
    assert result.paths == photos
    assert result.skipped == []
    assert spy.rows == 4 * 3
    assert sorted(spy.views) == sorted((p.name, v) for p in photos for v in range(3))
    assert extractor.store.folder == cache_dir() / "features" / extractor.tag
    assert len(list(extractor.store.folder.rglob("*.npy"))) == 4  # one cache file per image, all views inside


def test_a_fresh_extractor_reads_the_disk_cache(lite0, photos):
    first = make_extractor(lite0).extract(photos, LABELS, views=2)
    again = make_extractor(lite0)
    spy = Spy(again, fail=True)  # any backbone call fails the test
    second = again.extract(photos, LABELS, views=2)
    assert spy.views == []  # not even decoded or augmented
    assert torch.equal(second.features, first.features)
    assert second.labels.tolist() == LABELS and second.paths == photos


def test_more_views_compute_only_the_missing_ones(lite0, photos):
    two = make_extractor(lite0).extract(photos, LABELS, views=2)

    extractor = make_extractor(lite0)
    spy = Spy(extractor)
    four = extractor.extract(photos, LABELS, views=4)
    assert sorted(spy.views) == sorted((p.name, v) for p in photos for v in (2, 3))
    assert spy.rows == 4 * 2
    assert four.features.shape == (4, 4, DIM)
    assert torch.equal(four.features[:, :2], two.features)  # existing views unchanged

    fewer = make_extractor(lite0)
    spy = Spy(fewer, fail=True)
    three = fewer.extract(photos, LABELS, views=3)  # all cached: the first 3 of the 4 stored views
    assert torch.equal(three.features, four.features[:, :3])

    # a fresh computation of all four views gives the same tensors as the one built in two steps
    scratch = make_extractor(lite0)
    scratch.store.folder = scratch.store.folder.with_name(scratch.store.folder.name + "-scratch")
    assert torch.allclose(scratch.extract(photos, LABELS, views=4).features, four.features, **FLOAT16_STEP)


def test_views_are_deterministic_and_augmented(lite0, photos, tmp_path, monkeypatch):
    runs = []
    for name in ("run-a", "run-b"):
        monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / name))  # nothing shared between the two runs
        extractor = make_extractor(lite0)
        runs.append((extractor, extractor.extract(photos, LABELS, views=3)))
    (first, a), (second, b) = runs
    assert first.store.folder != second.store.folder
    assert torch.equal(a.features, b.features)  # view v of an image is the same in every run

    for path in photos:
        pixels = [first._view(path, v) for v in range(3)]
        for v in range(3):
            assert torch.equal(second._view(path, v), pixels[v])
        assert pixels[0].shape == pixels[1].shape == (3, SIZE, SIZE)
        # one view may by chance keep the whole photo unflipped (a crop of scale ~1, no flip: about 1 in
        # 100 at this size, and the seed follows the file's mtime); both views hardly ever
        assert not (torch.equal(pixels[1], pixels[0]) and torch.equal(pixels[2], pixels[0]))
    # view 0 is the plain decoded image; augmented views give clearly different features
    plain = torch.stack([torch.from_numpy(first.images.load(p)).permute(2, 0, 1) for p in photos])
    assert torch.equal(torch.stack([first._view(p, 0) for p in photos]), plain)
    from_plain = (a.features[:, 1:] - a.features[:, :1]).abs().amax(dim=2)  # (photos, augmented views)
    assert (from_plain.amax(dim=1) > 0.05).all() and (from_plain > 0.05).float().mean() >= 0.75

    # the seed belongs to the image and view, not to the position in the batch or the global RNG
    torch.manual_seed(1234)
    alone = make_extractor(lite0)
    alone.store.folder = tmp_path / "alone"
    single = alone.extract(photos[2:3], LABELS[2:3], views=3)
    assert torch.allclose(single.features[0], a.features[2], **FLOAT16_STEP)


def test_a_modified_image_is_recomputed_alone(lite0, photos):
    before = make_extractor(lite0).extract(photos, LABELS, views=2)
    changed = photos[1]
    old = changed.stat()
    write_photo(changed, seed=99)
    os.utime(changed, ns=(old.st_atime_ns, old.st_mtime_ns + 5_000_000_000))

    extractor = make_extractor(lite0)
    spy = Spy(extractor)
    after = extractor.extract(photos, LABELS, views=2)
    assert sorted(spy.views) == [(changed.name, 0), (changed.name, 1)]
    assert spy.rows == 2
    others = [0, 2, 3]
    assert torch.equal(after.features[others], before.features[others])
    assert (after.features[1] - before.features[1]).abs().max() > 0.05


def test_same_mtime_but_new_content_of_another_size_is_recomputed(lite0, photos):
    """The key has the file size as well as the mtime: a rewrite within the same mtime tick still misses."""
    make_extractor(lite0).extract(photos, LABELS, views=1)
    changed = photos[0]
    old = changed.stat()
    write_photo(changed, seed=7, size=(96, 72))
    os.utime(changed, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert changed.stat().st_size != old.st_size
    extractor = make_extractor(lite0)
    spy = Spy(extractor)
    extractor.extract(photos, LABELS, views=1)
    assert spy.views == [(changed.name, 0)]


def perturbed(backbone: torch.nn.Module) -> torch.nn.Module:
    other = copy.deepcopy(backbone)
    with torch.no_grad():
        other.conv_stem.weight[0, 0, 0, 0] += 1e-3  # one number of one parameter
    return other


CHANGES = {
    "image size": lambda backbone: make_extractor(backbone, size=48),
    "augmentation": lambda backbone: make_extractor(backbone, augment=Augment(horizontal_flip=True)),
    "resize policy": lambda backbone: make_extractor(backbone, policy="squash"),
    "normalisation": lambda backbone: make_extractor(backbone, mean=(0.485, 0.456, 0.406)),
    "backbone weights": lambda backbone: make_extractor(perturbed(backbone)),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_other_settings_or_weights_use_another_cache(lite0, photos, change):
    base = make_extractor(lite0)
    reference = base.extract(photos, LABELS, views=2)

    other = CHANGES[change](lite0)
    assert other.tag != base.tag
    assert other.store.folder != base.store.folder
    spy = Spy(other)
    result = other.extract(photos, LABELS, views=2)
    assert spy.rows == 4 * 2  # nothing came from the first extractor's cache
    assert result.features.shape[:2] == (4, 2)
    if change == "backbone weights":
        assert weights_fingerprint(perturbed(lite0)) != weights_fingerprint(lite0)
        assert not torch.equal(result.features, reference.features)

    # control: the same settings and an identical copy of the weights do hit the cache
    same = make_extractor(copy.deepcopy(lite0))
    assert same.tag == base.tag
    Spy(same, fail=True)
    assert torch.equal(same.extract(photos, LABELS, views=2).features, reference.features)


def test_bad_files_are_skipped_and_reported_once(lite0, photos, tmp_path):
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    missing = tmp_path / "photos" / "missing.png"
    paths = [photos[0], broken, photos[1], missing, photos[2], photos[3]]
    labels = [0, 1, 0, 1, 1, 1]

    result = make_extractor(lite0, engine="torch").extract(paths, labels, views=3)
    assert sorted(error.path.name for error in result.skipped) == ["broken.jpg", "missing.png"]  # once each
    assert result.paths == photos
    assert result.labels.tolist() == [0, 0, 1, 1]
    assert result.features.shape == (4, 3, DIM)

    clean = make_extractor(lite0)
    Spy(clean, fail=True)  # the good images come from the cache; the bad ones are tried again
    again = clean.extract(paths, labels, views=3)
    assert [error.path.name for error in again.skipped] == ["broken.jpg", "missing.png"]
    assert torch.equal(again.features, result.features)


def test_only_bad_files_give_an_empty_set(lite0, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = make_extractor(lite0).extract([broken], [0], views=2)
    assert len(result.skipped) == 1 and result.paths == [] and len(result.labels) == 0
    assert result.features.numel() == 0


def engines_agree(
    backbone: torch.nn.Module, paths: list[Path], labels: list[int], views: int, caplog, monkeypatch, root
):
    """Extract with each engine in its own cache; compare the extracted features and the raw outputs."""
    caplog.set_level(logging.WARNING, logger="imgcls")
    results = {}
    for engine in ("onnx", "torch"):
        monkeypatch.setenv("IMGCLS_CACHE", str(root / engine))
        extractor = make_extractor(backbone, engine=engine)
        results[engine] = (extractor, extractor.extract(paths, labels, views=views))
    assert "ONNX export failed" not in caplog.text  # the ONNX engine really ran, no silent fallback
    onnx_extractor, onnx_set = results["onnx"]
    torch_extractor, torch_set = results["torch"]
    assert (root / "onnx" / "onnx" / f"backbone-{onnx_extractor.tag}.onnx").is_file()
    assert not (root / "torch" / "onnx").exists()
    assert onnx_extractor.tag == torch_extractor.tag  # the engine is not part of the cache key
    assert onnx_set.features.shape == torch_set.features.shape == (len(paths), views, DIM)
    assert torch.allclose(onnx_set.features, torch_set.features, **FLOAT16_STEP)

    pixels = torch.stack([torch_extractor._view(p, v) for p in paths for v in range(views)]).float()
    batch = (pixels - torch_extractor.mean) / torch_extractor.std
    with torch.inference_mode():
        raw_onnx, raw_torch = onnx_extractor.forward(batch).float(), torch_extractor.forward(batch).float()
    assert raw_onnx.shape == (len(paths) * views, DIM)
    assert (raw_onnx - raw_torch).abs().max() < 1e-3
    return torch_set


def test_onnx_and_torch_engines_agree(lite0, photos, caplog, monkeypatch, tmp_path):
    engines_agree(lite0, photos, LABELS, 2, caplog, monkeypatch, tmp_path)


@pytest.mark.shared_data
def test_real_photos(lite0, cats_vs_dogs_dir, tmp_path, caplog, monkeypatch):
    """Real cat and dog JPEGs (copied, never linked: nothing here may touch the shared files)."""
    paths, labels = [], []
    for label, name in enumerate(("cat", "dog")):
        for source in sorted((cats_vs_dogs_dir / "train" / name).glob("*.jpg"))[:2]:
            target = tmp_path / "photos" / name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            paths.append(target)
            labels.append(label)
    features = engines_agree(lite0, paths, labels, 3, caplog, monkeypatch, tmp_path).features
    assert features.shape == (4, 3, DIM)
    assert (features >= 0).all() and (features <= 6).all()  # pooled ReLU6 activations
    assert (features[:, 1:] - features[:, :1]).abs().amax(dim=2).min() > 0.05
    # the same photo through the same pipeline twice: identical features, from the cache
    again = make_extractor(lite0)
    Spy(again, fail=True)
    assert torch.equal(again.extract(paths, labels, views=3).features, features)


def test_an_onnx_export_failure_falls_back_to_pytorch(lite0, photos, caplog, monkeypatch):
    import imgcls.engine

    def broken(*args, **kwargs):
        raise RuntimeError("exporter gap")

    monkeypatch.setattr(imgcls.engine, "onnx_session_for", broken)
    caplog.set_level(logging.WARNING, logger="imgcls")
    extractor = make_extractor(lite0, engine="onnx")
    result = extractor.extract(photos, LABELS, views=2)  # the engine is built on first use
    assert "ONNX export failed (exporter gap); using PyTorch" in caplog.text
    assert result.features.shape == (4, 2, DIM)
    assert not (cache_dir() / "onnx").exists()
