"""Find classes, splits and image files in DATA, before any pixel is decoded.

Accepted layouts (the same as Keras, Ultralytics and torchvision's ImageFolder):
- `DATA/<class>/...`: one pool, split into train/val by a seeded, stratified `val_split`;
- `DATA/train/<class>/...` with `DATA/val/` or `DATA/validation/` and optional `DATA/test/`;
- a built-in dataset name such as `cats-vs-dogs`;
- with `LabelOptions` (see `imgcls.data.labels`): a flat folder labelled by file names
  (`cat.0.jpg`, optionally inside train/ val/ test/ folders), or a CSV of path,label[,split].
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls.data.decode import is_image_file
from imgcls.data.labels import LabelOptions, labels_from_csv, labels_from_names
from imgcls.errors import DataError
from imgcls.files import display_path

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass
class Dataset:
    """Where every image is and which split it belongs to; `source` says how splits were made."""

    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]]
    source: str = "folders"  # folders | csv | names: splits as given; "...val_split=F,seed=N": made here
    notes: list[str] = field(default_factory=list)
    unlabelled: list[Path] = field(default_factory=list)  # skipped: no label in the name, or a missing CSV file
    labels: LabelOptions | None = None  # where labels came from, when not from class folders

    @property
    def split_is_generated(self) -> bool:
        return "val_split=" in self.source

    @property
    def eval_split(self) -> str:
        """Where a model of this data is scored: the test split when there is one, else val."""
        return "test" if "test" in self.splits else "val"

    def pooled(self) -> list[Sample]:
        """Every sample of every split, in path order: for a look at all the data at once."""
        return sorted((s for samples in self.splits.values() for s in samples), key=lambda s: str(s.path))

    @property
    def size(self) -> int:
        return sum(map(len, self.splits.values()))

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split: {self.classes[k]: v for k, v in sorted(Counter(s.label for s in samples).items())}
            for split, samples in self.splits.items()
        }

    def split_manifest(self) -> dict:
        """The split as relative paths, saved in the run so evaluation reuses exactly it."""
        return {
            "root": str(self.root),
            "classes": self.classes,
            "source": self.source,
            "labels": self.labels.as_dict() if self.labels else None,
            "splits": {
                name: [[_relative(s.path, self.root), s.label] for s in samples]
                for name, samples in self.splits.items()
            },
        }


def discover(
    data: str | Path | None,
    val_split: float = 0.2,
    seed: int = 0,
    data_dir: Path | None = None,
    progress: bool = True,
    labels: LabelOptions | None = None,
) -> Dataset:
    """Resolve DATA (folder or built-in name) into classes and train/val[/test] samples.

    `labels`: file names or a CSV instead of class folders; DATA may be None with a CSV (paths are
    then relative to the CSV's folder)."""
    labels = labels or LabelOptions()
    if data is None and labels.csv is not None:
        return _labelled(labels.csv.parent, labels, val_split, seed)
    root = _data_root(data, data_dir, progress)
    if not labels.is_default:
        return _labelled(root, labels, val_split, seed)
    split_dirs = find_split_dirs(root)
    if "train" in split_dirs:
        classes = class_names(split_dirs["train"])
        splits = {name: list_samples(folder, classes) for name, folder in split_dirs.items()}
        if "val" not in splits:
            splits["train"], splits["val"] = stratified_split(splits["train"], val_split, seed)
            return Dataset(root, classes, splits, f"val_split={val_split},seed={seed}")
        return Dataset(root, classes, splits, "folders")
    classes = class_names(root)
    pool = list_samples(root, classes)
    train, val = stratified_split(pool, val_split, seed)
    return Dataset(root, classes, {"train": train, "val": val}, f"val_split={val_split},seed={seed}")


def _data_root(data: str | Path | None, data_dir: Path | None, progress: bool) -> Path:
    from imgcls.data.builtin import is_builtin, resolve_builtin

    if data is None:
        raise DataError("no DATA given: a folder, a built-in dataset name, or --labels FILE.csv")
    if isinstance(data, str) and is_builtin(data):
        root = resolve_builtin(data, data_dir, progress=progress)
    else:
        root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{display_path(root)}: no such folder (nor a built-in dataset name)")
    if not root.is_dir():
        raise DataError(f"{display_path(root)}: expected a folder of class subfolders, got a file")
    return root


def _labelled(root: Path, labels: LabelOptions, val_split: float, seed: int) -> Dataset:
    """A Dataset from file-name or CSV labels; splits from split folders or the CSV's split column,
    else a seeded stratified `val_split` (train/ without val/ is split the same way)."""
    if labels.csv is not None:
        found, kind = labels_from_csv(labels.csv.expanduser(), root), "csv"
        given = found.splits
    else:
        split_dirs = find_split_dirs(root)
        folders = split_dirs or {"train": root}
        found = labels_from_names(root, [f for d in folders.values() for f in _walk_files(d)], labels.pattern)
        kind, given = "names", _split_of(found.paths, folders) if split_dirs else None
    classes = sorted(set(found.names))
    if len(classes) < 2:
        where = display_path(labels.csv or root)
        raise DataError(f"{where}: only one class ({classes[0]}); a classifier needs at least two.")
    samples = [Sample(path, classes.index(name)) for path, name in zip(found.paths, found.names, strict=True)]
    if given is None:
        splits = {"train": samples}
    else:
        splits = {name: [s for s, split in zip(samples, given, strict=True) if split == name] for name in SPLIT_FOLDERS}
    if not splits["train"]:
        raise DataError(f"{display_path(labels.csv or root)}: no image is in the train split")
    source = kind
    if not splits.get("val"):
        splits["train"], splits["val"] = stratified_split(splits["train"], val_split, seed)
        source = f"{kind},val_split={val_split},seed={seed}"
    splits = {name: members for name, members in splits.items() if members}
    return Dataset(root, classes, splits, source, notes=found.notes, unlabelled=found.skipped, labels=labels)


def _split_of(paths: list[Path], folders: dict[str, Path]) -> list[str]:
    return [next(name for name, folder in folders.items() if folder in path.parents) for path in paths]


def from_manifest(manifest: dict) -> Dataset:
    """Rebuild the exact split a run was trained on (see `Dataset.split_manifest`)."""
    root = Path(manifest["root"])
    splits = {name: [Sample(root / rel, label) for rel, label in items] for name, items in manifest["splits"].items()}
    labels = LabelOptions.from_dict(manifest["labels"]) if manifest.get("labels") else None
    return Dataset(root, list(manifest["classes"]), splits, manifest.get("source", "folders"), labels=labels)


def find_split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    if found and "train" not in found:
        raise DataError(f"{display_path(root)}: has {', '.join(p.name for p in found.values())}/ but no train/ folder")
    return found


def class_names(folder: Path) -> list[str]:
    """Class subfolders of `folder`, checked: at least two, none empty."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        loose = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(
            f"{display_path(folder)}: no class subfolders{hint}. Put each class's images in its own "
            f"subfolder, e.g. {display_path(folder / 'cats')}/ and {display_path(folder / 'dogs')}/"
            + (f", or label them by name: --label-from name (e.g. {loose[0].name})" if loose else "")
            + ", or give a CSV of labels: --labels FILE.csv"
        )
    empty = [p for p in subdirs if not any(is_image_file(f) for f in _walk_files(p))]
    if empty:
        names = ", ".join(display_path(p) for p in empty)
        raise DataError(f"class folder(s) with no images: {names}. Add images or remove the folder.")
    if len(subdirs) < 2:
        raise DataError(f"{display_path(folder)}: only one class ({subdirs[0].name}); a classifier needs at least two.")
    return [p.name for p in subdirs]


def list_samples(folder: Path, classes: list[str]) -> list[Sample]:
    present = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    unknown = sorted(present - set(classes))
    if unknown:
        raise DataError(f"{display_path(folder)}: class folder(s) {unknown} are not in the training classes {classes}")
    samples = []
    for label, name in enumerate(classes):
        files = sorted(_walk_files(folder / name)) if name in present else []
        samples += [Sample(f, label) for f in files if is_image_file(f)]
    if not samples:
        raise DataError(f"{display_path(folder)}: no images found")
    return samples


def stratified_split(samples: list[Sample], val_split: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded per-class split: every class keeps the same share in train and val."""
    if not 0 < val_split < 1:
        raise DataError(f"--val-split must be between 0 and 1, got {val_split}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted({s.label for s in samples}):
        members = [s for s in samples if s.label == label]
        order = rng.permutation(len(members))
        n_val = int(round(len(members) * val_split))
        n_val = min(max(n_val, 1), len(members) - 1) if len(members) > 1 else 0
        val += [members[i] for i in sorted(order[:n_val])]
        train += [members[i] for i in sorted(order[n_val:])]
    return train, val


def _walk_files(folder: Path) -> list[Path]:
    """Every file below `folder`; linked folders are followed once per real path, never into a loop,
    a folder already listed, or an ancestor of `folder` (its other classes would come in as copies)."""
    files, seen = [], set()
    top = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or (real != top and _is_ancestor(real, top)):
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files += [Path(dirpath) / f for f in filenames]
    return files


def _is_ancestor(folder: str, of: str) -> bool:
    return of.startswith(folder.rstrip(os.sep) + os.sep)


def _relative(path: Path, root: Path) -> str:
    try:
        return os.fsdecode(path.relative_to(root))
    except ValueError:
        return os.fsdecode(path)
