"""`imgcls data split`: build a train/val/test class-folder tree from SRC, with no duplicate leakage.

What users did by hand (seed 002's `make_subset`: 1,000 train, 500 validation and 1,000 test
images per class, copied with shutil), done safely:

- SRC is anything `discover` reads (a class-folder tree, an already split tree, a flat labelled
  folder or a CSV through `LabelOptions`); every split of it is pooled, so it is re-split from scratch.
- Exact duplicates (same sha256) and near-duplicates (dHash distance <= `NEAR_THRESHOLD`, the
  measure of `data check`) are joined into groups (union-find); a group goes wholly into one split,
  so a photo and its copy never end up one in train and the other in test. A group is assigned
  with its majority class; groups whose members carry different labels are kept together and reported.
- Stratified and seeded: each class's groups are shuffled with `seed` and fill each split's quota
  for that class (counts per class, like make_subset, or fractions of the class).
- Files are hard links by default (no space used; a symlink where hard links are impossible, such
  as across file systems), or copies. Everything is written into a hidden sibling folder renamed to
  DEST at the end, so DEST is never half-written; SRC is only read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls.data.discover import Sample, discover
from imgcls.data.hashing import NEAR_THRESHOLD, inspect_files, near_pairs
from imgcls.errors import DataError
from imgcls.files import display_path, shown_path

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
MANIFEST = "split.json"
LINK_MODES = ("link", "copy")


@dataclass
class SplitPlan:
    """What `split_dataset` did: JSON-friendly through `summary()`; `split.json` holds it too."""

    source: Path
    dest: Path
    seed: int
    classes: list[str]
    requested: dict
    counts: dict[str, dict[str, int]]
    groups: list[dict]
    skipped: list[dict]
    links: dict[str, int]
    near_threshold: int
    notes: list[str] = field(default_factory=list)

    @property
    def link_mode(self) -> str:
        used = [mode for mode in ("hardlink", "symlink", "copy") if self.links.get(mode)]
        return "+".join(used) or "none"

    def summary(self) -> dict:
        kept = [g for g in self.groups if g["split"]]
        return {
            "source": display_path(self.source),
            "dest": display_path(self.dest),
            "seed": self.seed,
            "classes": self.classes,
            "requested": self.requested,
            "counts": self.counts,
            "n_images": sum(sum(c.values()) for c in self.counts.values()),
            "groups_kept_together": len(kept),
            "images_in_groups": sum(len(g["members"]) for g in kept),
            "label_conflicts": sum(g["label_conflict"] for g in kept),
            "skipped": len(self.skipped),
            "link_mode": self.link_mode,
            "links": self.links,
            "near_threshold": self.near_threshold,
            "notes": self.notes,
        }

    def manifest(self) -> dict:
        return {**self.summary(), "source": str(self.source), "groups": self.groups, "skipped_files": self.skipped}


def split_dataset(
    src: str | Path,
    dest: Path,
    counts: dict[str, int] | None = None,
    fractions: tuple[float, ...] | None = None,
    seed: int = 0,
    link: bool = True,
    labels=None,
    near_threshold: int | None = None,
    data_dir: Path | None = None,
) -> SplitPlan:
    """Split every image of SRC into DEST/{train,val,test}/<class>/ (see the module docstring).

    `counts`: images per class for each split asked for ({"train": 1000, "val": 500}), the rest is
    left out; `fractions`: shares of each class for train, val[, test] (default 0.7/0.15/0.15);
    `labels`: an `imgcls.data.labels.LabelOptions` for flat folders or CSVs."""
    dest = Path(dest).expanduser()
    near_threshold = NEAR_THRESHOLD if near_threshold is None else near_threshold
    quota_of, asked = _quota_rule(counts, fractions)
    dataset = discover(src, seed=seed, data_dir=data_dir, progress=False, labels=labels)
    root = dataset.root
    _check_dest(dest, root)
    samples = _pool(dataset.splits)
    results = inspect_files([s.path for s in samples])
    skipped = [
        {"path": shown_path(s.path, root), "reason": r.reason}
        for s, r in zip(samples, results, strict=True)
        if r.reason
    ]
    skipped += [{"path": shown_path(path, root), "reason": _unlabelled_reason(path)} for path in dataset.unlabelled]
    readable = [i for i, r in enumerate(results) if r.reason is None]
    samples = [samples[i] for i in readable]
    results = [results[i] for i in readable]
    if not samples:
        raise DataError(f"{display_path(root)}: none of its {len(skipped)} image file(s) can be read")
    groups = _duplicate_groups([r.sha256 for r in results], np.stack([r.dhash for r in results]), near_threshold)
    assignment, notes = _assign(groups, samples, dataset.classes, quota_of, seed)

    plan = SplitPlan(
        source=root,
        dest=dest,
        seed=seed,
        classes=list(dataset.classes),
        requested=asked,
        counts={split: {} for split in asked["splits"]},
        groups=[],
        skipped=skipped,
        links={"hardlink": 0, "symlink": 0, "copy": 0},
        near_threshold=near_threshold,
        notes=notes,
    )
    for members in groups:
        if len(members) > 1:
            names = {dataset.classes[samples[i].label] for i in members}
            plan.groups.append(
                {
                    "split": assignment.get(members[0]),  # None: left out (beyond the counts asked for)
                    "members": [shown_path(samples[i].path, root) for i in members],
                    "classes": sorted(names),
                    "exact": len({results[i].sha256 for i in members}) == 1,
                    "label_conflict": len(names) > 1,
                }
            )
    _write(dest, samples, assignment, dataset.classes, link, plan)
    return plan


# --------------------------------------------------------------------------- quotas


def parse_fractions(text: str | None) -> tuple[float, ...] | None:
    """'0.7,0.15,0.15' -> (0.7, 0.15, 0.15); checked by `split_dataset`."""
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise DataError(f"--fractions {text!r}: expected numbers separated by commas, e.g. 0.7,0.15,0.15") from None


def _quota_rule(counts: dict[str, int] | None, fractions: tuple[float, ...] | None):
    """(function (class name, images of the class) -> {split: images}, the request as JSON), checked."""
    if counts and fractions:
        raise DataError("give either counts (--train/--val/--test) or --fractions, not both")
    if counts:
        counts = {split: n for split, n in counts.items() if n}
        bad = {split: n for split, n in counts.items() if split not in SPLITS or n < 0}
        if bad or not counts:
            raise DataError(f"counts must be positive numbers of images per class for {'/'.join(SPLITS)}, got {bad}")

        def per_class(name: str, available: int) -> dict[str, int]:
            wanted = sum(counts.values())
            if wanted > available:
                asked = ", ".join(f"{split} {n}" for split, n in counts.items())
                raise DataError(
                    f"class {name!r} has {available} usable image(s) (duplicate groups count whole), "
                    f"fewer than the {wanted} asked for per class ({asked})"
                )
            return dict(counts)

        return per_class, {"counts": counts, "splits": list(counts)}
    shares = tuple(fractions or DEFAULT_FRACTIONS)
    if not 2 <= len(shares) <= 3 or any(f < 0 for f in shares) or not 0 < sum(shares) <= 1 + 1e-6:
        raise DataError(
            f"--fractions takes 2 or 3 non-negative shares (train,val[,test]) summing to at most 1, got {shares}"
        )

    def by_fraction(name: str, available: int) -> dict[str, int]:
        return _apportion(available, dict(zip(SPLITS, shares, strict=False)))

    return by_fraction, {"fractions": list(shares), "splits": [s for s, f in zip(SPLITS, shares, strict=False) if f]}


def _apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Whole numbers of images per split closest to `shares` of `total` (largest remainders)."""
    exact = {split: total * share for split, share in shares.items()}
    quota = {split: int(np.floor(x + 1e-9)) for split, x in exact.items()}
    budget = min(total, int(round(total * sum(shares.values()))))
    for split in sorted(exact, key=lambda s: (quota[s] - exact[s], SPLITS.index(s)))[: budget - sum(quota.values())]:
        quota[split] += 1
    return quota


