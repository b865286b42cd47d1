"""Built-in datasets that can be named instead of given as a folder (``imgcls train cats-vs-dogs``).

Each entry says where the archive lives and which folder it unpacks to; :func:`resolve_builtin`
finds a local copy first (``--data-root``, ``$IMGCLS_DATA``, the cache) so offline machines work, and
downloads only as a last resort. Adding a dataset is one more :class:`BuiltinDataset` below; the
datasets torchvision reads (``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``) are entries of
:data:`imgcls.data.torchvision_sets.TORCHVISION_DATASETS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imgcls.data.download import cache_dir, download_and_extract
from imgcls.data.torchvision_sets import TORCHVISION_DATASETS, resolve_torchvision
from imgcls.errors import DataError


@dataclass(frozen=True)
class BuiltinDataset:
    """A downloadable folder dataset: a zip at ``url`` holding the top-level folder ``folder_name``.

    ``markers`` are paths inside the dataset folder that identify a copy of it whose folder was
    renamed, so ``--data`` can point at the folder itself whatever it is called.
    """

    name: str
    url: str
    folder_name: str
    description: str
    markers: tuple[str, ...] = ()


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    dataset.name: dataset
    for dataset in (
        BuiltinDataset(
            name="cats-vs-dogs",
            url="https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
            folder_name="cats_and_dogs_filtered",
            description=(
                "A filtered version of Kaggle's Dogs vs. Cats dataset (from the TensorFlow image "
                "classification tutorial): 2,000 training and 1,000 validation images of cats and dogs, "
                "in train/{cats,dogs} and validation/{cats,dogs}."
            ),
            markers=("train/cats", "train/dogs", "validation/cats", "validation/dogs"),
        ),
    )
}


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a built-in dataset name rather than a path (callers check this first)."""
    return name in BUILTIN_DATASETS or name in TORCHVISION_DATASETS


def resolve_builtin(name: str, data_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Return the local folder of built-in dataset ``name``, downloading it only if no copy exists.

    Lookup order: ``data_dir`` (the user's ``--data``: the dataset folder itself or a folder
    containing it), ``$IMGCLS_DATA/<folder_name>``, the cache, then a download into the cache.
    A ``data_dir`` without the data is an error rather than a silent download, because the user
    asked for that copy explicitly.
    """
    if name in TORCHVISION_DATASETS:
        return resolve_torchvision(name, data_dir, progress=progress)
    dataset = BUILTIN_DATASETS.get(name)
    if dataset is None:
        known = ", ".join(sorted({*BUILTIN_DATASETS, *TORCHVISION_DATASETS})) or "(none)"
        raise DataError(f"Unknown built-in dataset {name!r}. Known built-in datasets: {known}.")

    if data_dir is not None:
        return _from_data_dir(dataset, Path(data_dir).expanduser())

    env = os.environ.get("IMGCLS_DATA")
    if env:
        candidate = Path(env).expanduser() / dataset.folder_name
        if candidate.is_dir():
            return candidate

    cached = cache_dir() / "datasets" / dataset.folder_name
    if cached.is_dir():
        return cached

    return download_and_extract(dataset.url, dataset.folder_name, progress=progress)


def _from_data_dir(dataset: BuiltinDataset, data_dir: Path) -> Path:
    """The dataset inside (or at) the user's ``--data`` folder, or a DataError explaining what was expected."""
    if not data_dir.is_dir():
        raise DataError(
            f"--data {data_dir} does not exist or is not a folder. Point it at the extracted "
            f"{dataset.folder_name!r} folder of the {dataset.name} dataset (from {dataset.url}) "
            "or at the folder containing it."
        )
    inside = data_dir / dataset.folder_name
    if _looks_like(dataset, inside):
        return inside
    # The folder itself: recognised by its contents, or by its name when there are no markers.
    if _looks_like(dataset, data_dir) and (dataset.markers or data_dir.name == dataset.folder_name):
        return data_dir
    expected = f" (with {', '.join(dataset.markers)})" if dataset.markers else ""
    raise DataError(
        f"--data {data_dir} does not contain the {dataset.name} dataset: expected the folder "
        f"{dataset.folder_name!r}{expected} there, or --data to be that folder itself. Download "
        f"{dataset.url}, extract it, and pass the extracted folder (nothing is downloaded when --data is given)."
    )


def _looks_like(dataset: BuiltinDataset, folder: Path) -> bool:
    """Whether ``folder`` is a copy of ``dataset``: a directory holding all its marker subfolders."""
    return folder.is_dir() and all((folder / marker).is_dir() for marker in dataset.markers)
