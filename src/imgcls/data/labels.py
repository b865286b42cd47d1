"""Labels that do not come from class folders: from file names, or from a CSV of path,label.

Kaggle's Dogs vs Cats `train.zip` is one flat folder of `cat.0.jpg ... dog.12499.jpg`; Oxford
pets name files `Abyssinian_100.jpg`; competitions ship `labels.csv`. Each becomes the same
`Dataset` a class-folder tree gives, so everything downstream (split manifest, cache, training,
evaluation, `data check`) works unchanged. Problems are reported, not guessed: a file whose name
matches no label, a CSV row pointing at a missing file (both listed in `Dataset.notes` and skipped);
a duplicated path, several labels for one path (multi-label is out of scope), an empty label or an
unknown split are errors that give the CSV row numbers.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from imgcls.data.decode import is_image_file
from imgcls.errors import DataError
from imgcls.files import display_path

# class.N.ext (Kaggle), class_N.ext / class-N.ext (Oxford pets): everything before the last number
DEFAULT_NAME_PATTERN = r"^(.+?)[._-]\d+\.[^.]+$"
PATH_COLUMNS = ("path", "file", "filename", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "category")
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
MULTI_LABEL_SEPARATORS = (";", "|")
SHOWN_PROBLEMS = 5  # problem files named in a note; the count is always complete


@dataclass(frozen=True)
class LabelOptions:
    """Where labels come from when DATA is not (only) a tree of class folders."""

    label_from: str = "folder"  # folder: class subfolders | name: the file name (class.N.ext, class_N.ext)
    pattern: str | None = None  # regex with one group, searched in each file name; implies label_from="name"
    csv: Path | None = None  # rows path,label[,split]; paths relative to DATA, else to the CSV's folder

    def __post_init__(self) -> None:
        if self.label_from not in ("folder", "name"):
            raise DataError(f"--label-from {self.label_from!r}: use 'folder' (class subfolders) or 'name' (file names)")
        if self.csv is not None and (self.pattern or self.label_from == "name"):
            raise DataError("--labels FILE.csv and --label-from name/--label-pattern exclude each other: choose one")

    @property
    def from_names(self) -> bool:
        return self.label_from == "name" or self.pattern is not None

    @property
    def is_default(self) -> bool:
        return not self.from_names and self.csv is None

    def as_dict(self) -> dict:
        csv_file = None if self.csv is None else str(self.csv)
        return {"label_from": self.label_from, "pattern": self.pattern, "csv": csv_file}

    @classmethod
    def from_flags(cls, label_from: str = "folder", pattern: str | None = None, csv: Path | str | None = None):
        """The options the label flags ask for, or None for class folders (the default)."""
        options = cls(label_from, pattern, None if csv is None else Path(csv))
        return None if options.is_default else options

    @classmethod
    def from_dict(cls, values: dict) -> LabelOptions:
        csv_file = values.get("csv")
        return cls(values.get("label_from", "folder"), values.get("pattern"), Path(csv_file) if csv_file else None)


@dataclass
class LabelledFiles:
    """Image files with class names (and, from a CSV's split column, split names); `notes` list the skipped."""

    paths: list[Path]
    names: list[str]
    splits: list[str] | None
    notes: list[str]
    skipped: list[Path]


def name_pattern(pattern: str | None) -> re.Pattern:
    """The compiled label regex: the user's (exactly one group) or the class.N.ext default."""
    text = pattern or DEFAULT_NAME_PATTERN
    try:
        compiled = re.compile(text)
    except re.error as error:
        raise DataError(f"--label-pattern {text!r} is not a valid regular expression: {error}") from None
    if compiled.groups != 1:
        raise DataError(
            f"--label-pattern {text!r} has {compiled.groups} groups; it needs exactly one, the label, "
            r"e.g. '^([a-z]+)\.\d+\.jpg$'"
        )
    return compiled


def labels_from_names(root: Path, files: list[Path], pattern: str | None) -> LabelledFiles:
    """Label each image by the regex group found in its file name; names that match nothing are skipped."""
    regex = name_pattern(pattern)
    paths, names, unmatched = [], [], []
    for path in sorted(f for f in files if is_image_file(f)):
        found = regex.search(path.name)
        if found and found.group(1):
            paths.append(path)
            names.append(found.group(1))
        else:
            unmatched.append(path)
    if not paths:
        raise DataError(
            f"{display_path(root)}: no file name matches the label pattern {regex.pattern!r} "
            f"(e.g. {_example(files)}); give one with --label-pattern REGEX (one group: the label)"
        )
    notes = [_skipped_note(unmatched, f"file(s) whose name matches no label ({regex.pattern})")] if unmatched else []
    return LabelledFiles(paths, names, None, notes, unmatched)


def labels_from_csv(csv_path: Path, data_root: Path | None) -> LabelledFiles:
    """Rows path,label[,split] of a CSV; paths relative to `data_root` when it holds them, else to the CSV."""
    rows, columns = _read_csv(csv_path)
    path_column, label_column = _column(columns, PATH_COLUMNS, csv_path), _column(columns, LABEL_COLUMNS, csv_path)
    split_column = "split" if "split" in columns else None
    seen: dict[Path, list[tuple[int, str]]] = defaultdict(list)
    paths, names, splits, missing = [], [], [], []
    for number, row in rows:
        label = (row.get(label_column) or "").strip()
        where = f"{display_path(csv_path)}, row {number}"
        if not label:
            raise DataError(f"{where}: empty label")
        if any(separator in label for separator in MULTI_LABEL_SEPARATORS):
            raise DataError(f"{where}: several labels {label!r}; multi-label classification is not supported")
        path = _resolve(row.get(path_column) or "", csv_path, data_root, where)
        seen[path].append((number, label))
        if len(seen[path]) > 1:
            continue
        if not path.is_file():
            missing.append(path)
            continue
        paths.append(path)
        names.append(label)
        if split_column:
            splits.append(_split_name(row.get(split_column) or "", where))
    _check_repeats(seen, csv_path)
    if not paths:
        raise DataError(f"{display_path(csv_path)}: none of its {len(rows)} rows points at an existing file")
    notes = [_skipped_note(missing, "CSV row(s) pointing at missing files")] if missing else []
    return LabelledFiles(paths, names, splits if split_column else None, notes, missing)


def _read_csv(csv_path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    if not csv_path.is_file():
        raise DataError(f"{display_path(csv_path)}: no such labels file")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            rows = [(number, row) for number, row in enumerate(reader, start=2) if not _blank(row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{display_path(csv_path)}: not a readable CSV file ({error})") from None
    if not rows:
        raise DataError(f"{display_path(csv_path)}: no rows (expected a header path,label and one row per image)")
    return rows, columns


def _blank(row: dict) -> bool:
    return not any(value.strip() for value in row.values() if isinstance(value, str))


def _column(columns: list[str], accepted: tuple[str, ...], csv_path: Path) -> str:
    for name in accepted:
        if name in columns:
            return name
    raise DataError(
        f"{display_path(csv_path)}: no {accepted[0]!r} column (has {', '.join(columns) or 'none'}); "
        f"the header must name {accepted[0]!r} (or {', '.join(accepted[1:])})"
    )


def _resolve(text: str, csv_path: Path, data_root: Path | None, where: str) -> Path:
    text = text.strip()
    if not text:
        raise DataError(f"{where}: empty path")
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    if data_root is not None and (data_root / path).exists():
        return data_root / path
    return csv_path.parent / path


def _split_name(text: str, where: str) -> str:
    name = SPLIT_NAMES.get(text.strip().lower())
    if name is None:
        raise DataError(f"{where}: split {text!r} is not one of train, val (validation), test")
    return name


def _check_repeats(seen: dict[Path, list[tuple[int, str]]], csv_path: Path) -> None:
    for path, entries in seen.items():
        if len(entries) < 2:
            continue
        rows = ", ".join(str(number) for number, _ in entries)
        labels = sorted({label for _, label in entries})
        if len(labels) > 1:
            raise DataError(
                f"{display_path(csv_path)}, rows {rows}: {display_path(path)} has several labels {labels}; "
                "multi-label classification is not supported (one label per image)"
            )
        raise DataError(f"{display_path(csv_path)}, rows {rows}: {display_path(path)} is listed more than once")


def _skipped_note(paths: list[Path], what: str) -> str:
    shown = ", ".join(display_path(p) for p in paths[:SHOWN_PROBLEMS])
    more = f" and {len(paths) - SHOWN_PROBLEMS} more" if len(paths) > SHOWN_PROBLEMS else ""
    return f"skipped {len(paths)} {what}: {shown}{more}"


def _example(files: list[Path]) -> str:
    return next((p.name for p in sorted(files) if is_image_file(p)), "no image files")