def _assign(
    groups: list[list[int]], samples: list[Sample], classes: list[str], quota_of, seed: int
) -> tuple[dict[int, str], list[str]]:
    """Index of each chosen sample -> split. Per class (a group's majority label), the groups are
    shuffled with `seed` and each goes to the split that lacks the most images and has room for it
    whole; a group that fits nowhere is left out, unless every image is to be used (fractions
    summing to 1), when it goes where the most images are still missing. A group fills its class's
    quota with its images of that class; images of other labels in it ride along (noted)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[list[int]]] = defaultdict(list)
    for members in groups:
        by_class[_majority([samples[i].label for i in members])].append(members)
    assignment: dict[int, str] = {}
    quotas = {}
    for label, name in enumerate(classes):
        class_groups = by_class.get(label, [])
        sizes = [sum(samples[i].label == label for i in g) for g in class_groups]  # other labels ride along
        available = sum(sizes)
        quota = quotas[label] = quota_of(name, available)
        use_all = sum(quota.values()) == available
        missing = dict(quota)
        for k in rng.permutation(len(class_groups)):
            members, size = class_groups[k], sizes[k]
            fits = [s for s in quota if missing[s] >= size]
            if not fits and not use_all:
                continue
            split = max(fits or list(quota), key=lambda s: (missing[s], -SPLITS.index(s)))
            missing[split] -= size
            assignment.update((i, split) for i in members)
            if not use_all and not any(m > 0 for m in missing.values()):
                break
    return assignment, _quota_notes(assignment, samples, classes, quotas)


def _quota_notes(
    assignment: dict[int, str], samples: list[Sample], classes: list[str], quotas: dict[int, dict[str, int]]
) -> list[str]:
    """One line per class whose images per split differ from its quota (each image counted under its own label)."""
    placed = Counter((samples[i].label, split) for i, split in assignment.items())
    notes = []
    for label, quota in quotas.items():
        off = [f"{s} got {placed[label, s]} of {n}" for s, n in quota.items() if placed[label, s] != n]
        if off:
            notes.append(
                f"{classes[label]}: {', '.join(off)} (duplicate groups are kept whole, and a group whose images "
                "carry different labels goes with its majority class)"
            )
    return notes


def _majority(labels: list[int]) -> int:
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))


# --------------------------------------------------------------------------- duplicate groups


def _duplicate_groups(sha256: list[str], hashes: np.ndarray, threshold: int) -> list[list[int]]:
    """Connected components of 'same bytes' and 'dHash within `threshold` bits', each sorted, in
    order of their first member (singletons included)."""
    parent = np.arange(len(sha256))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[str, int] = {}
    for i, sha in enumerate(sha256):
        union(first.setdefault(sha, i), i)
    if len(sha256) > 1:
        for rows, cols, _ in near_pairs(hashes, threshold):
            for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
                union(i, j)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(sha256)):
        members[find(i)].append(i)
    return list(members.values())


# --------------------------------------------------------------------------- writing


def _check_dest(dest: Path, src_root: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{display_path(dest)}: exists and is a file; give a new folder for the split")
    if dest.is_dir() and any(dest.iterdir()):
        raise DataError(f"{display_path(dest)}: is not empty; give a new or empty folder (nothing is overwritten)")
    real_dest, real_src = dest.resolve(), src_root.resolve()
    if real_dest == real_src or real_dest.is_relative_to(real_src):
        raise DataError(f"{display_path(dest)}: is inside the source {display_path(src_root)}, which is never modified")


def _write(
    dest: Path, samples: list[Sample], assignment: dict[int, str], classes: list[str], link: bool, plan: SplitPlan
) -> None:
    """Link or copy the chosen files into a hidden sibling of DEST, then rename it to DEST."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()  # default permissions (tempfile.mkdtemp would make it private)
    try:
        taken: dict[Path, set[str]] = defaultdict(set)
        counts: dict[str, Counter] = {split: Counter() for split in SPLITS}
        order = sorted(assignment, key=lambda i: (SPLITS.index(assignment[i]), str(samples[i].path)))
        for i in order:
            split, sample = assignment[i], samples[i]
            folder = staging / split / classes[sample.label]
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / _free_name(sample.path.name, taken[folder])
            plan.links[_place(sample.path, target, link)] += 1
            counts[split][classes[sample.label]] += 1
        plan.counts = {
            split: {name: counts[split][name] for name in classes}
            for split in SPLITS
            if split in plan.requested["splits"] or counts[split]
        }
        (staging / MANIFEST).write_text(json.dumps(plan.manifest(), indent=1) + "\n")
        _move_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, dest: Path) -> None:
    """Rename the finished tree to DEST; when another `data split` filled DEST meanwhile, it wins and
    this one refuses (nothing of either is overwritten)."""
    try:
        with contextlib.suppress(FileNotFoundError):
            dest.rmdir()  # empty when checked; OSError ENOTEMPTY if another split has filled it since
        os.rename(staging, dest)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        message = "another split was written there meanwhile; nothing overwritten"
        raise DataError(f"{display_path(dest)}: {message}") from None


