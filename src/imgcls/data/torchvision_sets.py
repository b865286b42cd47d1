"""The classic datasets of the seeds (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100) as ordinary image folders.

Everything downstream (split.json, evaluate, mistakes with file paths, data check, the decode
cache) works on image files in class folders, so each dataset is read once through its
torchvision class and written out as ``<cache>/datasets/<name>/{train,test}/<class>/<index>.png``.
PNG is lossless, so the pixels are exactly the dataset's; ``<index>`` is the image's position in
the official split. The official test set becomes ``test/``, on which training reports its final
metrics; validation is held out of ``train/`` by ``--val-split``, as the seeds do with
``validation_split=0.1``.

Where the files come from: a local copy in torchvision's layout given with ``--data-root``
(or found under ``$IMGCLS_DATA``), otherwise torchvision's own download into the cache. A local
copy is materialised into a folder named after its files' identity (path, size, mtime), so a
changed copy is written again rather than served stale. Folders appear in one rename, complete,
and a file lock keeps parallel processes (DDP ranks) from writing the same one twice.
Adding a dataset is one more :class:`TorchvisionDataset` entry in ``TORCHVISION_DATASETS``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import json
import os
import pickle
import re
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from imgcls.data.download import cache_dir
from imgcls.errors import DataError
from imgcls.files import display_path
from imgcls.progress import progress_bar

PNG_COMPRESS_LEVEL = 1  # zlib level 1: as small as level 6 on these tiny images, and faster to write
SOURCE_FILE = ".imgcls-source.json"  # provenance of a materialised folder (discover ignores dot files)
DOWNLOAD_TIMEOUT = 30  # seconds without an answer before a download counts as failed
# What torchvision's readers raise on damaged files: IDX parsing asserts, CIFAR batches are pickles.
_READ_ERRORS = (
    RuntimeError,
    AssertionError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OSError,
    EOFError,
    pickle.UnpicklingError,
)
_DOWNLOAD_ERRORS = (RuntimeError, urllib.error.URLError, OSError, http.client.HTTPException)
_UNSAFE_CHARS = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


@dataclass(frozen=True)
class TorchvisionDataset:
    """A dataset that ``torchvision.datasets.<class_name>`` reads and downloads; ``name`` is what users type."""

    name: str
    class_name: str
    description: str

    def dataset_class(self) -> type:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.class_name)


TORCHVISION_DATASETS: dict[str, TorchvisionDataset] = {
    dataset.name: dataset
    for dataset in (
        TorchvisionDataset(
            "mnist", "MNIST", "Handwritten digits 0-9: 60,000 training and 10,000 test images, 28x28 grayscale."
        ),
        TorchvisionDataset(
            "fashion-mnist",
            "FashionMNIST",
            "Zalando's clothes in 10 classes: 60,000 training and 10,000 test images, 28x28 grayscale.",
        ),
        TorchvisionDataset(
            "cifar10", "CIFAR10", "10 classes of objects: 50,000 training and 10,000 test images, 32x32 colour."
        ),
        TorchvisionDataset(
            "cifar100", "CIFAR100", "100 fine classes: 50,000 training and 10,000 test images, 32x32 colour."
        ),
    )
}


def resolve_torchvision(name: str, data_root: Path | None = None, *, progress: bool = True) -> Path:
    """Return the image folder of dataset ``name``, materialising it first if needed.

    Lookup order: ``data_root`` (the user's ``--data-root``; missing files there are an error,
    never a download), a copy in torchvision's layout under ``$IMGCLS_DATA``, the folder already
    in the cache, then torchvision's download.
    """
    dataset = TORCHVISION_DATASETS[name]
    if data_root is not None:
        data_root = Path(data_root).expanduser()
        files = find_local_copy(dataset, data_root, layout_only=False)
        if files is None:
            raise DataError(_not_found_message(dataset, data_root))
        return _materialise_local(dataset, files, progress)
    env = os.environ.get("IMGCLS_DATA")
    if env and (files := find_local_copy(dataset, Path(env).expanduser(), layout_only=True)) is not None:
        return _materialise_local(dataset, files, progress)
    target = datasets_dir() / dataset.name
    if target.is_dir():
        return target
    with _lock(target):
        if target.is_dir():  # another process finished it while we waited
            return target
        downloads = datasets_dir() / f".download-{dataset.name}"
        _download(dataset, downloads, progress)
        materialise(dataset, downloads, target, source="torchvision download", progress=progress)
    shutil.rmtree(downloads, ignore_errors=True)  # the PNG folder is the cached copy now
    return target


def datasets_dir() -> Path:
    return cache_dir() / "datasets"


# --------------------------------------------------------------------------- local copies


def expected_files(dataset: TorchvisionDataset) -> list[PurePosixPath]:
    """The files the torchvision class reads, relative to its ``root`` (its on-disk layout)."""
    from torchvision.datasets import CIFAR10, MNIST

    cls = dataset.dataset_class()
    if issubclass(cls, MNIST):  # root/MNIST/raw/train-images-idx3-ubyte ... (the archives, unpacked)
        return [PurePosixPath(cls.__name__, "raw", os.path.splitext(name)[0]) for name, _ in cls.resources]
    if issubclass(cls, CIFAR10):  # root/cifar-10-batches-py/data_batch_1 ... batches.meta
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [PurePosixPath(cls.base_folder, name) for name in names]
    raise TypeError(f"{cls.__name__}: no known file layout; add one to expected_files")


def find_local_copy(dataset: TorchvisionDataset, folder: Path, *, layout_only: bool) -> dict[str, Path] | None:
    """Map each expected file to where it lies under ``folder``, or None if any is missing.

    Each file may be plain or gzipped (``.gz``). ``folder`` is a torchvision root (``MNIST/raw/...``);
    unless ``layout_only``, it may also be a folder further down that layout (``MNIST/``, ``raw/``,
    ``cifar-10-batches-py/``) or any folder holding the files themselves, such as Keras'
    ``~/.keras/datasets/fashion-mnist``. ``$IMGCLS_DATA`` is layout-only because MNIST and
    Fashion-MNIST use the same file names.
    """
    found = {str(relative): _locate(relative, folder, layout_only) for relative in expected_files(dataset)}
    return None if any(path is None for path in found.values()) else found  # type: ignore[return-value]


def _locate(relative: PurePosixPath, folder: Path, layout_only: bool) -> Path | None:
    """``folder/MNIST/raw/NAME[.gz]``, then (unless ``layout_only``) ``folder/raw/NAME[.gz]``, ``folder/NAME[.gz]``."""
    parents = relative.parts[:-1]
    for depth in range(1 if layout_only else len(parents) + 1):
        for suffix in ("", ".gz"):
            path = folder.joinpath(*parents[depth:], relative.name + suffix)
            if path.is_file():
                return path
    return None


def _materialise_local(dataset: TorchvisionDataset, files: dict[str, Path], progress: bool) -> Path:
    """The folder of this exact local copy, written on first use (keyed by the files' identity)."""
    target = datasets_dir() / f"{dataset.name}-{_identity(files)}"
    if target.is_dir():
        return target
    with _lock(target):
        if target.is_dir():
            return target
        staging = datasets_dir() / f".tmp-{target.name}-src-{uuid.uuid4().hex[:8]}"
        try:
            _stage(files, staging)
            source = str(Path(os.path.commonpath([str(p.parent) for p in files.values()])))
            materialise(dataset, staging, target, source=source, progress=progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _identity(files: dict[str, Path]) -> str:
    """Short digest of where the files are, their sizes and mtimes: a changed copy gets a new folder."""
    digest = hashlib.sha1()
    for relative, path in sorted(files.items()):
        stat = path.stat()
        digest.update(f"{relative}|{os.fsencode(path.resolve())!r}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def _stage(files: dict[str, Path], root: Path) -> None:
    """Lay the files out under ``root`` as torchvision expects: links to plain files, gzipped ones unpacked.

    The user's folder is only read, never written to.
    """
    for relative, source in files.items():
        dest = root / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".gz":
            try:
                with gzip.open(source, "rb") as packed, open(dest, "wb") as unpacked:
                    shutil.copyfileobj(packed, unpacked)
            except (OSError, EOFError, gzip.BadGzipFile) as error:
                raise DataError(f"{display_path(source)}: not a readable gzip file ({error})") from None
            continue
        try:
            dest.symlink_to(source.resolve())
        except OSError:  # no symlinks on this file system (or platform): copy instead
            shutil.copyfile(source, dest)


# --------------------------------------------------------------------------- download


def _download(dataset: TorchvisionDataset, root: Path, progress: bool) -> None:
    """torchvision's own download (mirrors, checksums, unpacking) into ``root``, errors made DataErrors."""
    cls = dataset.dataset_class()
    try:
        with _quiet(progress), _socket_timeout(DOWNLOAD_TIMEOUT):
            cls(str(root), train=True, download=True)
    except _DOWNLOAD_ERRORS as error:
        raise DataError(_download_message(dataset, error)) from None


def source_urls(dataset: TorchvisionDataset) -> list[str]:
    """Where torchvision downloads the dataset from (first mirror), for messages."""
    cls = dataset.dataset_class()
    if hasattr(cls, "mirrors"):
        return [f"{cls.mirrors[0]}{name}" for name, _ in cls.resources]
    return [cls.url]


def _layout_hint(dataset: TorchvisionDataset) -> str:
    """How to lay the downloaded files out in DIR so that torchvision finds them."""
    cls = dataset.dataset_class()
    if hasattr(cls, "mirrors"):
        return f"put the files in DIR/{cls.__name__}/raw/ (as downloaded, .gz, or unpacked)"
    return f"extract {cls.filename} in DIR (giving DIR/{cls.base_folder}/)"


def _download_message(dataset: TorchvisionDataset, error: BaseException) -> str:
    """One paragraph: what failed, the likely cause (offline, or a damaged download), and the way around it."""
    urls = source_urls(dataset)
    hosts = sorted({urllib.parse.urlparse(url).hostname or url for url in urls})
    reason = " ".join(str(getattr(error, "reason", None) or error).split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    if "corrupted" in reason:  # torchvision's words for a file failing its MD5 check
        cause = "The downloaded files did not match their checksums (a damaged transfer, or a proxy's page); run "
        cause += "the command again to download them afresh, or, if it keeps failing,"
    else:
        cause = f"This machine seems to be offline, or {', '.join(hosts)} cannot be reached from it. On a machine "
        cause += "with internet access"
    return (
        f"Could not download the {dataset.name} dataset through torchvision ({reason}). {cause} download "
        f"{' '.join(urls)}; then {_layout_hint(dataset)} and pass `--data-root DIR`, or set the IMGCLS_DATA "
        "environment variable to DIR (--data-root also accepts a folder holding the files themselves)."
    )


def _not_found_message(dataset: TorchvisionDataset, folder: Path) -> str:
    if not folder.is_dir():
        problem = "does not exist or is not a folder"
    else:
        missing = [rel.name for rel in expected_files(dataset) if _locate(rel, folder, False) is None]
        problem = f"does not hold the {dataset.name} files (missing: {', '.join(missing)})"
    return (
        f"--data-root {display_path(folder)} {problem}. Download {' '.join(source_urls(dataset))}; then "
        f"{_layout_hint(dataset)} and pass --data-root DIR, or pass the folder holding the files themselves "
        "(nothing is downloaded when --data-root is given)."
    )


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """torchvision prints to stdout while downloading: send that to stderr (stdout may carry --json);
    without ``progress`` drop its progress bars too."""
    with contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
        if progress:
            yield
            return
        with contextlib.redirect_stderr(io.StringIO()):
            yield


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's downloads set no timeout; without one an unreachable server hangs for minutes."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# --------------------------------------------------------------------------- materialise


def materialise(dataset: TorchvisionDataset, root: Path, target: Path, *, source: str, progress: bool = True) -> Path:
    """Write the train and test splits read from torchvision ``root`` as PNG class folders at ``target``.

    Everything goes to a hidden temporary sibling that is renamed to ``target`` when complete,
    so ``target`` never exists half-written. Callers hold the lock of ``target``.
    """
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        counts = {}
        for split in ("train", "test"):
            images = open_split(dataset, root, train=split == "train")
            counts[split] = _write_split(images, tmp / split, f"{dataset.name} {split}", progress)
        provenance = {"dataset": dataset.name, "torchvision_class": dataset.class_name, "source": source}
        (tmp / SOURCE_FILE).write_text(json.dumps({**provenance, "counts": counts}, indent=1))
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def open_split(dataset: TorchvisionDataset, root: Path, train: bool) -> Any:
    """The torchvision dataset object of one split, reading files only (no download).

    CIFAR's batches are Python pickles: that is the format, and torchvision's CIFAR class is the
    only place imgcls lets them be unpickled (these files come from the dataset's publishers).
    """
    cls = dataset.dataset_class()
    try:
        images = cls(str(root), train=train, download=False)
        if len(images.data) != len(images.targets):
            raise ValueError(f"{len(images.data)} images but {len(images.targets)} labels")
    except _READ_ERRORS as error:
        raise DataError(
            f"The {dataset.name} files could not be read by torchvision.datasets.{dataset.class_name} "
            f"({' '.join(str(error).split()) or type(error).__name__}); they may be truncated or corrupt. "
            "Replace them with fresh copies (or delete them to download again)."
        ) from None
    return images


def class_folder_names(classes: list[str]) -> list[str]:
    """torchvision's class names made safe as folder names on every OS (``T-shirt/top`` -> ``T-shirt_top``)."""
    names = []
    for index, name in enumerate(classes):
        safe = _UNSAFE_CHARS.sub("_", str(name)).strip(" .") or f"class_{index}"
        names.append(safe if safe not in names else f"{safe}_{index}")
    return names


def _write_split(images: Any, folder: Path, title: str, progress: bool) -> dict[str, int]:
    """Save every (PIL image, label) of ``images`` as ``folder/<class>/<index>.png``; returns counts per class."""
    names = class_folder_names(list(images.classes))
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    total = len(images)
    width = len(str(max(total - 1, 0)))
    labels = [int(label) for label in images.targets]
    bad = next((i for i, label in enumerate(labels) if not 0 <= label < len(names)), None)
    if bad is not None:
        raise DataError(f"{title}: image {bad} has label {labels[bad]}, outside the {len(names)} classes")

    def write(indices: range) -> int:
        for index in indices:
            image, _ = images[index]
            image.save(folder / names[labels[index]] / f"{index:0{width}d}.png", compress_level=PNG_COMPRESS_LEVEL)
        return len(indices)

    chunks = [range(start, min(start + 500, total)) for start in range(0, total, 500)]
    with progress_bar(progress, f"Writing {title} as PNG", total) as advance, ThreadPoolExecutor() as pool:
        for done in pool.map(write, chunks):
            advance(done)
    per_label = Counter(labels)
    return {name: per_label[label] for label, name in enumerate(names)}


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    """One process at a time materialises ``target`` (DDP ranks, two terminals); the others wait.

    Holding the lock, temporary folders of ``target`` left by a killed run are removed.
    """
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        stale = re.compile(rf"\.tmp-{re.escape(target.name)}-(src-)?[0-9a-f]{{8}}")
        for entry in target.parent.iterdir():
            if stale.fullmatch(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
        yield
