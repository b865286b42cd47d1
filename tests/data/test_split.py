"""`imgcls data split` on small Pillow-made trees with planted duplicates, and on the shared photos."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgcls.cli import app
from imgcls.data.discover import discover
from imgcls.data.labels import LabelOptions
from imgcls.data.split import split_dataset
from imgcls.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")
SPLITS = ("train", "val", "test")

# --------------------------------------------------------------------------- helpers


def picture(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A photo-like image, different for every seed: a smooth colour field plus random rectangles."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((5, 6, 3)) * 255).astype(np.uint8), "RGB")
    pixels = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC)).copy()
    width, height = size
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
        pixels[y0 : y0 + int(rng.integers(6, width // 2)), x0 : x0 + int(rng.integers(6, height // 2))] = rng.integers(
            0, 256, 3
        )
    return Image.fromarray(pixels, "RGB")


def class_tree(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """root/<class>/<class>_<k>.jpg, every image different."""
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            seed += 1
            picture(seed).save(root / name / f"{name}_{k:02d}.jpg", quality=90)
    return root


def near_copy(source: Path, target: Path) -> Path:
    """The same photo resized to 90% and re-encoded at JPEG quality 50: other bytes, same picture."""
    with Image.open(source) as image:
        smaller = image.resize((image.width * 9 // 10, image.height * 9 // 10), Image.Resampling.BILINEAR)
    target.parent.mkdir(parents=True, exist_ok=True)
    smaller.save(target, quality=50)
    return target


def tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256, mtime_ns) of every file and link under root: any change shows."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(root))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return found


def placed(dest: Path) -> dict[str, dict[str, list[str]]]:
    """split -> class -> sorted file names in DEST."""
    return {
        split: {c.name: sorted(f.name for f in c.iterdir()) for c in sorted((dest / split).iterdir())}
        for split in SPLITS
        if (dest / split).is_dir()
    }


def split_of(dest: Path) -> dict[str, str]:
    """File name -> the split it landed in (asserting no name is in two splits)."""
    where: dict[str, str] = {}
    for split, classes in placed(dest).items():
        for names in classes.values():
            for name in names:
                assert name not in where, f"{name} is in {where[name]} and {split}"
                where[name] = split
    return where


# --------------------------------------------------------------------------- counts and fractions


def test_counts_per_class_leave_the_rest_out(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 14, "dog": 12})
    plan = split_dataset(src, tmp_path / "out", counts={"train": 5, "val": 2, "test": 3}, seed=1)
    layout = placed(tmp_path / "out")
    for split, n in {"train": 5, "val": 2, "test": 3}.items():
        assert {c: len(names) for c, names in layout[split].items()} == {"cat": n, "dog": n}
        assert plan.counts[split] == {"cat": n, "dog": n}
    assert plan.summary()["n_images"] == 20
    # no two placed files have the same content: nothing is in two splits
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "out").rglob("*.jpg")]
    assert len(digests) == len(set(digests)) == 20


def test_fractions_are_stratified_and_the_result_is_discovered(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 20, "dog": 40})
    plan = split_dataset(src, tmp_path / "out", fractions=(0.7, 0.15, 0.15), seed=0)
    assert plan.counts == {
        "train": {"cat": 14, "dog": 28},
        "val": {"cat": 3, "dog": 6},
        "test": {"cat": 3, "dog": 6},
    }
    dataset = discover(tmp_path / "out")  # split.json beside the split folders is ignored
    assert dataset.source == "folders"
    assert dataset.classes == ["cat", "dog"]
    assert dataset.counts() == plan.counts
    manifest = json.loads((tmp_path / "out" / "split.json").read_text())
    assert manifest["seed"] == 0 and manifest["counts"] == plan.counts
    assert manifest["source"] == str(src)


def test_an_already_split_tree_is_pooled_and_resplit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    class_tree(src / "train", {"a": 6, "b": 6}, seed=0)
    class_tree(src / "val", {"a": 2, "b": 2}, seed=100)
    plan = split_dataset(src, tmp_path / "out", fractions=(0.5, 0.5))
    assert plan.counts == {"train": {"a": 4, "b": 4}, "val": {"a": 4, "b": 4}}
    assert not (tmp_path / "out" / "test").exists()


def test_same_seed_same_split_other_seed_other_split(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 15, "dog": 15})
    split_dataset(src, tmp_path / "a", fractions=(0.6, 0.2, 0.2), seed=7)
    split_dataset(src, tmp_path / "b", fractions=(0.6, 0.2, 0.2), seed=7)
    split_dataset(src, tmp_path / "c", fractions=(0.6, 0.2, 0.2), seed=8)
    assert placed(tmp_path / "a") == placed(tmp_path / "b")
    assert placed(tmp_path / "a") != placed(tmp_path / "c")


# --------------------------------------------------------------------------- duplicates


def test_exact_and_near_duplicates_land_in_the_same_split(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 16, "dog": 16})
    planted = []
    for k in range(4):  # per class: two exact copies and two near copies of different photos
        for name in ("cat", "dog"):
            original = src / name / f"{name}_{k:02d}.jpg"
            copy = src / name / f"copy_of_{original.name}"
            if k < 2:
                shutil.copyfile(original, copy)
            else:
                near_copy(original, copy)
            planted.append((original.name, copy.name))
    for seed in range(4):
        dest = tmp_path / f"out{seed}"
        plan = split_dataset(src, dest, fractions=(0.4, 0.3, 0.3), seed=seed)
        where = split_of(dest)
        assert len(where) == 40
        for original, copy in planted:
            assert where[original] == where[copy], (seed, original)
        summary = plan.summary()
        assert summary["groups_kept_together"] == 8
        assert summary["images_in_groups"] == 16
        assert summary["label_conflicts"] == 0
        exact = sorted(g["exact"] for g in plan.groups)
        assert exact == [False] * 4 + [True] * 4


def test_groups_count_whole_and_a_label_conflict_is_reported(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 10, "dog": 10})
    for k in range(3):  # four files of the same cat photo
        shutil.copyfile(src / "cat" / "cat_00.jpg", src / "cat" / f"again_{k}.jpg")
    shutil.copyfile(src / "dog" / "dog_05.jpg", src / "dog" / "dog_05_copy.jpg")
    shutil.copyfile(src / "dog" / "dog_05.jpg", src / "cat" / "mislabelled.jpg")  # that dog filed as a cat too
    quadruple = ["cat_00.jpg", "again_0.jpg", "again_1.jpg", "again_2.jpg"]
    placed_conflicts = 0
    for seed in range(6):
        plan = split_dataset(src, tmp_path / f"out{seed}", counts={"train": 4, "test": 4}, seed=seed)
        where = split_of(tmp_path / f"out{seed}")
        assert len({where.get(name) for name in quadruple}) == 1  # all in one split, or all left out
        conflict = [g for g in plan.groups if g["label_conflict"]]
        assert len(conflict) == 1 and conflict[0]["classes"] == ["cat", "dog"]
        assert conflict[0]["members"] == ["cat/mislabelled.jpg", "dog/dog_05.jpg", "dog/dog_05_copy.jpg"]
        in_split = conflict[0]["split"]  # the group goes with its majority class, dog
        assert {where.get(n) for n in ("mislabelled.jpg", "dog_05.jpg", "dog_05_copy.jpg")} == {in_split}
        for split in ("train", "test"):
            extra = int(in_split == split)  # the mislabelled cat rides along
            assert plan.counts[split] == {"cat": 4 + extra, "dog": 4}
        assert bool(plan.notes) == bool(in_split)
        assert plan.summary()["label_conflicts"] == int(bool(in_split))
        placed_conflicts += bool(in_split)
    assert 0 < placed_conflicts < 6  # both cases were seen


def test_a_near_copy_of_a_real_photo_follows_it(cats_dogs_subset, tmp_path: Path) -> None:
    src = cats_dogs_subset("photos", train=10, val=5)
    original = src / "train" / "cat" / sorted(os.listdir(src / "train" / "cat"))[0]
    near_copy(original, src / "val" / "cat" / "recompressed.jpg")  # leakage as it happens in the wild
    for seed in range(3):
        plan = split_dataset(src, tmp_path / f"out{seed}", fractions=(0.5, 0.25, 0.25), seed=seed)
        where = split_of(tmp_path / f"out{seed}")
        assert where[original.name] == where["recompressed.jpg"]
        assert [g["members"] for g in plan.groups] == [[f"train/cat/{original.name}", "val/cat/recompressed.jpg"]]
        assert sum(plan.counts[s]["cat"] for s in SPLITS) == 16


# --------------------------------------------------------------------------- safety


def test_refuses_a_non_empty_dest_and_writes_nothing(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 4, "dog": 4})
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        split_dataset(src, dest)
    assert [p.name for p in dest.iterdir()] == ["notes.txt"] and (dest / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="is a file"):
        split_dataset(src, dest / "notes.txt")
    with pytest.raises(DataError, match="inside the source"):
        split_dataset(src, src / "split")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "imgcls-cache") == ["out", "src"]  # no partial
    empty = tmp_path / "empty"
    empty.mkdir()
    split_dataset(src, empty, fractions=(0.5, 0.5))  # an empty folder is fine
    assert (empty / "train").is_dir() and (empty / "split.json").is_file()


def test_src_is_never_modified(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 6, "dog": 6})
    shutil.copyfile(src / "cat" / "cat_01.jpg", src / "dog" / "cat_01.jpg")  # a name collision across classes
    before = tree_hashes(src)
    split_dataset(src, tmp_path / "linked", seed=2)
    split_dataset(src, tmp_path / "copied", seed=2, link=False)
    assert tree_hashes(src) == before
    assert placed(tmp_path / "linked") == placed(tmp_path / "copied")


def test_hard_links_share_the_inode_copies_do_not(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 5, "dog": 5})
    linked = split_dataset(src, tmp_path / "linked", fractions=(0.6, 0.4))
    copied = split_dataset(src, tmp_path / "copied", fractions=(0.6, 0.4), link=False)
    assert linked.summary()["links"] == {"hardlink": 10, "symlink": 0, "copy": 0}
    assert copied.summary()["link_mode"] == "copy"
    for split, classes in placed(tmp_path / "linked").items():
        for name, files in classes.items():
            for file in files:
                original = os.stat(src / name / file)
                assert os.stat(tmp_path / "linked" / split / name / file).st_ino == original.st_ino
                copy = tmp_path / "copied" / split / name / file
                assert os.stat(copy).st_ino != original.st_ino
                assert copy.read_bytes() == (src / name / file).read_bytes()


def test_same_names_from_different_folders_are_kept_apart(tmp_path: Path) -> None:
    src = tmp_path / "src"
    class_tree(src / "train", {"cat": 3, "dog": 3}, seed=0)
    class_tree(src / "val", {"cat": 3, "dog": 3}, seed=50)  # cat_00.jpg ... again, other pictures
    split_dataset(src, tmp_path / "out", fractions=(1.0, 0.0))
    assert placed(tmp_path / "out")["train"]["cat"] == [
        "cat_00-2.jpg", "cat_00.jpg", "cat_01-2.jpg", "cat_01.jpg", "cat_02-2.jpg", "cat_02.jpg"
    ]  # fmt: skip


def test_asking_for_more_than_a_class_has_names_the_class(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 9, "dog": 5})
    with pytest.raises(DataError, match=r"class 'dog' has 5 usable image\(s\).*6 asked for"):
        split_dataset(src, tmp_path / "out", counts={"train": 4, "val": 2})
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="either counts"):
        split_dataset(src, tmp_path / "out", counts={"train": 4}, fractions=(0.5, 0.5))
    with pytest.raises(DataError, match="--fractions"):
        split_dataset(src, tmp_path / "out", fractions=(0.9, 0.2))


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 4, "dog": 4})
    good = (src / "cat" / "cat_00.jpg").read_bytes()
    (src / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (src / "dog" / "empty.png").write_bytes(b"")
    plan = split_dataset(src, tmp_path / "out", fractions=(0.5, 0.5))
    assert sorted(s["path"] for s in plan.skipped) == ["cat/truncated.jpg", "dog/empty.png"]
    assert plan.summary()["skipped"] == 2
    assert sum(sum(c.values()) for c in plan.counts.values()) == 8
    assert "truncated.jpg" not in split_of(tmp_path / "out")


def test_a_flat_kaggle_folder_labelled_by_file_names(tmp_path: Path) -> None:
    src = tmp_path / "kaggle"
    src.mkdir()
    for k in range(8):
        picture(k).save(src / f"cat.{k}.jpg")
        picture(100 + k).save(src / f"dog.{k}.jpg")
    plan = split_dataset(src, tmp_path / "out", counts={"train": 4, "val": 2, "test": 2}, labels=LabelOptions("name"))
    assert plan.counts == {s: {"cat": n, "dog": n} for s, n in (("train", 4), ("val", 2), ("test", 2))}
    layout = placed(tmp_path / "out")
    assert all(name.startswith("cat.") for name in layout["test"]["cat"])
    assert all(name.startswith("dog.") for name in layout["train"]["dog"])


def test_a_csv_of_labels_with_a_missing_file(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    rows = ["path,label"]
    for k in range(6):
        picture(k).save(src / f"img{k}.png")
        rows.append(f"img{k}.png,{'bird' if k % 2 else 'fish'}")
    rows.append("gone.png,bird")
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    plan = split_dataset(src, tmp_path / "out", fractions=(2 / 3, 1 / 3), labels=LabelOptions(csv=src / "labels.csv"))
    assert plan.counts == {"train": {"bird": 2, "fish": 2}, "val": {"bird": 1, "fish": 1}}
    assert plan.skipped == [{"path": "gone.png", "reason": "listed in the CSV but missing"}]
    assert sorted(placed(tmp_path / "out")["train"]["fish"] + placed(tmp_path / "out")["val"]["fish"]) == [
        "img0.png", "img2.png", "img4.png"
    ]  # fmt: skip


# --------------------------------------------------------------------------- the command


def test_cli_split_prints_json_and_refuses_to_overwrite(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src", {"cat": 8, "dog": 8})
    shutil.copyfile(src / "dog" / "dog_00.jpg", src / "dog" / "dup.jpg")
    runner = CliRunner()
    args = ["data", "split", str(src), str(tmp_path / "out"), "--train", "4", "--val", "2", "--test", "2"]
    result = runner.invoke(app, [*args, "--seed", "5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"] == {s: {"cat": n, "dog": n} for s, n in (("train", 4), ("val", 2), ("test", 2))}
    assert summary["link_mode"] == "hardlink" and summary["seed"] == 5
    assert Counter(split_of(tmp_path / "out").values()) == {"train": 8, "val": 4, "test": 4}

    table = runner.invoke(app, ["data", "split", str(src), str(tmp_path / "out2"), "--fractions", "0.5,0.5", "--copy"])
    assert table.exit_code == 0, table.output
    assert "kept 1 group(s) of duplicates together (2 images)" in table.output
    assert "17 copies" in table.output

    again = runner.invoke(app, args)
    assert isinstance(again.exception, DataError) and "not empty" in str(again.exception)


def test_near_copy_helper_really_changes_the_bytes(tmp_path: Path) -> None:
    """Guards the duplicate tests: a near copy is another file, not the same bytes."""
    original = tmp_path / "a.jpg"
    picture(1).save(original, quality=90)
    copy = near_copy(original, tmp_path / "b.jpg")
    assert copy.read_bytes() != original.read_bytes()
    with Image.open(io.BytesIO(copy.read_bytes())) as image:
        assert image.size == (57, 43)


def test_symlinks_where_hard_links_are_impossible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = class_tree(tmp_path / "src", {"cat": 3, "dog": 3})

    def across_file_systems(source, target, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", across_file_systems)
    plan = split_dataset(src, tmp_path / "out", fractions=(0.5, 0.5))
    assert plan.summary()["link_mode"] == "symlink" and plan.links["symlink"] == 6
    for file in (tmp_path / "out").rglob("*.jpg"):
        assert file.is_symlink() and Path(os.readlink(file)).is_absolute()
        assert file.resolve().parent.parent == src.resolve()
