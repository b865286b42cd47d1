"""Frozen-backbone features, computed once per image, view, backbone and size, then cached on disk.

View 0 is the plain image; views 1..K-1 are augmented copies whose randomness is seeded by
the image and the view index, so view v of an image is the same tensor in every run and a
larger K only computes the views that are missing. This is how cached features and
augmentation go together (seed 003 says they cannot).

Cache key = the image's identity (path, size, mtime) + a fingerprint of the backbone's
weights + input size + resize policy + the augmentation settings. Anything else changed
misses the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from imgcls.augment import Augment, build_transform
from imgcls.data.cache import ArrayStore, DecodeSettings, ImageCache, cache_key
from imgcls.data.decode import BadImageError
from imgcls.data.download import cache_dir
from imgcls.progress import progress_bar

if TYPE_CHECKING:
    from imgcls.recipes import Recipe

FEATURE_VERSION = 1


@dataclass
class FeatureSet:
    """(N, V, *feature_shape) float32 features of N readable images and V views each; `mirrored`:
    (N, *feature_shape) of each image's left-right mirror, for flip-TTA models (`with_mirrors`)."""

    features: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    skipped: list[BadImageError]
    mirrored: torch.Tensor | None = None

    def tta_inputs(self) -> torch.Tensor:
        """What a linear head scores for the flip-TTA model: the mean of the two views' features, whose
        logits are exactly the mean of the two views' logits (the plain view without mirrors)."""
        plain = self.features[:, 0]
        return plain if self.mirrored is None else (plain + self.mirrored) / 2


def head_logits(head: nn.Module, found: FeatureSet) -> torch.Tensor:
    """The head's logits as the whole model gives them: averaged over the photo and its mirror when
    `found` has mirrors (flip TTA, also right for a head with hidden layers), else the plain view's."""
    logits = head(found.features[:, 0])
    return logits if found.mirrored is None else (logits + head(found.mirrored)) / 2


