"""`imgcls data check`: counts, formats, sizes, unreadable files, duplicates, leakage and imbalance.

Every file is read once (in a thread pool): the same bytes give its sha256 and are fully decoded
by `load_image`, exactly as training would decode them, so truncated files are caught. The
decoded pixels also give a 256-bit difference hash (dHash) for near-duplicates:

- exact duplicates: same sha256. A copy in two splits is leakage (the model is scored on
  images it trained on); a copy under two classes is a label conflict. Both make `ok` false,
  as do unreadable files.
- near-duplicates: dHash Hamming distance <= `near_threshold` (re-encoded, resized, recompressed
  copies). They are reported as warnings, because a perceptual hash can only suggest.
- image quality (near-blank, dark, bright, blurry, tiny, odd aspect ratio, grayscale among colour,
  and with backbone features far from their class): warnings too, from statistics of the same
  decoded pixels; the checks and their thresholds are explained in `imgcls.data.quality`.

The threshold and the hashing are explained in `imgcls.data.hashing`.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from imgcls.data.discover import Dataset, discover
from imgcls.data.hashing import HASH_BITS, NEAR_THRESHOLD, Inspected, inspect_files, near_pairs
from imgcls.data.labels import LabelOptions
from imgcls.data.quality import FeatureSource, QualityThresholds, outlier_scores, quality_findings
from imgcls.files import display_path, shown_path

IMBALANCE_LIMIT = 1.5  # largest/smallest train class above this is flagged
MAX_NEAR_PAIRS = 1000  # near-duplicate pairs kept in the report (closest first); the total is always given


def check_dataset(
    data: str | Path | Dataset | None,
    val_split: float = 0.2,
    seed: int = 0,
    data_dir: Path | None = None,
    near_threshold: int = NEAR_THRESHOLD,
    workers: int | None = None,
    near_limit: int | None = None,
    labels: LabelOptions | None = None,
    quality: QualityThresholds | None = None,
    features: FeatureSource | None = None,
) -> dict:
    """Inspect every image of DATA and return a JSON-serialisable report (see module docstring).

    `near_limit`: skip the all-pairs near-duplicate search above this many images (it grows with
    the square of the count: minutes for MNIST's 70,000); a note says so. DATA may be a `Dataset`
    already discovered (a run's own split): exactly its files are checked. `quality`: the
    thresholds of the image-quality checks; `features`: backbone features of the readable files
    for the outlier check (computed by a higher layer; None: not searched, a note says so)."""
    started = time.perf_counter()
    if isinstance(data, Dataset):
        dataset = data
    else:
        dataset = discover(data, val_split=val_split, seed=seed, data_dir=data_dir, labels=labels)
    root, classes = dataset.root, dataset.classes
    files = [
        {"path": shown_path(sample.path, root), "split": split, "class": classes[sample.label]}
        for split, samples in dataset.splits.items()
        for sample in samples
    ]
    paths = [sample.path for samples in dataset.splits.values() for sample in samples]
    results = inspect_files(paths, workers=workers)

    readable = [i for i, r in enumerate(results) if r.reason is None]
    counts = dataset.counts()
    report: dict = {
        "root": display_path(root),
        "source": dataset.source,
        "classes": list(classes),
        "n_images": len(files),
        "splits": {
            split: {
                "counts": {name: counts[split].get(name, 0) for name in classes},
                "n_images": len(samples),
            }
            for split, samples in dataset.splits.items()
        },
        "formats": dict(Counter(results[i].format or "unknown" for i in readable).most_common()),
        "sizes": _sizes([results[i] for i in readable]),
        "unreadable": [{**files[i], "reason": r.reason} for i, r in enumerate(results) if r.reason is not None],
        "unlabelled": [shown_path(path, root) for path in dataset.unlabelled],  # no label in the name / CSV
        "exact_duplicates": _exact_duplicates(files, results),
        "near_threshold": int(near_threshold),
        "hash": f"dhash-{HASH_BITS}",
    }
    if near_limit is not None and len(files) > near_limit:
        near, near_total = [], 0
        dataset.notes.append(f"near-duplicates not searched ({len(files):,} images); `imgcls data check` does it")
    else:
        near, near_total = _near_duplicates(files, results, near_threshold)
    report["near_duplicates"] = near
    report["near_duplicates_total"] = near_total
    report["quality"] = _quality(files, paths, results, quality or QualityThresholds(), features)
    report["imbalance"] = _imbalance(report["splits"].get("train", {}).get("counts", {}))
    report["notes"] = _notes(dataset.source, dataset.splits, val_split, seed) + list(dataset.notes)
    if not report["quality"]["outliers_searched"]:
        report["notes"].append("outliers in feature space not searched: `imgcls data check --outliers` computes them")
    report["errors"], warned = _problems(report)
    report["problems"] = report["errors"] + warned
    report["ok"] = not report["errors"]
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


# --------------------------------------------------------------------------- findings


def _exact_duplicates(files: list[dict], results: list[Inspected]) -> list[dict]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, result in enumerate(results):
        if result.sha256 is not None:
            groups[result.sha256].append(i)
    found = []
    for sha, members in groups.items():
        if len(members) < 2:
            continue
        copies = [files[i] for i in members]
        found.append(
            {
                "sha256": sha,
                "files": copies,
                "cross_split": len({f["split"] for f in copies}) > 1,
                "label_conflict": len({f["class"] for f in copies}) > 1,
            }
        )
    found.sort(key=lambda g: (not g["cross_split"], not g["label_conflict"], g["files"][0]["path"]))
    return found


def _near_duplicates(files: list[dict], results: list[Inspected], threshold: int) -> tuple[list[dict], int]:
    """Pairs of different contents whose dHash differ by <= threshold bits (all pairs, blockwise)."""
    index = [i for i, r in enumerate(results) if r.dhash is not None]
    if len(index) < 2:
        return [], 0
    hashes = np.stack([results[i].dhash for i in index])
    content_ids: dict[str | None, int] = {}
    content = np.array([content_ids.setdefault(results[i].sha256, len(content_ids)) for i in index])
    found_i, found_j, found_d = [], [], []
    kept, total = 0, 0
    for r, c, d in near_pairs(hashes, threshold):
        keep = content[r] != content[c]  # byte-identical copies are exact duplicates
        r, c, d = r[keep], c[keep], d[keep]
        if not len(r):
            continue
        total += len(r)
        found_i.append(r)
        found_j.append(c)
        found_d.append(d)
        kept += len(r)
        if kept > 4 * MAX_NEAR_PAIRS:  # keep memory bounded when a dataset is full of near-copies
            found_i, found_j, found_d = _closest(found_i, found_j, found_d)
            kept = len(found_i[0])
    if not found_i:
        return [], 0
    pairs_i, pairs_j, pairs_d = (np.concatenate(x) for x in (found_i, found_j, found_d))
    pairs = []
    for a, b, d in zip(pairs_i.tolist(), pairs_j.tolist(), pairs_d.tolist(), strict=True):
        ia, ib = index[a], index[b]
        first, second = sorted((files[ia], files[ib]), key=lambda f: (f["split"] != "train", f["path"]))
        pairs.append(
            {
                "distance": int(d),
                "files": [first, second],
                "cross_split": first["split"] != second["split"],
                "label_conflict": first["class"] != second["class"],
            }
        )
    pairs.sort(key=lambda p: (not p["cross_split"], p["distance"], p["files"][0]["path"]))
    return pairs[:MAX_NEAR_PAIRS], total


def _quality(
    files: list[dict],
    paths: list[Path],
    results: list[Inspected],
    thresholds: QualityThresholds,
    features: FeatureSource | None,
) -> dict:
    stats = [r.quality if r.reason is None else None for r in results]
    sizes = [(r.width, r.height) if r.reason is None else None for r in results]
    outliers = _outliers(files, paths, results, features) if features is not None else None
    return quality_findings(files, stats, sizes, thresholds, outliers)


def _outliers(
    files: list[dict], paths: list[Path], results: list[Inspected], features: FeatureSource
) -> tuple[np.ndarray, str]:
    """Outlier z-scores aligned with `files`: NaN where no features came back (unreadable files)."""
    found = features([path for path, r in zip(paths, results, strict=True) if r.reason is None])
    scores = np.full(len(files), np.nan)
    if found.paths:
        index = {path: i for i, path in enumerate(paths)}
        rows = [index[path] for path in found.paths]
        classes = np.array([files[i]["class"] for i in rows])
        scores[rows] = outlier_scores(found.pooled(), classes)
    return scores, found.described


def _closest(found_i: list, found_j: list, found_d: list) -> tuple[list, list, list]:
    i, j, d = (np.concatenate(x) for x in (found_i, found_j, found_d))
    order = np.argsort(d, kind="stable")[: 2 * MAX_NEAR_PAIRS]
    return [i[order]], [j[order]], [d[order]]


def _sizes(results: list[Inspected]) -> dict:
    def stats(values: list[int]) -> dict:
        if not values:
            return {"min": None, "median": None, "max": None}
        median = float(np.median(values))
        return {
            "min": int(min(values)),
            "median": int(median) if median.is_integer() else median,
            "max": int(max(values)),
        }

    nbytes = [r.nbytes for r in results if r.nbytes is not None]
    return {
        "width": stats([r.width for r in results]),
        "height": stats([r.height for r in results]),
        "bytes": {**stats(nbytes), "total": int(sum(nbytes))},
    }


def _imbalance(train_counts: dict[str, int]) -> dict:
    if not train_counts:
        return {"ratio": None, "largest": None, "smallest": None, "flagged": False}
    largest = max(train_counts, key=lambda k: train_counts[k])
    smallest = min(train_counts, key=lambda k: train_counts[k])
    low = train_counts[smallest]
    ratio = round(train_counts[largest] / low, 2) if low else None  # None: a class has no train image
    return {
        "ratio": ratio,
        "largest": largest,
        "smallest": smallest,
        "flagged": ratio is None or ratio > IMBALANCE_LIMIT,
        "limit": IMBALANCE_LIMIT,
    }


def _notes(source: str, splits: dict, val_split: float, seed: int) -> list[str]:
    kind = source.split(",")[0]
    labelled = {"names": "labels from file names", "csv": "labels from the CSV"}.get(kind)
    if source == "folders":
        return [f"splits from folders: {', '.join(f'{s}/' for s in splits)}"]
    if source in ("names", "csv"):
        return [f"{labelled}; splits as given: {', '.join(splits)}"]
    return ([labelled] if labelled else []) + [
        f"no val/ folder: val is a seeded random {val_split:.0%} of each class (seed {seed}); "
        "train with the same --val-split and --seed to get this split"
    ]


def _problems(report: dict) -> tuple[list[str], list[str]]:
    """(errors that make `ok` false, warnings), as short human sentences."""
    errors, warnings = [], []
    exact = report["exact_duplicates"]
    leaks = [g for g in exact if g["cross_split"]]
    conflicts = [g for g in exact if g["label_conflict"]]
    unreadable = report["unreadable"]
    if leaks:
        splits = sorted({f["split"] for g in leaks for f in g["files"]})
        errors.append(
            f"leakage: {len(leaks)} image(s) stored in more than one split ({'/'.join(splits)}), "
            "byte-identical; remove the extra copies"
        )
    if conflicts:
        errors.append(f"label conflict: {len(conflicts)} image(s) filed under more than one class")
    if unreadable:
        errors.append(f"{len(unreadable)} unreadable file(s); fix or remove them")
    if report["unlabelled"]:
        warnings.append(f"{len(report['unlabelled'])} file(s) without a label were left out (see the notes)")
    within = [g for g in exact if not g["cross_split"] and not g["label_conflict"]]
    if within:
        extra = sum(len(g["files"]) - 1 for g in within)
        warnings.append(f"{len(within)} exact duplicate group(s) within a split ({extra} redundant file(s))")
    near = report["near_duplicates"]
    cross = sum(p["cross_split"] for p in near)
    if cross:
        warnings.append(f"{cross} near-duplicate pair(s) across splits: possible leakage, look at them")
    inside = report["near_duplicates_total"] - cross
    if inside:
        warnings.append(f"{inside} near-duplicate pair(s) within a split")
    imbalance = report["imbalance"]
    if imbalance["flagged"]:
        ratio = "inf" if imbalance["ratio"] is None else f"{imbalance['ratio']:g}"
        warnings.append(
            f"class imbalance: {imbalance['largest']}/{imbalance['smallest']} = {ratio} in train "
            f"(> {IMBALANCE_LIMIT:g}); consider --class-weights auto"
        )
    for check in report["quality"]["checks"].values():
        if check["count"]:
            warnings.append(f"image quality: {check['count']} {check['label']}: {check['rule']}")
    return errors, warnings


# --------------------------------------------------------------------------- printing

_SHOWN = 20  # rows per problem table; --json has everything


def print_check(report: dict, console) -> None:
    """Readable tables for `imgcls data check`, ending with a one-line verdict."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text.assemble(("Data check: ", "bold"), report["root"]))
    for note in report.get("notes", []):
        console.print(Text(f"  {note}", style="dim"))

    splits = list(report["splits"])
    counts = Table(title="Images per class and split", title_justify="left")
    counts.add_column("class")
    for split in splits:
        counts.add_column(split, justify="right")
    counts.add_column("total", justify="right")
    for name in report["classes"]:
        row = [report["splits"][s]["counts"].get(name, 0) for s in splits]
        counts.add_row(Text(name), *map(str, row), str(sum(row)))
    totals = [report["splits"][s]["n_images"] for s in splits]
    counts.add_row(Text("all", style="bold"), *map(str, totals), str(sum(totals)))
    console.print(counts)

    imbalance = report["imbalance"]
    if imbalance.get("ratio") is not None or imbalance.get("flagged"):
        ratio = "inf" if imbalance["ratio"] is None else f"{imbalance['ratio']:g}"
        style = "yellow" if imbalance["flagged"] else "green"
        console.print(Text(f"train imbalance (largest/smallest): {ratio}", style=style))

    formats = Table(title="Formats", title_justify="left")
    formats.add_column("format")
    formats.add_column("images", justify="right")
    for name, n in report["formats"].items():
        formats.add_row(name, str(n))
    console.print(formats)

    sizes = Table(title="Sizes (readable images)", title_justify="left")
    for column in ("", "min", "median", "max"):
        sizes.add_column(column, justify="right" if column else "left")
    for key, label in (("width", "width px"), ("height", "height px"), ("bytes", "file bytes")):
        s = report["sizes"][key]
        sizes.add_row(label, *(_fmt(s[k]) for k in ("min", "median", "max")))
    console.print(sizes)

    if report["unreadable"]:
        table = Table(title="Unreadable files", title_justify="left", title_style="bold red")
        table.add_column("file")
        table.add_column("split")
        table.add_column("reason")
        for item in report["unreadable"][:_SHOWN]:
            table.add_row(Text(item["path"]), item["split"], Text(item["reason"]))
        console.print(table)
        _more(console, len(report["unreadable"]))

    if report["exact_duplicates"]:
        table = Table(title="Exact duplicates (same sha256)", title_justify="left", title_style="bold")
        table.add_column("#", justify="right")
        table.add_column("files (split, class)")
        table.add_column("issue")
        for n, group in enumerate(report["exact_duplicates"][:_SHOWN], 1):
            table.add_row(str(n), _file_lines(group["files"]), _issue(group, exact=True))
        console.print(table)
        _more(console, len(report["exact_duplicates"]))

    if report["near_duplicates"]:
        title = f"Near-duplicates ({report['hash']} distance <= {report['near_threshold']})"
        table = Table(title=title, title_justify="left", title_style="bold")
        table.add_column("distance", justify="right")
        table.add_column("files (split, class)")
        table.add_column("issue")
        for pair in report["near_duplicates"][:_SHOWN]:
            table.add_row(str(pair["distance"]), _file_lines(pair["files"]), _issue(pair, exact=False))
        console.print(table)
        _more(console, report["near_duplicates_total"])

    _print_quality(report["quality"], console)

    errors = set(report.get("errors", []))
    if report["problems"]:
        console.print(Text("Problems", style="bold"))
        for problem in report["problems"]:
            style, mark = ("red", "x") if problem in errors else ("yellow", "!")
            console.print(Text(f"  {mark} {problem}", style=style))

    n_warnings = len(report["problems"]) - len(errors)
    seconds = f" in {report['seconds']:g}s" if "seconds" in report else ""
    if report["ok"]:
        tail = f" ({n_warnings} warning(s))" if n_warnings else ""
        console.print(
            Text.assemble(
                ("OK", "bold green"),
                f": {report['n_images']} images checked{seconds}: no leakage, no label conflicts, all readable{tail}",
            )
        )
    else:
        exact = report["exact_duplicates"]
        failed = [
            ("leakage", any(g["cross_split"] for g in exact)),
            ("label conflicts", any(g["label_conflict"] for g in exact)),
            (f"{len(report['unreadable'])} unreadable file(s)", bool(report["unreadable"])),
        ]
        console.print(
            Text.assemble(
                ("FAILED", "bold red"),
                f": {', '.join(name for name, bad in failed if bad)} ({report['n_images']} images checked{seconds})",
            )
        )


_QUALITY_SHOWN = 5  # files per quality check; --json has all


def _print_quality(quality: dict, console) -> None:
    """One row per check: its threshold (and the name that changes it), how many images it flags, the first ones."""
    from rich.table import Table
    from rich.text import Text

    title = "Image quality (warnings; change a threshold with --quality NAME=VALUE)"
    table = Table(title=title, title_justify="left", title_style="bold")
    table.add_column("check")
    table.add_column("flagged when")
    table.add_column("images", justify="right")
    table.add_column("files (split, class): why")
    thresholds = quality["thresholds"]
    for name, check in quality["checks"].items():
        searched = name != "outliers" or quality["outliers_searched"]
        settings = ", ".join(f"{option}={thresholds[option]:g}" for option in check["options"])
        rule = Text.assemble(check["rule"], "\n", (settings, "dim"))
        count = Text(str(check["count"]) if searched else "-", style="yellow" if check["count"] else "")
        shown = check["files"][:_QUALITY_SHOWN]
        lines = [f"{f['path']} ({f['split']}, {f['class']}): {f['why']}" for f in shown]
        if check["count"] > len(shown):
            lines.append(f"... and {check['count'] - len(shown)} more (--json lists all)")
        table.add_row(check["label"], rule, count, Text("\n".join(lines)))
    console.print(table)


def _file_lines(files: list[dict]):
    from rich.text import Text

    return Text("\n".join(f"{f['path']} ({f['split']}, {f['class']})" for f in files))


def _issue(item: dict, exact: bool) -> str:
    issues = []
    if item["cross_split"]:
        issues.append("[red]leakage[/]" if exact else "[yellow]across splits[/]")
    if item["label_conflict"]:
        issues.append("[red]label conflict[/]" if exact else "[yellow]different classes[/]")
    return ", ".join(issues) or "same split"


def _more(console, total: int) -> None:
    if total > _SHOWN:
        console.print(f"  ... and {total - _SHOWN} more (use --json for the full list)", style="dim")


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"
