"""What `imgcls show ...` and `imgcls explain` draw: pick the pictures, compute, call `visual.grids`.

Every function writes PNGs into a folder and returns their paths; nothing existing is overwritten
(a taken name gets `-2`, `-3`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.transforms import v2

from imgcls.augment import Augment, build_transform
from imgcls.data.decode import BadImageError, is_image_file, load_image
from imgcls.data.labels import LabelOptions
from imgcls.errors import ImgclsError
from imgcls.files import display_path, fresh_dir
from imgcls.run import Run
from imgcls.visual import grids

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from imgcls.data.discover import Dataset

THUMBNAIL = 256  # pixels: longest side of the photos in sample grids
SEED_SIZE = 150  # the seeds' target_size=(150, 150)


@dataclass
class Written:
    """PNG files written, and the inputs that could not be used (file: reason)."""

    paths: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- samples


def show_samples(
    data: str | Path | None,
    out: Path,
    count: int = 15,
    split: str = "train",
    seed: int = 0,
    data_dir: Path | None = None,
    labels: LabelOptions | None = None,
) -> Written:
    """A grid of `count` photos of one split, classes in turn, captioned with class and file (seed 001's
    show_batch); `labels`: file-name or CSV labels, so a new flat folder can be looked at before training."""
    from imgcls.data.discover import discover

    dataset = discover(data, seed=seed, data_dir=data_dir, labels=labels)
    images, captions, title, errors = _samples(dataset, count, split, seed)
    return Written([grids.image_grid(images, captions, fresh_path(out, f"samples-{split}"), title)], errors)


def samples_figure(dataset: Dataset, count: int = 15, split: str = "train", seed: int = 0) -> tuple[Figure, list[str]]:
    """The grid of `show_samples` for a dataset already discovered (a run's own split), as a figure for a
    notebook, and the chosen files that could not be read (file: reason)."""
    images, captions, title, errors = _samples(dataset, count, split, seed)
    return grids.image_grid_figure(images, captions, title), errors


def _samples(dataset: Dataset, count: int, split: str, seed: int) -> tuple[list[np.ndarray], list[str], str, list[str]]:
    """Thumbnails of `count` photos of `split`, classes in turn, their captions, the grid's title, and
    the chosen files that could not be read."""
    if split not in dataset.splits:
        raise ImgclsError(f"{display_path(dataset.root)}: no {split!r} split; it has {', '.join(dataset.splits)}")
    samples = _balanced_pick(dataset.splits[split], len(dataset.classes), count, seed)
    images, captions, errors = [], [], []
    for sample in samples:
        try:
            images.append(load_image(sample.path))
        except BadImageError as error:
            errors.append(str(error))
            continue
        images[-1] = _thumbnail(images[-1])
        captions.append(f"{dataset.classes[sample.label]}\n{_short_name(sample.path.name)}")
    if not images:
        raise ImgclsError(f"{display_path(dataset.root)}: none of the chosen {split} images could be read")
    total = len(dataset.splits[split])
    title = f"{display_path(dataset.root)}: {len(images)} of {total:,} {split} images, {len(dataset.classes)} classes"
    return images, captions, title, errors


def _balanced_pick(samples: list, class_count: int, count: int, seed: int) -> list:
    """A seeded random pick that takes the classes in turn, so every class shows."""
    rng = np.random.default_rng(seed)
    by_class = [[s for s in samples if s.label == label] for label in range(class_count)]
    queues = [[members[i] for i in rng.permutation(len(members))] for members in by_class]
    picked: list = []
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


# --------------------------------------------------------------------------- augmentation


def tf_image_operations(size: int) -> list[tuple[str, v2.Transform]]:
    """Seed 001's `tf.image` augmentations as transforms v2 on uint8 CHW tensors, with their TF names."""
    crop = max(1, round(size * 2 / 3))  # the seed crops 200x200 out of a ~300 px photo
    return [
        ("tf.image.random_flip_left_right\n(v2.RandomHorizontalFlip)", v2.RandomHorizontalFlip(0.5)),
        ("tf.image.random_flip_up_down\n(v2.RandomVerticalFlip)", v2.RandomVerticalFlip(0.5)),
        (f"tf.image.random_crop {crop}×{crop}\n(v2.RandomCrop)", v2.RandomCrop(crop)),
        ("tf.image.random_brightness 0.5\n(add U(-0.5, 0.5) × 255)", v2.Lambda(_random_brightness)),
        ("tf.image.random_hue 0.5\n(v2.ColorJitter hue=0.5)", v2.ColorJitter(hue=0.5)),
    ]


def _random_brightness(image: torch.Tensor, max_delta: float = 0.5) -> torch.Tensor:
    """tf.image.random_brightness: ADD one random delta in [-max_delta, max_delta] (of full scale), clip."""
    delta = (torch.rand(()) * 2 - 1) * max_delta * 255
    return (image.float() + delta).clamp(0, 255).to(torch.uint8)


def show_augment(
    source: str | Path,
    out: Path,
    recipe: str | None = None,
    aug: dict | None = None,
    count: int = 9,
    seed: int = 0,
    data_dir: Path | None = None,
) -> Written:
    """One photo augmented `count` times by the recipe's (or --aug's) augmentation, and by seed 001's
    tf.image operations. Without --recipe/--aug: the seeds' ImageDataGenerator settings at 150 px."""
    from imgcls.recipes import SEED_AUGMENT, get_recipe

    size, resize, augment, origin = SEED_SIZE, "squash", SEED_AUGMENT, "the seeds' ImageDataGenerator"
    if recipe:
        chosen = get_recipe(recipe)
        size, resize, augment, origin = chosen.image_size, chosen.resize, chosen.augment, f"recipe {recipe}"
    if aug:
        augment = Augment.from_dict({**(augment.as_dict() if recipe else {}), **aug})
        origin = f"{origin} + --aug" if recipe else "--aug"
    if not augment.enabled:
        raise ImgclsError(f"{origin} has no augmentation; add some with --aug KEY=VALUE, e.g. --aug rotation_range=40")
    path = _one_photo(source, seed, data_dir)
    try:
        pixels = load_image(path, (size, size), 3, resize)
    except BadImageError as error:
        raise ImgclsError(str(error)) from None
    image = torch.tensor(pixels).permute(2, 0, 1).contiguous()
    torch.manual_seed(seed)
    transform = build_transform(augment, (size, size))
    variants = [pixels] + [_hwc(transform(image)) for _ in range(count)]
    captions = ["original"] + [f"augmented #{i}" for i in range(1, count + 1)]
    settings = ", ".join(_changed_settings(augment))
    title = f"{display_path(path)} at {size}×{size} px, {origin}:\n{settings}"
    written = Written()
    written.paths.append(grids.image_grid(variants, captions, fresh_path(out, "augment"), _wrap(title)))
    rows = [(name, [pixels] + [_hwc(op(image)) for _ in range(4)]) for name, op in tf_image_operations(size)]
    title = f"Seed 001's tf.image augmentations of {path.name} ({size}×{size} px), four random draws each"
    written.paths.append(grids.operation_rows(rows, fresh_path(out, "augment-tf-image"), title))
    return written


def _one_photo(source: str | Path, seed: int, data_dir: Path | None) -> Path:
    """SOURCE itself when it is an image file, else a seeded random training photo of the dataset."""
    from imgcls.data.discover import discover

    path = Path(source).expanduser()
    if path.is_file():
        if not is_image_file(path):
            raise ImgclsError(
                f"{display_path(path)}: not an image file (expected {', '.join(('.jpg', '.png', '...'))})"
            )
        return path
    train = discover(source, seed=seed, data_dir=data_dir).splits["train"]
    return train[int(np.random.default_rng(seed).integers(len(train)))].path


def _changed_settings(augment: Augment) -> list[str]:
    defaults = Augment().as_dict()
    return [f"{key}={value}" for key, value in augment.as_dict().items() if value != defaults[key]]


# --------------------------------------------------------------------------- activations


def show_activations(
    run: Path, image: str | Path, out: Path | None = None, layers: Sequence[str] | None = None, max_maps: int = 64
) -> Written:
    """One PNG per convolution/pooling layer: its feature maps for IMAGE (the first `max_maps` channels)."""
    from imgcls.explain import activation_layers, activations
    from imgcls.inference import Classifier

    classifier = Classifier.load(run, engine="torch")
    prediction = classifier.predict([image])[0]
    if prediction.error:
        raise ImgclsError(f"{prediction.source}: {prediction.error}")
    found = activations(classifier, image, layers)
    folder = fresh_dir(out or Run.open(run).output_dir("activations"), _safe_name(Path(str(image)).stem))
    headline = f"{_short_name(Path(str(image)).name, 40)}: predicted {_top(prediction)}"
    written = Written()
    positions = {name: index for index, name in enumerate(activation_layers(classifier), start=1)}
    for layer in found:
        index = positions[layer.name]
        channels, height, width = layer.shape
        shown = min(channels, max_maps)
        note = f"all {channels} maps" if shown == channels else f"first {shown} of {channels} maps"
        title = (
            f"Layer {index}/{len(positions)} {layer.name} ({layer.kind}), output {channels}×{height}×{width} "
            f"(channels×height×width), {note}\n{headline}"
        )
        path = folder / f"{index:02d}-{_safe_name(layer.name)}.png"
        written.paths.append(grids.feature_map_grid(layer.maps[:shown], path, title))
    return written


# --------------------------------------------------------------------------- Grad-CAM


def explain_images(
    run: Path,
    images: Sequence[str | Path],
    out: Path | None = None,
    class_name: str | None = None,
    grid: bool = False,
) -> Written:
    """Grad-CAM of each image for its predicted class (or `class_name`): one PNG each, or one grid."""
    from imgcls.explain import explain, supports_grad_cam
    from imgcls.inference import Classifier

    classifier = Classifier.load(run, engine="torch")
    if not supports_grad_cam(classifier):
        raise ImgclsError(f"{display_path(run)}: its model has no convolutional feature map for Grad-CAM")
    if class_name is not None and class_name not in classifier.classes:
        raise ImgclsError(f"--class {class_name!r}: the model's classes are {', '.join(classifier.classes)}")
    wanted = None if class_name is None else classifier.classes.index(class_name)
    folder = out or Run.open(run).output_dir("explain")
    written, overlays, captions = Written(), [], []
    for item in images:
        prediction = classifier.predict([item])[0]
        if prediction.error:
            written.errors.append(f"{prediction.source}: {prediction.error}")
            continue
        explanation = explain(classifier, item, wanted)
        name = _short_name(Path(str(item)).name, 40)
        target = f"Grad-CAM for {explanation.label} ({explanation.probability:.1%})"
        if explanation.heatmap.max() == 0:
            target += ": no region raises this class's score"
        title = f"{name}{_folder_hint(item, classifier.classes)}: predicted {_top(prediction)}\n{target}"
        if grid:
            overlays.append(explanation.overlay)
            kind = "predicted" if wanted is None else "class"
            captions.append(
                f"{_short_name(Path(str(item)).name)}{_folder_hint(item, classifier.classes)}\n"
                f"{kind} {explanation.label} {explanation.probability:.1%}"
            )
            continue
        path = fresh_path(folder, f"gradcam-{_safe_name(Path(str(item)).stem)}")
        written.paths.append(
            grids.explanation_panels(classifier.pixels(item), explanation.heatmap, explanation.overlay, path, title)
        )
    if grid and overlays:
        whose = "the predicted class" if class_name is None else f"class {class_name}"
        title = f"Grad-CAM for {whose}: {Path(run).name} ({classifier.spec.architecture}), {len(overlays)} images"
        written.paths.append(grids.explanation_grid(overlays, captions, fresh_path(folder, "gradcam-grid"), title))
    return written


def _top(prediction, k: int = 2) -> str:
    best = prediction.top_k(k)
    head = f"{best[0][0]} {best[0][1]:.1%}"
    return head + (f" (next: {best[1][0]} {best[1][1]:.1%})" if len(best) > 1 else "")


def _folder_hint(item: str | Path, classes: list[str]) -> str:
    """' (in folder cat)' when the file sits in a folder named like a class: the label it was filed under."""
    if isinstance(item, (str, Path)) and Path(item).parent.name in classes:
        return f" (in folder {Path(item).parent.name})"
    return ""


# --------------------------------------------------------------------------- files


def fresh_path(folder: Path, stem: str, suffix: str = ".png") -> Path:
    """`folder/stem.png`, or `stem-2.png`, ... when taken: nothing existing is overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(1, 10_000):
        candidate = folder / (f"{stem}{suffix}" if index == 1 else f"{stem}-{index}{suffix}")
        if not candidate.exists():
            return candidate
    raise ImgclsError(f"{folder}: too many files named {stem}{suffix}")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def _short_name(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 9] + "…" + name[-8:]


def _thumbnail(pixels: np.ndarray) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).contiguous().numpy()


def _wrap(text: str, width: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))
