"""One read of each image file: its sha256, size, format, a 256-bit difference hash (dHash) and
the statistics of the image-quality checks (`imgcls.data.quality`).

`data check` (duplicates, leakage, unreadable files, image quality) and `data split` (keeping
copies and near copies in one split) both stand on these facts. Every file is read once, in a thread
pool: the same bytes give the sha256 and are fully decoded by `load_image`, exactly as training
decodes them, so truncated files are caught. Results of readable files are cached under path + size
+ mtime.

The near-duplicate threshold (24 of 256 bits) was chosen on the 3000 real photos of the shared
cats_vs_dogs set: the one known duplicate photo (train/dog/dog.74.jpg vs dog.180.jpg) is at
distance 7, while the closest of the ~4.5 million unrelated pairs is at 60 (mean 127, sd 10.5).
On 300 of those photos, re-encoding at JPEG quality 30 moved the hash by at most 23 bits, resizing
to 0.6x plus quality 40 by at most 21, squashing to 224x224 by at most 19. Crops are not caught.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.data.cache import ArrayStore, cache_key
from imgcls.data.decode import MAX_PIXELS, BadImageError, load_image, open_regular
from imgcls.data.download import cache_dir
from imgcls.data.quality import N_STATS, STATS_VERSION, ImageStats, measure

log = logging.getLogger("imgcls")
HASH_SIZE = 16  # dHash on a 17x16 grayscale thumbnail: 16*16 = 256 bits
HASH_BITS = HASH_SIZE * HASH_SIZE
NEAR_THRESHOLD = 24  # Hamming distance out of 256 bits; see the module docstring
_PAIR_BLOCK = 1 << 22  # hash words compared per numpy step (bounds memory to ~32 MB)


@dataclass
class Inspected:
    """What one pass over a file's bytes found."""

    nbytes: int | None = None
    sha256: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    dhash: np.ndarray | None = None  # (HASH_BITS // 64,) uint64
    quality: ImageStats | None = None
    reason: str | None = None  # set when the file cannot be used


class _CheckCacheTag:
    """Cache identity of a file's check results (see `cache_key`): bump the version when they change."""

    @staticmethod
    def tag() -> str:
        return f"check-v2-dhash{HASH_BITS}-quality{N_STATS}v{STATS_VERSION}"


def inspect_files(paths: list[Path], workers: int | None = None) -> list[Inspected]:
    """Read, hash and decode every file once, in threads (hashlib and Pillow release the GIL).

    Results of readable files are cached under path + size + mtime, so a second check (and the
    report written after every training) costs a stat and a tiny read per file."""
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    store = ArrayStore(cache_dir() / "check")

    def inspect(path: Path) -> Inspected:
        return _inspect_cached(path, store)

    with warnings.catch_warnings():  # huge declared sizes are reported below, not warned about
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if workers <= 1 or len(paths) < 2:
            results = [inspect(p) for p in paths]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgcls-check") as pool:
                results = list(pool.map(inspect, paths))
    for path, result in zip(paths, results, strict=True):
        if result.reason == _RETRY:  # rare: ask load_image itself, from the path, for the exact reason
            result.reason = _reason_from_path(path)
    return results


_RETRY = "\0retry"
_HEADER_WORDS = 8  # nbytes, width, height, format (8 bytes), sha256 (4 words)
_RECORD_WORDS = _HEADER_WORDS + HASH_BITS // 64 + N_STATS  # uint64 words; the statistics as float64 bits


def _inspect_cached(path: Path, store: ArrayStore) -> Inspected:
    key = cache_key(path, _CheckCacheTag) if os.access(path, os.R_OK) else None
    record = store.load(key) if key else None
    if record is not None and record.dtype == np.uint64 and record.shape == (_RECORD_WORDS,):
        return _from_record(record)
    result = _inspect(path)
    if key and result.reason is None and result.quality is not None:  # failures are re-examined every time
        store.store(key, _to_record(result))
    return result


def _to_record(result: Inspected) -> np.ndarray:
    fmt = (result.format or "").encode("ascii", "replace")[:8].ljust(8, b"\0")
    header = np.array([result.nbytes, result.width, result.height], dtype=np.uint64)
    words = [header, np.frombuffer(fmt, np.uint64), np.frombuffer(bytes.fromhex(result.sha256), np.uint64)]
    words += [result.dhash.astype(np.uint64), result.quality.as_array().view(np.uint64)]
    return np.concatenate(words)