def _free_name(name: str, taken: set[str]) -> str:
    """`name`, or `stem-2.ext`, `stem-3.ext`... when a file of that name (any case) is already there."""
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{stem}-{n}{suffix}"
    taken.add(candidate.casefold())
    return candidate


def _place(source: Path, target: Path, link: bool) -> str:
    """Hard link (or a symlink where the file system refuses one), or a copy; returns which."""
    if not link:
        shutil.copy2(source, target)
        return "copy"
    try:
        os.link(source, target)  # follows a symlinked source to its file
        return "hardlink"
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
    os.symlink(os.path.abspath(source), target)
    return "symlink"


def _pool(splits: dict[str, list[Sample]]) -> list[Sample]:
    """Every sample of every split once, in path order, so the result does not depend on how SRC was split."""
    unique = {s.path: s for samples in splits.values() for s in samples}
    return [unique[p] for p in sorted(unique, key=str)]


def _unlabelled_reason(path: Path) -> str:
    return "no label in its name" if path.exists() else "listed in the CSV but missing"


# --------------------------------------------------------------------------- printing


def print_split(summary: dict, console) -> None:
    """Counts per split and class, duplicate groups kept together, skipped files, link mode."""
    from rich.table import Table
    from rich.text import Text

    splits = list(summary["counts"])
    console.print(Text.assemble(("Split ", "bold"), summary["source"], " into ", summary["dest"]))
    table = Table(title="Images per class and split", title_justify="left")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for name in summary["classes"]:
        table.add_row(Text(name), *(str(summary["counts"][s].get(name, 0)) for s in splits))
    table.add_row(Text("all", style="bold"), *(str(sum(summary["counts"][s].values())) for s in splits))
    console.print(table)
    conflicts = f", {summary['label_conflicts']} with conflicting labels" if summary["label_conflicts"] else ""
    console.print(
        f"kept {summary['groups_kept_together']} group(s) of duplicates together "
        f"({summary['images_in_groups']} images{conflicts})",
        highlight=False,
    )
    if summary["skipped"]:
        console.print(
            Text(f"skipped {summary['skipped']} unreadable or unlabelled file(s) (see split.json)", style="yellow")
        )
    for note in summary["notes"]:
        console.print(Text(f"note: {note}", style="yellow"))
    modes = {"hardlink": "hard links", "symlink": "symbolic links", "copy": "copies"}
    made = ", ".join(f"{n} {modes[m]}" for m, n in summary["links"].items() if n)
    console.print(Text(f"files: {made or 'none'}; seed {summary['seed']}; manifest {summary['dest']}/{MANIFEST}"))
