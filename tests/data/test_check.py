"""`imgcls data check` on small Pillow-made folders (and on the real shared photos when present)."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from imgcls.data.check import MAX_NEAR_PAIRS, check_dataset, print_check
from imgcls.data.hashing import NEAR_THRESHOLD, _popcount_table, dhash, hamming, popcount
from imgcls.files import display_path

# --------------------------------------------------------------------------- helpers


def _picture(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A photo-like image: a smooth random colour field plus a few random rectangles."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((5, 6, 3)) * 255).astype(np.uint8), "RGB")
    image = coarse.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image).copy()
    width, height = size
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
        x1, y1 = x0 + int(rng.integers(6, width // 2)), y0 + int(rng.integers(6, height // 2))
        pixels[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels, "RGB")


def _save(path: Path, image: Image.Image, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def _tree(root: Path, layout: dict[str, dict[str, int]], seed: int = 0, size=(96, 72)) -> Path:
    """root/<split>/<class>/img<k>.jpg, every image different."""
    for split, classes in layout.items():
        for name, n in classes.items():
            for k in range(n):
                seed += 1
                _save(root / split / name / f"img{k}.jpg", _picture(seed, size), quality=90)
    return root


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height (a decompression-bomb lookalike)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    header = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def _files(entry: dict) -> set[tuple[str, str, str]]:
    return {(f["path"], f["split"], f["class"]) for f in entry["files"]}


def _render(report: dict) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    print_check(report, console)
    return console.export_text()


BALANCED = {"train": {"cat": 4, "dog": 4}, "val": {"cat": 2, "dog": 2}}


# --------------------------------------------------------------------------- tests


def test_distinct_images_give_a_clean_report(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", BALANCED)
    _save(root / "train" / "dog" / "wide.png", _picture(100, (150, 64)))  # one PNG of another size (not odd: 2.3:1)
    report = check_dataset(root)

    assert report["ok"] is True
    assert report["problems"] == [] and report["errors"] == []
    assert report["exact_duplicates"] == [] and report["unreadable"] == []
    assert report["near_duplicates"] == [] and report["near_duplicates_total"] == 0
    assert report["classes"] == ["cat", "dog"]
    assert report["source"] == "folders"
    assert report["splits"]["train"] == {"counts": {"cat": 4, "dog": 5}, "n_images": 9}
    assert report["splits"]["val"] == {"counts": {"cat": 2, "dog": 2}, "n_images": 4}
    assert report["formats"] == {"JPEG": 12, "PNG": 1}
    sizes = report["sizes"]
    assert sizes["width"] == {"min": 96, "median": 96, "max": 150}
    assert sizes["height"] == {"min": 64, "median": 72, "max": 72}
    on_disk = sorted(p.stat().st_size for p in root.rglob("*.*"))
    assert sizes["bytes"]["min"] == on_disk[0] and sizes["bytes"]["max"] == on_disk[-1]
    assert sizes["bytes"]["total"] == sum(on_disk)
    assert report["imbalance"]["ratio"] == 1.25 and report["imbalance"]["flagged"] is False
    assert json.loads(json.dumps(report))["ok"] is True
    assert _render(report).strip().splitlines()[-1].startswith("OK: 13 images checked")


@pytest.mark.parametrize("other_split", ["val", "test"])
def test_byte_identical_copy_across_splits_is_leakage(tmp_path: Path, other_split: str) -> None:
    layout = {**BALANCED, "test": {"cat": 1, "dog": 1}}
    root = _tree(tmp_path / "data", layout)
    shutil.copyfile(root / "train/cat/img1.jpg", root / other_split / "cat" / "copy.jpg")
    report = check_dataset(root)

    assert report["ok"] is False
    [group] = report["exact_duplicates"]
    assert group["cross_split"] is True and group["label_conflict"] is False
    assert _files(group) == {
        ("train/cat/img1.jpg", "train", "cat"),
        (f"{other_split}/cat/copy.jpg", other_split, "cat"),
    }
    assert len(group["sha256"]) == 64
    assert report["errors"] == [report["problems"][0]] and report["problems"][0].startswith("leakage: 1 image")
    assert report["near_duplicates"] == []  # byte-identical copies are not repeated as near-duplicates
    text = _render(report)
    assert f"{other_split}/cat/copy.jpg" in text and "leakage" in text
    assert text.strip().splitlines()[-1].startswith("FAILED: leakage (")


def test_reencoded_resized_copy_across_splits_is_a_near_duplicate(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", BALANCED, size=(320, 240))
    original = Image.open(root / "train/dog/img2.jpg")
    _save(root / "val/dog/small.jpg", original.resize((192, 144), Image.Resampling.BILINEAR), quality=40)
    report = check_dataset(root)

    assert report["exact_duplicates"] == []
    assert report["near_duplicates_total"] == 1
    [pair] = report["near_duplicates"]
    assert _files(pair) == {("train/dog/img2.jpg", "train", "dog"), ("val/dog/small.jpg", "val", "dog")}
    assert pair["cross_split"] is True and pair["label_conflict"] is False
    assert 0 < pair["distance"] <= NEAR_THRESHOLD
    # a warning, not a failure: a perceptual hash only suggests
    assert report["ok"] is True
    assert report["problems"] == ["1 near-duplicate pair(s) across splits: possible leakage, look at them"]
    # a tight threshold misses it, so the threshold is what decides
    strict = check_dataset(root, near_threshold=pair["distance"] - 1)
    assert strict["near_duplicates"] == []


def test_same_file_under_two_classes_is_a_label_conflict(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", BALANCED)
    _save(root / "train/cat/both.png", _picture(500))
    shutil.copyfile(root / "train/cat/both.png", root / "train/dog/both.png")
    shutil.copyfile(root / "train/cat/img0.jpg", root / "train/cat/img0 (1).jpg")  # harmless duplicate
    report = check_dataset(root)

    assert report["ok"] is False
    conflict, within = report["exact_duplicates"]
    assert conflict["label_conflict"] is True and conflict["cross_split"] is False
    assert {f["class"] for f in conflict["files"]} == {"cat", "dog"}
    assert within["label_conflict"] is False and within["cross_split"] is False
    assert report["errors"] == ["label conflict: 1 image(s) filed under more than one class"]
    assert "1 exact duplicate group(s) within a split (1 redundant file(s))" in report["problems"]


def test_unreadable_files_are_reported_with_reasons(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", BALANCED)
    whole = (root / "train/cat/img0.jpg").read_bytes()
    (root / "train/cat/truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "val/dog/notes.jpg").write_text("this is not a picture\n")
    (root / "val/dog/empty.png").write_bytes(b"")
    (root / "val/dog/bomb.png").write_bytes(_png_declaring(10_000, 9_000))  # 90 Mpx header, 8x8 data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no DecompressionBombWarning leaks to the terminal
        report = check_dataset(root)

    assert report["ok"] is False
    reasons = {item["path"]: (item["split"], item["reason"]) for item in report["unreadable"]}
    assert set(reasons) == {
        "train/cat/truncated.jpg",
        "val/dog/notes.jpg",
        "val/dog/empty.png",
        "val/dog/bomb.png",
    }
    assert reasons["train/cat/truncated.jpg"][0] == "train"
    assert "truncated" in reasons["train/cat/truncated.jpg"][1]
    assert reasons["val/dog/notes.jpg"] == ("val", "not an image (unrecognised format)")
    assert reasons["val/dog/empty.png"] == ("val", "empty file (0 bytes)")
    assert reasons["val/dog/bomb.png"] == ("val", "image too large (decompression bomb)")
    assert report["errors"] == ["4 unreadable file(s); fix or remove them"]
    assert report["splits"]["train"]["counts"]["cat"] == 5  # found files are counted...
    assert report["formats"] == {"JPEG": 12}  # ...but only decoded ones have a format and size
    text = _render(report)
    assert "train/cat/truncated.jpg" in text and "not an image" in text
    assert text.strip().splitlines()[-1].startswith("FAILED: 4 unreadable file(s) (")


def test_imbalance_is_flagged_above_one_and_a_half(tmp_path: Path) -> None:
    flagged = check_dataset(_tree(tmp_path / "a", {"train": {"cat": 9, "dog": 3}, "val": {"cat": 1, "dog": 1}}))
    assert flagged["imbalance"] == {
        "ratio": 3.0,
        "largest": "cat",
        "smallest": "dog",
        "flagged": True,
        "limit": 1.5,
    }
    assert flagged["ok"] is True  # a warning with a fix, not an error
    assert any("--class-weights auto" in p for p in flagged["problems"])

    limit = check_dataset(_tree(tmp_path / "b", {"train": {"cat": 6, "dog": 4}, "val": {"cat": 1, "dog": 1}}))
    assert limit["imbalance"]["ratio"] == 1.5 and limit["imbalance"]["flagged"] is False
    assert limit["problems"] == []


def test_seeded_split_is_reported_and_its_leakage_found(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    for k in range(10):
        _save(root / "cat" / f"c{k}.jpg", _picture(k))
        _save(root / "dog" / f"d{k}.jpg", _picture(100 + k))
    for k in range(10):  # every dog photo twice: at least one pair must straddle train/val
        shutil.copyfile(root / "dog" / f"d{k}.jpg", root / "dog" / f"d{k}_again.jpg")
    report = check_dataset(str(root), val_split=0.3, seed=1)

    assert report["source"] == "val_split=0.3,seed=1"
    assert "seeded random 30%" in report["notes"][0]
    assert report["splits"]["train"]["n_images"] + report["splits"]["val"]["n_images"] == 30
    assert len(report["exact_duplicates"]) == 10
    assert any(g["cross_split"] for g in report["exact_duplicates"])
    assert report["ok"] is False


def test_odd_file_names_are_printable(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", BALANCED)
    raw = os.fsencode(root / "val" / "cat") + b"/caf\xe9[bold].jpg"  # not UTF-8, and rich markup
    with open(raw, "wb") as handle:
        handle.write(b"garbage")
    report = check_dataset(root)

    [item] = report["unreadable"]
    assert item["path"] == display_path(Path("val/cat") / os.fsdecode(b"caf\xe9[bold].jpg"))
    assert item["path"].startswith("val/cat/caf\\") and item["path"].endswith("[bold].jpg")
    json.dumps(report, ensure_ascii=False).encode("utf-8")  # no lone surrogates left
    assert item["path"] in _render(report)  # shown literally, not eaten as rich markup


def test_many_near_copies_are_counted_but_the_list_is_capped(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for k in range(100):  # 100 flat grey images, all different bytes, all the same picture
        _save(root / "train" / ("a" if k % 2 else "b") / f"{k}.png", Image.new("L", (16, 16), k))
    _save(root / "val" / "a" / "x.png", _picture(1))
    _save(root / "val" / "b" / "y.png", _picture(2))
    report = check_dataset(root)

    assert report["exact_duplicates"] == []
    assert report["near_duplicates_total"] == 100 * 99 // 2
    assert len(report["near_duplicates"]) == MAX_NEAR_PAIRS
    assert all(p["distance"] == 0 and not p["cross_split"] for p in report["near_duplicates"])
    assert "4950 near-duplicate pair(s) within a split" in report["problems"]
    assert "and 4930 more" in _render(report)


def test_threads_do_not_change_the_report(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", BALANCED)
    shutil.copyfile(root / "train/cat/img0.jpg", root / "val/dog/x.jpg")
    serial = check_dataset(root, workers=1)
    threaded = check_dataset(root, workers=4)
    serial.pop("seconds"), threaded.pop("seconds")
    assert serial == threaded


def test_dhash_is_stable_under_recompression_and_apart_for_different_images() -> None:
    def gray(image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("L"))

    def jpeg(image: Image.Image, quality: int) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))

    base = _picture(7, (400, 300))
    h = dhash(gray(base))
    assert h.shape == (4,) and h.dtype == np.uint64
    assert hamming(h, dhash(gray(jpeg(base.resize((200, 150)), 30)))) <= NEAR_THRESHOLD
    others = [hamming(h, dhash(gray(_picture(seed, (400, 300))))) for seed in range(20, 40)]
    assert min(others) > 2 * NEAR_THRESHOLD


def test_popcount_fallback_for_numpy_1_matches() -> None:
    words = np.random.default_rng(0).integers(0, 2**63, size=(50, 4), dtype=np.uint64) * np.uint64(2)
    words[0] = np.uint64(2**64 - 1)
    expected = [[bin(int(w)).count("1") for w in row] for row in words]
    assert _popcount_table(words).tolist() == expected
    assert popcount(words).tolist() == expected


# --------------------------------------------------------------------------- real photos

SHARED = Path(os.environ.get("IMGCLS_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


@pytest.mark.shared_data
def test_real_cats_vs_dogs(tmp_path: Path) -> None:
    root = SHARED / "cats_vs_dogs"
    if not (root / "train").is_dir():
        pytest.skip(f"no shared data at {root} (set IMGCLS_SHARED_DATA)")
    report = check_dataset(root)

    assert report["splits"]["train"]["counts"] == {"cat": 1000, "dog": 1000}
    assert report["splits"]["val"]["counts"] == {"cat": 500, "dog": 500}
    assert report["unreadable"] == [] and report["formats"] == {"JPEG": 3000}
    assert report["exact_duplicates"] == []
    assert not any(p["cross_split"] for p in report["near_duplicates"])
    pairs = [_files(p) for p in report["near_duplicates"]]
    assert {("train/dog/dog.74.jpg", "train", "dog"), ("train/dog/dog.180.jpg", "train", "dog")} in pairs
    assert report["near_duplicates_total"] == 1  # and no false pair among the ~4.5 million
    assert report["ok"] is True
    assert report["sizes"]["width"] == {"min": 59, "median": 447, "max": 1050}
    assert report["sizes"]["height"] == {"min": 41, "median": 374, "max": 768}


def test_second_check_reads_cached_results_and_sees_changed_files(tmp_path, images, isolated_cache):
    """Digests are cached by path + size + mtime: a rerun agrees exactly, and a rewritten file is re-read."""
    import os

    from imgcls.data.check import check_dataset

    for index in range(4):
        images.write(tmp_path / "data" / "cat" / f"c{index}.png", size=(20 + index, 16))
        images.write(tmp_path / "data" / "dog" / f"d{index}.jpg", size=(24, 18 + index))
    first = check_dataset(tmp_path / "data")
    assert any((isolated_cache / "check").rglob("*.npy"))
    second = check_dataset(tmp_path / "data")
    for key in ("formats", "sizes", "exact_duplicates", "near_duplicates", "unreadable"):
        assert second[key] == first[key], key

    copy = tmp_path / "data" / "dog" / "d0.jpg"
    copy.write_bytes((tmp_path / "data" / "cat" / "c0.png").read_bytes())  # now an exact duplicate
    os.utime(copy, ns=(1, 1))
    third = check_dataset(tmp_path / "data")
    assert third["exact_duplicates"] and third["formats"] != first["formats"]


def test_near_limit_skips_the_all_pairs_search_with_a_note(tmp_path, images, isolated_cache):
    from imgcls.data.check import check_dataset

    images.write(tmp_path / "data" / "cat" / "c0.png", size=(40, 32))
    images.write(tmp_path / "data" / "cat" / "c1.jpg", size=(40, 32), quality=60)  # a re-encoded copy
    images.write(tmp_path / "data" / "dog" / "d0.png", mode="L", size=(24, 18))
    searched = check_dataset(tmp_path / "data")
    assert searched["near_duplicates_total"] >= 1
    limited = check_dataset(tmp_path / "data", near_limit=2)
    assert limited["near_duplicates_total"] == 0 and limited["exact_duplicates"] == searched["exact_duplicates"]
    assert any("near-duplicates not searched" in note for note in limited["notes"])