def _from_record(record: np.ndarray) -> Inspected:
    hash_end = _HEADER_WORDS + HASH_BITS // 64
    return Inspected(
        nbytes=int(record[0]),
        width=int(record[1]),
        height=int(record[2]),
        format=record[3:4].tobytes().rstrip(b"\0").decode("ascii") or None,
        sha256=record[4:8].tobytes().hex(),
        dhash=record[_HEADER_WORDS:hash_end].copy(),
        quality=ImageStats.from_array(record[hash_end:].view(np.float64)),
    )


def _inspect(path: Path) -> Inspected:
    result = Inspected()
    try:
        with open_regular(path) as handle:
            data = handle.read()
    except BadImageError as error:  # a FIFO, socket or device: never read (it could block forever)
        result.reason = error.reason
        return result
    except OSError:
        result.reason = _RETRY
        return result
    result.nbytes = len(data)
    result.sha256 = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise BadImageError(path, "too large")  # load_image(path) refuses it before decoding
            result.format = img.format
            gray = load_image(img, channels=1)[:, :, 0]  # full decode, EXIF orientation applied
            result.quality = _measured(gray, img, path)
    except Exception:  # noqa: BLE001 - any failure: the path-based load_image gives the canonical reason
        result.reason = _RETRY
        return result
    result.height, result.width = (int(n) for n in gray.shape)
    result.dhash = dhash(gray)
    return result


def _measured(gray: np.ndarray, img: Image.Image, path: Path):
    """Quality statistics of the same pixels, on small copies; None if they fail: a readable image
    is never reported unreadable because a statistic could not be taken."""
    try:
        return measure(gray, img)
    except Exception as error:  # noqa: BLE001 - a warning-only check must not turn into an error
        log.warning("%s: no image-quality statistics (%s: %s)", path, type(error).__name__, error)
        return None


def _reason_from_path(path: Path) -> str:
    try:
        load_image(path, channels=1)
    except BadImageError as error:
        return error.reason
    except Exception as error:  # noqa: BLE001 - report, never crash the check
        return f"cannot decode ({type(error).__name__}: {error})"
    return "could not be read consistently (changed while checking?)"


def dhash(gray: np.ndarray, hash_size: int = HASH_SIZE) -> np.ndarray:
    """Difference hash of a 2-D uint8 image: signs of horizontal gradients on a small thumbnail.

    Returned as `hash_size**2 // 64` uint64 words (at least one), for fast XOR + popcount.
    Lanczos keeps the thumbnail stable across resizes and recompression; `reducing_gap` first
    shrinks by an integer factor, which makes it about 6x faster with nearly the same hash.
    """
    thumb = Image.fromarray(np.ascontiguousarray(gray)).resize(
        (hash_size + 1, hash_size), Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    pixels = np.asarray(thumb, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    packed = np.packbits(bits)
    packed = np.pad(packed, (0, -len(packed) % 8))
    return packed.view(">u8").astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(popcount(np.bitwise_xor(a, b)).sum())


_POPCOUNT8 = np.array([bin(n).count("1") for n in range(256)], dtype=np.uint8)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (uint8 result); numpy >= 2 has it built in, 1.26 uses a table."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return _popcount_table(words)


def _popcount_table(words: np.ndarray) -> np.ndarray:
    words = np.ascontiguousarray(words, dtype=np.uint64)
    return _POPCOUNT8[words.view(np.uint8)].reshape(*words.shape, 8).sum(axis=-1, dtype=np.uint8)


def near_pairs(hashes: np.ndarray, threshold: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair i < j of rows of `hashes` (n, words) within `threshold` bits, uncapped.

    Yields blocks of (i, j, distance) int arrays; each block compares a few rows with the rows
    after them, so memory stays bounded (`_PAIR_BLOCK`) however many images there are."""
    n, words = hashes.shape
    block = max(1, _PAIR_BLOCK // (n * words))
    for start in range(0, n - 1, block):
        rows = hashes[start : start + block]
        distance = popcount(rows[:, None, :] ^ hashes[None, start:, :]).sum(axis=2, dtype=np.uint16)
        r, c = np.nonzero(distance <= threshold)
        keep = c > r
        r, c = r[keep], c[keep]
        if len(r):
            yield r + start, c + start, distance[r, c].astype(np.int32)
