"""Image-quality checks of `imgcls data check`: pictures that are blank, dark, blurry, tiny... or unlike their class.

Every statistic comes from the pixels `hashing.inspect_files` decodes anyway, measured on small
copies so the check stays about as fast as before: the grayscale picture box-reduced to at most
`ANALYSIS_SIDE` pixels (about what a model sees), and for the colour statistics every n-th pixel of
the colour picture (about `COLOUR_SIDE` per side). The findings are warnings: a blurry photo may
still be a useful example, and only a person can tell.

The default thresholds were set on the 3,000 shared cats-vs-dogs photos (Asirra) and the 10,000
CIFAR-10 test pictures so that they flag few, and only pictures that deserve it (the counts are in
docs/data.md):

- low information: grayscale entropy below `min_entropy` bits, or one colour (5 bits per channel)
  over `max_flat_share` of the picture. The lowest entropy of a cats-vs-dogs photo is 4.1 bits and
  the largest one-colour share 61% (a photo pasted on white); an "image not found" graphic, a logo
  or a screenshot is at 0.3-2.8 bits, a flat picture at 0.
- dark and bright: on the brightest and the darkest 5% of the pixels, so that a night photo with a
  lit subject is not "dark". Every cats-vs-dogs photo has its brightest 5% at 88 of 255 or more and
  its darkest 5% at 162 or less.
- blurry: the standard deviation of the 4-neighbour Laplacian divided by that of the grayscale, so
  that a soft, low-contrast photo is not penalised for its contrast. The middle 90% of the
  cats-vs-dogs photos are at 0.25-1.2; the three below 0.12 are visibly out of focus or upscaled.
- tiny: the smallest side below `min_side` px *and* below `tiny_share` of the data set's median, so
  that a data set of 32x32 pictures (CIFAR, MNIST) is not flagged as a whole.
- grayscale among colour: the mean spread max(R,G,B) - min(R,G,B) below `gray_chroma` of 255,
  flagged only when most pictures are colour (a grayscale data set is fine).
- outliers: the cosine distance of a picture's backbone features to the centre of its class, as a
  robust z-score within the class (median and MAD). The features come from a higher layer (this
  layer has no models): `check_dataset(features=...)`; `imgcls data check --outliers` computes them.

A picture with little information is reported only as that: its brightness, sharpness and colour
say nothing more.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.data.decode import to_mode

ANALYSIS_SIDE = 256  # px: grayscale statistics on a box-reduced copy whose long side is at most this
COLOUR_SIDE = 64  # px: colour statistics on every n-th pixel, about this many per side
MIN_CLASS_FOR_OUTLIERS = 10  # images: smaller classes have no reliable centre and spread
_STATS_FIELDS = ("entropy", "flat_share", "shadows", "highlights", "sharpness", "chroma")


@dataclass(frozen=True)
class ImageStats:
    """What the quality checks need to know about one picture."""

    entropy: float  # bits: Shannon entropy of the 256-level grayscale histogram (0 = one grey level)
    flat_share: float  # 0-1: share of the pixels in the single most common colour (5 bits per channel)
    shadows: float  # 0-255: 5th percentile of the luminance
    highlights: float  # 0-255: 95th percentile of the luminance
    sharpness: float  # std of the Laplacian / std of the grayscale; NaN for a flat picture
    chroma: float  # 0-255: mean over pixels of max(R, G, B) - min(R, G, B)

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in _STATS_FIELDS], dtype=np.float64)

    @classmethod
    def from_array(cls, values: np.ndarray) -> ImageStats:
        return cls(*(float(v) for v in values))


N_STATS = len(_STATS_FIELDS)
STATS_VERSION = 1  # bump when a statistic is computed differently: cached check results are then redone


@dataclass(frozen=True)
class QualityThresholds:
    """When `data check` flags a picture; units in the comments. CLI: `--quality NAME=VALUE`."""

    min_entropy: float = 3.0  # bits: low information below this grayscale entropy...
    max_flat_share: float = 0.8  # 0-1: ...or when one colour covers more than this share
    dark: float = 64  # 0-255: very dark when even the brightest 5% of pixels are below this
    bright: float = 208  # 0-255: very bright when even the darkest 5% of pixels are above this
    min_sharpness: float = 0.12  # Laplacian std / grayscale std: blurry below this
    min_side: int = 64  # px: tiny when the smallest side is below this...
    tiny_share: float = 0.5  # 0-1: ...and below this share of the data set's median smallest side
    max_aspect: float = 2.5  # long side / short side: odd aspect ratio above this
    gray_chroma: float = 2.0  # 0-255: grayscale below this mean colour spread (in a colour data set)
    outlier_z: float = 5.0  # robust z-score of the distance to the class centre: outlier above this

    @classmethod
    def names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    def with_settings(self, settings: Sequence[str]) -> QualityThresholds:
        """A copy with `NAME=VALUE` settings applied; ValueError names a bad setting and the valid names."""
        changes: dict[str, float | int] = {}
        for setting in settings:
            name, _, value = setting.partition("=")
            name = name.strip().replace("-", "_")
            if name not in self.names() or not value.strip():
                raise ValueError(f"{setting!r}: expected NAME=VALUE with NAME one of {', '.join(self.names())}")
            kind = type(getattr(self, name))
            try:
                changes[name] = kind(value)
            except ValueError:
                raise ValueError(f"{setting!r}: {name} takes a number ({kind.__name__})") from None
            if not math.isfinite(changes[name]) or changes[name] < 0:
                raise ValueError(f"{setting!r}: {name} must be a finite number >= 0")
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- statistics


def measure(gray: np.ndarray, picture: Image.Image) -> ImageStats:
    """Statistics of one decoded picture: `gray`, its (H, W) uint8 grayscale pixels, and `picture`, the
    decoded image (any mode) they came from, for the colour statistics. Orientation changes none."""
    small = _reduced(Image.fromarray(gray), ANALYSIS_SIDE)
    histogram = np.array(small.histogram(), dtype=np.int64)
    colours = np.asarray(to_mode(_sampled(picture, COLOUR_SIDE), "RGB"))
    return ImageStats(
        entropy=_entropy(histogram),
        flat_share=_flat_share(colours),
        shadows=_percentile(histogram, 0.05),
        highlights=_percentile(histogram, 0.95),
        sharpness=_sharpness(np.asarray(small), _std(histogram)),
        chroma=_chroma(colours),
    )


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """Box-averaged by an integer factor to a long side of at most `side` (Pillow's fast `reduce`)."""
    factor = -(-max(image.size) // side)
    return image.reduce(factor) if factor > 1 else image


def _sampled(image: Image.Image, side: int) -> Image.Image:
    """Every n-th pixel, about `side` per side: colours as they are, not averaged (and cheap)."""
    step = -(-max(image.size) // side)
    if step <= 1:
        return image
    size = (max(1, image.width // step), max(1, image.height // step))
    return image.resize(size, Image.Resampling.NEAREST)


def _entropy(histogram: np.ndarray) -> float:
    shares = histogram[histogram > 0] / histogram.sum()
    return float(max(0.0, -(shares * np.log2(shares)).sum()))


def _percentile(histogram: np.ndarray, share: float) -> float:
    """The lowest grey level at or below which `share` of the pixels lie."""
    return float(np.searchsorted(np.cumsum(histogram), share * histogram.sum()))


def _flat_share(colours: np.ndarray) -> float:
    quantised = (colours >> 3).astype(np.uint16)
    codes = (quantised[..., 0] << 10) | (quantised[..., 1] << 5) | quantised[..., 2]
    return float(np.bincount(codes.ravel(), minlength=1 << 15).max() / codes.size)


def _std(histogram: np.ndarray) -> float:
    levels = np.arange(len(histogram))
    total = histogram.sum()
    mean = (histogram @ levels) / total
    return float(np.sqrt(max(0.0, (histogram @ (levels - mean) ** 2) / total)))


def _sharpness(luma: np.ndarray, contrast: float) -> float:
    """Edge energy relative to contrast (the grayscale std): blur lowers the first, soft light both."""
    if min(luma.shape) < 3 or contrast < 1.0:  # flat or a line: no edge to be sharp or blurred
        return math.nan
    g = luma.astype(np.float32)
    laplacian = g[1:-1, :-2] + g[1:-1, 2:]
    laplacian += g[:-2, 1:-1]
    laplacian += g[2:, 1:-1]
    laplacian -= 4 * g[1:-1, 1:-1]
    values = laplacian.ravel()
    variance = float(values @ values) / values.size - (float(values.sum()) / values.size) ** 2
    return math.sqrt(max(0.0, variance)) / contrast


def _chroma(colours: np.ndarray) -> float:
    red, green, blue = colours[..., 0], colours[..., 1], colours[..., 2]
    spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    return float(spread.mean())


# --------------------------------------------------------------------------- outliers


@dataclass
class Features:
    """Backbone features of some images, computed by a higher layer and handed to `check_dataset`."""

    paths: list[Path]
    vectors: np.ndarray  # (len(paths), D) float, or (len(paths), C, H, W) feature maps (averaged)
    described: str  # which backbone, for the report

    def pooled(self) -> np.ndarray:
        vectors = np.asarray(self.vectors, dtype=np.float64)
        return vectors.reshape(*vectors.shape[:2], -1).mean(-1) if vectors.ndim > 2 else vectors


FeatureSource = Callable[[list[Path]], Features]


def outlier_scores(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image, a robust z-score (median, MAD) of its cosine distance to its class centre, within
    its class; NaN in classes of fewer than MIN_CLASS_FOR_OUTLIERS images."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    scores = np.full(len(labels), np.nan)
    for label in np.unique(labels):
        members = labels == label
        if members.sum() < MIN_CLASS_FOR_OUTLIERS:
            continue
        centre = unit[members].mean(0)
        distance = 1 - unit[members] @ (centre / max(np.linalg.norm(centre), 1e-12))
        median = np.median(distance)
        spread = 1.4826 * np.median(np.abs(distance - median))
        scores[members] = (distance - median) / max(spread, 1e-6)
    return scores


# --------------------------------------------------------------------------- findings


@dataclass
class _Check:
    label: str  # "blurry": the problem, as the output names it
    rule: str  # the threshold, in words
    options: tuple[str, ...]  # the QualityThresholds fields that set it
    found: list[tuple[int, float, str]] = dataclasses.field(default_factory=list)  # (file, value, why)


def quality_findings(
    files: list[dict],
    stats: list[ImageStats | None],
    sizes: list[tuple[int, int] | None],
    thresholds: QualityThresholds,
    outliers: tuple[np.ndarray, str] | None = None,
) -> dict:
    """The quality checks over a data set, JSON-ready: thresholds, then per check its rule and the files
    it flags (most extreme first). `stats`/`sizes` are None for unreadable files; `outliers`: z-scores
    aligned with `files` (NaN = not judged) and the backbone that gave them, or None (not searched)."""
    t = thresholds
    checks = {
        "low_information": _low_information(stats, t),
        "dark": _level(stats, t, dark=True),
        "bright": _level(stats, t, dark=False),
        "blurry": _blurry(stats, t),
        "tiny": _tiny(sizes, t),
        "odd_aspect": _odd_aspect(sizes, t),
        "grayscale": _grayscale(stats, t),
        "outliers": _outliers(outliers, t),
    }
    return {
        "thresholds": dataclasses.asdict(t),
        "outliers_searched": outliers is not None,
        "checks": {name: _as_dict(check, files) for name, check in checks.items()},
    }


def _as_dict(check: _Check, files: list[dict]) -> dict:
    return {
        "label": check.label,
        "rule": check.rule,
        "options": list(check.options),
        "count": len(check.found),
        "files": [{**files[i], "value": round(value, 3), "why": why} for i, value, why in check.found],
    }


def _informative(stats: list[ImageStats | None], t: QualityThresholds) -> list[tuple[int, ImageStats]]:
    """Readable pictures with enough information for the brightness, sharpness and colour checks."""
    return [(i, s) for i, s in enumerate(stats) if s is not None and not _is_low_information(s, t)]


def _is_low_information(s: ImageStats, t: QualityThresholds) -> bool:
    return s.entropy < t.min_entropy or s.flat_share > t.max_flat_share


def _low_information(stats: list[ImageStats | None], t: QualityThresholds) -> _Check:
    check = _Check(
        "near-blank or low information",
        f"grayscale entropy < {t.min_entropy:g} bits, or one colour > {t.max_flat_share:.0%} of the picture",
        ("min_entropy", "max_flat_share"),
    )
    flagged = [(i, s) for i, s in enumerate(stats) if s is not None and _is_low_information(s, t)]
    for i, s in sorted(flagged, key=lambda item: (item[1].entropy, -item[1].flat_share)):
        check.found.append((i, s.entropy, f"{s.entropy:.2f} bits, {s.flat_share:.0%} one colour"))
    return check


def _level(stats: list[ImageStats | None], t: QualityThresholds, dark: bool) -> _Check:
    """Very dark: even the brightest 5% of pixels are dim; very bright: even the darkest 5% are light."""
    limit, field, what = (t.dark, "highlights", "brightest 5%") if dark else (t.bright, "shadows", "darkest 5%")
    label, sign = ("very dark", "<") if dark else ("very bright", ">")
    check = _Check(label, f"{what} of the pixels {sign} {limit:g} of 255", ("dark" if dark else "bright",))
    values = [(i, getattr(s, field)) for i, s in _informative(stats, t)]
    flagged = [(i, v) for i, v in values if (v < limit if dark else v > limit)]
    for i, value in sorted(flagged, key=lambda item: item[1] if dark else -item[1]):
        check.found.append((i, value, f"{what} at {value:g} of 255"))
    return check


def _blurry(stats: list[ImageStats | None], t: QualityThresholds) -> _Check:
    check = _Check(
        "blurry",
        f"sharpness (Laplacian std / grayscale std at {ANALYSIS_SIDE} px) < {t.min_sharpness:g}",
        ("min_sharpness",),
    )
    flagged = [(i, s.sharpness) for i, s in _informative(stats, t) if s.sharpness < t.min_sharpness]
    for i, value in sorted(flagged, key=lambda item: item[1]):
        check.found.append((i, value, f"sharpness {value:.3f}"))
    return check


def _tiny(sizes: list[tuple[int, int] | None], t: QualityThresholds) -> _Check:
    sides = {i: min(size) for i, size in enumerate(sizes) if size is not None}
    median = float(np.median(list(sides.values()))) if sides else 0.0
    limit = min(t.min_side, t.tiny_share * median)
    check = _Check(
        "tiny",
        f"smallest side < {t.min_side} px and < {t.tiny_share:.0%} of the median, {median:g} px",
        ("min_side", "tiny_share"),
    )
    for i, side in sorted(sides.items(), key=lambda item: item[1]):
        if side < limit:
            width, height = sizes[i]
            check.found.append((i, float(side), f"{width}x{height} px"))
    return check


def _odd_aspect(sizes: list[tuple[int, int] | None], t: QualityThresholds) -> _Check:
    check = _Check("odd aspect ratio", f"long side / short side > {t.max_aspect:g}", ("max_aspect",))
    ratios = {i: max(size) / max(1, min(size)) for i, size in enumerate(sizes) if size is not None}
    for i, ratio in sorted(ratios.items(), key=lambda item: -item[1]):
        if ratio > t.max_aspect:
            width, height = sizes[i]
            check.found.append((i, ratio, f"{width}x{height} px ({ratio:.2f}:1)"))
    return check


def _grayscale(stats: list[ImageStats | None], t: QualityThresholds) -> _Check:
    """Grayscale pictures are flagged only where most pictures are colour."""
    check = _Check(
        "grayscale among colour",
        f"colour spread < {t.gray_chroma:g} of 255, where most pictures are colour",
        ("gray_chroma",),
    )
    measured = _informative(stats, t)
    gray = [(i, s.chroma) for i, s in measured if s.chroma < t.gray_chroma]
    if 2 * len(gray) < len(measured):
        for i, value in sorted(gray, key=lambda item: item[1]):
            check.found.append((i, value, f"colour spread {value:.1f}"))
    return check


def _outliers(outliers: tuple[np.ndarray, str] | None, t: QualityThresholds) -> _Check:
    if outliers is None:
        return _Check("far from its class", "not searched: imgcls data check --outliers", ("outlier_z",))
    scores, described = outliers
    check = _Check(
        "far from its class",
        f"distance to the class centre in {described} features, robust z > {t.outlier_z:g} "
        f"(classes of {MIN_CLASS_FOR_OUTLIERS}+ images)",
        ("outlier_z",),
    )
    flagged = [(i, float(z)) for i, z in enumerate(scores) if np.isfinite(z) and z > t.outlier_z]
    for i, value in sorted(flagged, key=lambda item: -item[1]):
        check.found.append((i, value, f"z = {value:.1f}"))
    return check
