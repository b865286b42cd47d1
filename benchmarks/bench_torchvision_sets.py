"""Built-in torchvision datasets: how long the one-time PNG materialisation and the first decode take.

Writes a synthetic copy in the real format (MNIST IDX files or CIFAR-10 batches, full size by
default: 60,000 + 10,000 or 50,000 + 10,000 images), then times `imgcls train mnist --data-root`'s
data path: materialise the PNG folders, discover the splits, decode every image cold and warm
(the decode cache), and optionally `imgcls data check`.

    python benchmarks/bench_torchvision_sets.py --dataset mnist
    python benchmarks/bench_torchvision_sets.py --dataset cifar10 --check
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import pickle
import shutil
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
from common import peak_rss_mib, write_result
from PIL import Image, ImageDraw, ImageFilter

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def digit_like(rng: np.random.Generator) -> np.ndarray:
    """A 28x28 stroke drawing on black, blurred: compresses like a handwritten digit."""
    image = Image.new("L", (28, 28))
    draw = ImageDraw.Draw(image)
    points = [tuple(int(v) for v in rng.integers(5, 23, 2)) for _ in range(4)]
    draw.line(points, fill=255, width=int(rng.integers(2, 4)))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(0.7)))


def photo_like(rng: np.random.Generator) -> np.ndarray:
    """A 32x32 RGB image: smooth colour regions plus sensor-like noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB").resize((32, 32), Image.BICUBIC)
    noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (32, 32, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder: Path, n_train: int, n_test: int, rng: np.random.Generator) -> Path:
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = np.stack([digit_like(rng) for _ in range(count)])
        labels = rng.integers(0, 10, count).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images), 6))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels), 6))
    return folder


def write_cifar10(folder: Path, n_train: int, n_test: int, rng: np.random.Generator) -> Path:
    """The CIFAR python format is a pickled dict per batch; this benchmark writes its own synthetic files."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    sizes = {f"data_batch_{i}": n_train // 5 for i in range(1, 6)} | {"test_batch": n_test}
    for name, count in sizes.items():
        images = np.stack([photo_like(rng) for _ in range(count)]).transpose(0, 3, 1, 2).reshape(count, 3072)
        entry = {"data": images, "labels": rng.integers(0, 10, count).tolist()}
        (batches / name).write_bytes(pickle.dumps(entry, protocol=2))
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10_CLASSES}, protocol=2))
    return folder


def trust(folder: Path) -> None:
    """torchvision checks CIFAR files against the official MD5s: use the synthetic files' own."""
    import torchvision.datasets as tvd

    def md5(name: str) -> str:
        return hashlib.md5((folder / "cifar-10-batches-py" / name).read_bytes()).hexdigest()

    tvd.CIFAR10.train_list = [[name, md5(name)] for name, _ in tvd.CIFAR10.train_list]
    tvd.CIFAR10.test_list = [[name, md5(name)] for name, _ in tvd.CIFAR10.test_list]
    tvd.CIFAR10.meta = {**tvd.CIFAR10.meta, "md5": md5("batches.meta")}


def disk_usage(folder: Path) -> tuple[int, int, int]:
    """(files, bytes of content, bytes allocated on disk)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return len(files), sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    parser.add_argument("--train", type=int, default=None, help="training images (default: the real count)")
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--check", action="store_true", help="also time `imgcls data check`")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    n_train = args.train or (60_000 if args.dataset == "mnist" else 50_000)

    work = Path(tempfile.mkdtemp(prefix="bench-tv-"))
    os.environ["IMGCLS_CACHE"] = str(work / "cache")
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    writer = write_mnist if args.dataset == "mnist" else write_cifar10
    source = writer(work / "source", n_train, args.test, rng)
    if args.dataset == "cifar10":
        trust(source)
    synth_seconds = time.perf_counter() - started

    from imgcls.data.cache import DecodeSettings, decode_all
    from imgcls.data.discover import discover
    from imgcls.data.torchvision_sets import resolve_torchvision

    result: dict = {"dataset": args.dataset, "n_train": n_train, "n_test": args.test, "synthesis_s": synth_seconds}
    started = time.perf_counter()
    folder = resolve_torchvision(args.dataset, source, progress=False)
    result["materialise_s"] = round(time.perf_counter() - started, 2)
    files, content, allocated = disk_usage(folder)
    result |= {"png_files": files, "png_mib": round(content / 2**20, 1), "on_disk_mib": round(allocated / 2**20, 1)}

    started = time.perf_counter()
    resolve_torchvision(args.dataset, source, progress=False)
    result["resolve_again_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    dataset = discover(args.dataset, 0.1, 0, source, progress=False)
    result["discover_s"] = round(time.perf_counter() - started, 2)

    size = 28 if args.dataset == "mnist" else 32
    settings = DecodeSettings((size, size), 1 if args.dataset == "mnist" else 3)
    samples = [s for split in dataset.splits.values() for s in split]
    for label in ("decode_cold_s", "decode_warm_s"):
        started = time.perf_counter()
        decode_all([s.path for s in samples], [s.label for s in samples], settings)
        result[label] = round(time.perf_counter() - started, 2)

    if args.check:
        from imgcls.data.check import check_dataset

        started = time.perf_counter()
        report = check_dataset(args.dataset, val_split=0.1, data_dir=source)
        result["data_check_s"] = round(time.perf_counter() - started, 2)
        result["data_check_ok"] = report["ok"]
    result["peak_rss_mib"] = round(peak_rss_mib())
    shutil.rmtree(work, ignore_errors=True)
    write_result(f"torchvision-sets-{args.dataset}{args.tag}", result)


if __name__ == "__main__":
    main()