def weights_fingerprint(module: nn.Module) -> str:
    """sha1 over every tensor of the module: different weights never share cached features."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class FeatureExtractor:
    """Runs a frozen backbone over images (through ONNX Runtime when possible) with a disk cache."""

    def __init__(
        self,
        backbone: nn.Module,
        decode: DecodeSettings,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: Augment = Augment(),
        engine: str = "onnx",
        batch_size: int = 32,
        mirror: bool = False,
    ):
        """`mirror`: features of each image's left-right mirror (cached apart from the plain ones)."""
        self.backbone = backbone.eval()
        self.settings = {"mean": mean, "std": std, "augment": augment, "engine": engine, "batch_size": batch_size}
        self.mirror = mirror
        self.decode = decode
        self.images = ImageCache(decode)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.augment = build_transform(augment, decode.size)
        self.batch_size = batch_size
        identity = {
            "v": FEATURE_VERSION,
            "weights": weights_fingerprint(self.backbone),
            "decode": decode.tag(),
            "mean": list(mean),
            "std": list(std),
            "augment": augment.as_dict(),
        } | ({"mirror": True} if mirror else {})  # plain extractors keep the cache keys they always had
        self.tag = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
        self.store = ArrayStore(cache_dir() / "features" / self.tag)
        self.engine = engine
        self._forward = None

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self._forward is None:  # built on first use: a fully cached extraction never loads it
            self._forward = self._make_forward(self.engine)
        return self._forward(batch)

    def _make_forward(self, engine: str):
        example = torch.zeros(1, self.decode.channels, *self.decode.size)
        if engine == "onnx":
            try:
                from imgcls.engine import onnx_session_for

                session = onnx_session_for(self.backbone, example, f"backbone-{self.tag}")
                return lambda batch: session(batch)
            except Exception as error:  # an exporter gap must not stop training: fall back to PyTorch
                import logging

                logging.getLogger("imgcls").warning("ONNX export failed (%s); using PyTorch", error)
        module = self.backbone.to(memory_format=torch.channels_last)
        return lambda batch: module(batch.contiguous(memory_format=torch.channels_last))

    def with_mirrors(self, found: FeatureSet, progress: str | None = None) -> FeatureSet:
        """`found` with the features of its images' mirrors (the same readable images, in its order)."""
        if found.mirrored is not None or not found.paths:
            return found
        mirrors = FeatureExtractor(self.backbone, self.decode, **self.settings, mirror=True)
        mirrors.forward = self.forward  # the same backbone: one ONNX session
        mirrored = mirrors.extract(found.paths, found.labels.tolist(), 1, progress)
        if mirrored.paths != found.paths:  # a file changed or vanished in between
            raise BadImageError(next(iter(set(found.paths) - set(mirrored.paths))), "changed while reading")
        return dataclasses.replace(found, mirrored=mirrored.features[:, 0])

    def extract(self, paths: list[Path], labels: list[int], views: int = 1, progress: str | None = None) -> FeatureSet:
        """Features of every readable image, `views` views each; `progress`: a progress bar's title."""
        stored: dict[int, np.ndarray] = {}
        todo: list[tuple[int, int]] = []  # (image index, view index)
        skipped: list[BadImageError] = []
        for index, path in enumerate(paths):
            cached = self._load(path)
            have = 0 if cached is None else len(cached)
            if cached is not None:
                stored[index] = cached[:views]
            todo += [(index, view) for view in range(have, views)]
        bad: set[int] = set()
        with progress_bar(progress is not None and bool(todo), progress or "", len(todo)) as advance:
            for start in range(0, len(todo), self.batch_size):
                self._extract_batch(paths, todo[start : start + self.batch_size], views, stored, bad, skipped)
                advance(min(self.batch_size, len(todo) - start))
        good = [i for i in range(len(paths)) if i not in bad and i in stored]
        return FeatureSet(
            features=torch.from_numpy(np.stack([stored[i] for i in good]).astype(np.float32))
            if good
            else torch.zeros(0),
            labels=torch.tensor([labels[i] for i in good], dtype=torch.long),
            paths=[paths[i] for i in good],
            skipped=skipped,
        )

    def _extract_batch(self, paths, pairs, views, stored, bad, skipped) -> None:
        """One batch of (image, view) pairs: decode, augment, forward; finished images go to the cache."""
        chunk = [(i, v) for i, v in pairs if i not in bad]
        pixels, kept = [], []
        for index, view in chunk:
            if index in bad:  # an unreadable image is reported once, not once per view
                continue
            try:
                pixels.append(self._view(paths[index], view))
                kept.append((index, view))
            except BadImageError as error:
                bad.add(index)
                skipped.append(error)
        if not kept:
            return
        with torch.inference_mode():
            batch = (torch.stack(pixels).float() - self.mean) / self.std
            output = self.forward(batch).float().numpy()
        for (index, view), row in zip(kept, output, strict=True):
            previous = stored.get(index, np.zeros((0, *row.shape), np.float16))
            stored[index] = np.concatenate([previous[:view], row[None].astype(np.float16)])
            if view == views - 1:
                self._store(paths[index], stored[index])

    def _view(self, path: Path, view: int) -> torch.Tensor:
        image = torch.tensor(self.images.load(path)).permute(2, 0, 1).contiguous()
        if self.mirror:
            image = image.flip(-1).contiguous()
        if view == 0 or self.augment is None:
            return image
        key = cache_key(path, self.decode) or str(path)
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(int(key[:8], 16) * 1000 + view)  # view v of this image is always the same
            return self.augment(image)

    def _load(self, path: Path) -> np.ndarray | None:
        key = cache_key(path, self.decode)
        return self.store.load(key) if key else None

    def _store(self, path: Path, features: np.ndarray) -> None:
        key = cache_key(path, self.decode)
        if key:
            self.store.store(key, features)


def recipe_extractor(backbone: nn.Module, recipe: Recipe, image_size: int | None = None) -> FeatureExtractor:
    """An extractor set up exactly as transfer training of `recipe` sets up its own (same preprocessing
    and augmentation settings), so a frozen backbone finds the features training cached."""
    size = image_size or recipe.image_size
    decode = DecodeSettings((size, size), 3, recipe.resize)
    return FeatureExtractor(backbone, decode, tuple(recipe.mean), tuple(recipe.std), recipe.augment)
