"""Decode each image once: resized uint8 pixels cached on disk and reused by later epochs and runs.

Cache key = absolute path + file size + mtime (ns) + every setting that changes the bytes
(target size, channels, resize policy, format version). A changed file or setting misses the
cache, so nothing stale is ever served.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgcls.data.decode import BadImageError, load_image
from imgcls.data.download import cache_dir
from imgcls.progress import progress_bar

CACHE_VERSION = 1


@dataclass(frozen=True)
class DecodeSettings:
    size: tuple[int, int]  # (height, width) in pixels
    channels: int = 3
    policy: str = "squash"

    def tag(self) -> str:
        return f"v{CACHE_VERSION}-{self.size[0]}x{self.size[1]}-c{self.channels}-{self.policy}"


@dataclass
class DecodedImages:
    """A split held in memory: (N, C, H, W) uint8 images, their labels and the files skipped."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    skipped: list[BadImageError]


def cache_key(path: Path, settings: DecodeSettings) -> str | None:
    """Identity of `path`'s current content under `settings` (anything with a `tag()`); None if unreadable."""
    try:
        stat = path.stat()
    except OSError:
        return None
    identity = f"{os.fsencode(path.resolve())!r}|{stat.st_size}|{stat.st_mtime_ns}|{settings.tag()}"
    return hashlib.sha1(identity.encode()).hexdigest()


class ArrayStore:
    """`.npy` files named by key under `folder/<key[:2]>/`, each followed by a 16-byte BLAKE2b digest of
    itself, written atomically (temporary file + rename; no fsync: an entry lost to a crash is only
    decoded again). A damaged entry (cut short, bytes changed) fails its digest and reads as missing;
    a read-only or full disk only costs speed."""

    DIGEST_BYTES = 16

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, key: str) -> np.ndarray | None:
        try:
            raw = self.path(key).read_bytes()
        except OSError:
            return None
        body, digest = raw[: -self.DIGEST_BYTES], raw[-self.DIGEST_BYTES :]
        if len(raw) <= self.DIGEST_BYTES or _digest(body) != digest:
            return None
        try:
            return np.load(io.BytesIO(body), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def store(self, key: str, array: np.ndarray) -> None:
        entry = self.path(key)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        body = buffer.getvalue()
        temporary = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=entry.parent, suffix=".tmp", delete=False) as handle:
                temporary = handle.name
                handle.write(body + _digest(body))
            os.replace(temporary, entry)
        except OSError:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=ArrayStore.DIGEST_BYTES).digest()


class ImageCache:
    """Decoded, resized uint8 images, one `.npy` per image under `root/<settings tag>/`."""

    def __init__(self, settings: DecodeSettings, root: Path | None = None, enabled: bool = True):
        self.settings = settings
        self.folder = (root or cache_dir() / "images") / settings.tag()
        self.store = ArrayStore(self.folder)
        self.enabled = enabled

    def load(self, path: Path) -> np.ndarray:
        key = cache_key(path, self.settings) if self.enabled else None
        cached = self.store.load(key) if key else None
        expected = (*self.settings.size, self.settings.channels)
        if cached is not None and cached.shape == expected and cached.dtype == np.uint8:
            return cached  # a damaged entry (other shape, cut short) is decoded again and rewritten
        array = load_image(path, self.settings.size, self.settings.channels, self.settings.policy)
        if key:
            self.store.store(key, array)
        return array


def decode_all(
    paths: list[Path],
    labels: list[int],
    settings: DecodeSettings,
    cache: ImageCache | None = None,
    workers: int | None = None,
    progress: str | None = None,
) -> DecodedImages:
    """Decode (or fetch from cache) every image in parallel threads; bad files are skipped, not fatal.
    `progress`: the title of a progress bar on stderr (none by default)."""
    cache = cache or ImageCache(settings)

    def load(path: Path) -> np.ndarray | BadImageError:
        try:
            return cache.load(path)
        except BadImageError as error:
            return error

    results: list[np.ndarray | BadImageError] = []
    with (
        ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool,
        progress_bar(progress is not None, progress or "", len(paths)) as advance,
    ):
        for result in pool.map(load, paths):
            results.append(result)
            advance(1)
    height, width = settings.size
    good = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    stacked = np.empty((len(good), height, width, settings.channels), dtype=np.uint8)
    for row, index in enumerate(good):
        stacked[row] = results[index]
    return DecodedImages(
        images=torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous(),
        labels=torch.tensor([labels[i] for i in good], dtype=torch.long),
        paths=[paths[i] for i in good],
        skipped=[r for r in results if isinstance(r, BadImageError)],
    )
