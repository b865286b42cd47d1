"""`imgcls data check`: counts, formats, sizes, unreadable files, duplicates, leakage and imbalance.

Every file is read once (in a thread pool): the same bytes give its sha256 and are fully decoded
by `load_image`, exactly as training would decode them, so truncated files are caught. The
decoded pixels also give a 256-bit difference hash (dHash) for near-duplicates:

- exact duplicates: same sha256. A copy in two splits is leakage (the model is scored on
  images it trained on); a copy under two classes is a label conflict. Both make `ok` false,
  as do unreadable files.
- near-duplicates: dHash Hamming distance <= `near_threshold` (re-encoded, resized, recompressed
  copies). They are reported as warnings, because a perceptual hash can only suggest.

The default threshold (24 of 256 bits) was chosen on the 3000 real photos of the shared
cats_vs_dogs set: the one known duplicate photo (train/dog/dog.74.jpg vs dog.180.jpg) is at
distance 7, while the closest of the ~4.5 million unrelated pairs is at 60 (mean 127, sd 10.5).
On 300 of those photos, re-encoding at JPEG quality 30 moved the hash by at most 23 bits, resizing
to 0.6x plus quality 40 by at most 21, squashing to 224x224 by at most 19. Crops are not caught.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.data.cache import ArrayStore, cache_key
from imgcls.data.decode import MAX_PIXELS, BadImageError, display_path, load_image
from imgcls.data.discover import discover
from imgcls.data.download import cache_dir
from imgcls.data.labels import LabelOptions

HASH_SIZE = 16  # dHash on a 17x16 grayscale thumbnail: 16*16 = 256 bits
HASH_BITS = HASH_SIZE * HASH_SIZE
NEAR_THRESHOLD = 24  # Hamming distance out of 256 bits; see the module docstring
IMBALANCE_LIMIT = 1.5  # largest/smallest train class above this is flagged
MAX_NEAR_PAIRS = 1000  # near-duplicate pairs kept in the report (closest first); the total is always given
_PAIR_BLOCK = 1 << 22  # hash words compared per numpy step (bounds memory to ~32 MB)


@dataclass
class _Inspected:
    """What one pass over a file's bytes found."""

    nbytes: int | None = None
    sha256: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    dhash: np.ndarray | None = None  # (HASH_BITS // 64,) uint64
    reason: str | None = None  # set when the file cannot be used


def check_dataset(
    data: str | Path,
    val_split: float = 0.2,
    seed: int = 0,
    data_dir: Path | None = None,
    near_threshold: int = NEAR_THRESHOLD,
    workers: int | None = None,
    near_limit: int | None = None,
    labels: LabelOptions | None = None,
) -> dict:
    """Inspect every image of DATA and return a JSON-serialisable report (see module docstring).

    `near_limit`: skip the all-pairs near-duplicate search above this many images (it grows with
    the square of the count: minutes for MNIST's 70,000); a note says so."""
    started = time.perf_counter()
    dataset = discover(data, val_split=val_split, seed=seed, data_dir=data_dir, labels=labels)
    root, classes = dataset.root, dataset.classes
    files = [
        {"path": _relative(sample.path, root), "split": split, "class": classes[sample.label]}
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
        "unlabelled": [_relative(path, root) for path in dataset.unlabelled],  # no label in the name / CSV
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
    report["imbalance"] = _imbalance(report["splits"].get("train", {}).get("counts", {}))
    report["notes"] = _notes(dataset.source, dataset.splits, val_split, seed) + list(dataset.notes)
    report["errors"], warned = _problems(report)
    report["problems"] = report["errors"] + warned
    report["ok"] = not report["errors"]
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


# --------------------------------------------------------------------------- reading and hashing


class _CheckCacheTag:
    """Cache identity of a file's check results (see `cache_key`): bump the version when they change."""

    @staticmethod
    def tag() -> str:
        return f"check-v1-dhash{HASH_BITS}"


def inspect_files(paths: list[Path], workers: int | None = None) -> list[_Inspected]:
    """Read, hash and decode every file once, in threads (hashlib and Pillow release the GIL).

    Results of readable files are cached under path + size + mtime, so a second check (and the
    report written after every training) costs a stat and a tiny read per file."""
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    store = ArrayStore(cache_dir() / "check")

    def inspect(path: Path) -> _Inspected:
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


def _inspect_cached(path: Path, store: ArrayStore) -> _Inspected:
    key = cache_key(path, _CheckCacheTag) if os.access(path, os.R_OK) else None
    record = store.load(key) if key else None
    if record is not None and record.dtype == np.uint64 and record.shape == (8 + HASH_BITS // 64,):
        return _Inspected(
            nbytes=int(record[0]),
            width=int(record[1]),
            height=int(record[2]),
            format=record[3:4].tobytes().rstrip(b"\0").decode("ascii") or None,
            sha256=record[4:8].tobytes().hex(),
            dhash=record[8:].copy(),
        )
    result = _inspect(path)
    if key and result.reason is None:  # failures are re-examined every time (permissions change no mtime)
        fmt = (result.format or "").encode("ascii", "replace")[:8].ljust(8, b"\0")
        header = np.array([result.nbytes, result.width, result.height], dtype=np.uint64)
        words = [header, np.frombuffer(fmt, np.uint64), np.frombuffer(bytes.fromhex(result.sha256), np.uint64)]
        store.store(key, np.concatenate([*words, result.dhash.astype(np.uint64)]))
    return result


def _inspect(path: Path) -> _Inspected:
    result = _Inspected()
    try:
        data = path.read_bytes()
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
    except Exception:  # noqa: BLE001 - any failure: the path-based load_image gives the canonical reason
        result.reason = _RETRY
        return result
    result.height, result.width = (int(n) for n in gray.shape)
    result.dhash = dhash(gray)
    return result


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


# --------------------------------------------------------------------------- findings


def _exact_duplicates(files: list[dict], results: list[_Inspected]) -> list[dict]:
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


def _near_duplicates(files: list[dict], results: list[_Inspected], threshold: int) -> tuple[list[dict], int]:
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


def _closest(found_i: list, found_j: list, found_d: list) -> tuple[list, list, list]:
    i, j, d = (np.concatenate(x) for x in (found_i, found_j, found_d))
    order = np.argsort(d, kind="stable")[: 2 * MAX_NEAR_PAIRS]
    return [i[order]], [j[order]], [d[order]]


def _sizes(results: list[_Inspected]) -> dict:
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
    return errors, warnings


def _relative(path: Path, root: Path) -> str:
    try:
        return display_path(path.relative_to(root))
    except ValueError:
        return display_path(path)


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
