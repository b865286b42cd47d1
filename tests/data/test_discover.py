"""discover: classes and splits from folder layouts, with clear DataErrors naming the folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imgcls.data.discover import Sample, discover, from_manifest, stratified_split
from imgcls.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")


def data_error(data, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        discover(data, **kwargs)
    return str(info.value)


def names(samples: list[Sample]) -> set[str]:
    return {f"{s.path.parent.name}/{s.path.name}" for s in samples}


# --------------------------------------------------------------------------- flat layout DATA/<class>/


def test_flat_layout(images, tmp_path: Path) -> None:
    made = images.tree(tmp_path / "data", {"dogs": 10, "cats": 5})
    (tmp_path / "data" / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "cats" / ".hidden.png").write_bytes(b"")
    (tmp_path / "data" / ".thumbnails").mkdir()  # hidden folders are not classes
    images.write(tmp_path / "data" / "dogs" / "nested" / "deep.jpg")  # subfolders of a class belong to it

    dataset = discover(tmp_path / "data", val_split=0.2, seed=1)
    assert dataset.classes == ["cats", "dogs"]  # sorted: label = index
    assert set(dataset.splits) == {"train", "val"}
    assert dataset.source == "val_split=0.2,seed=1"
    every = dataset.splits["train"] + dataset.splits["val"]
    deep = tmp_path / "data" / "dogs" / "nested" / "deep.jpg"
    expected = {p for paths in made.values() for p in paths} | {deep}
    assert {s.path for s in every} == expected
    assert all(dataset.classes[s.label] in s.path.parts for s in every)
    assert dataset.counts() == {"train": {"cats": 4, "dogs": 9}, "val": {"cats": 1, "dogs": 2}}


def test_data_given_as_string(images, tmp_path: Path) -> None:
    images.tree(tmp_path / "d", {"a": 2, "b": 2})
    assert discover(str(tmp_path / "d")).classes == ["a", "b"]


def test_missing_folder(tmp_path: Path) -> None:
    message = data_error(tmp_path / "nowhere")
    assert "nowhere" in message and "no such folder" in message


def test_file_instead_of_folder(tmp_path: Path) -> None:
    (tmp_path / "data.zip").write_bytes(b"PK")
    message = data_error(tmp_path / "data.zip")
    assert "data.zip" in message and "expected a folder" in message and "got a file" in message


def test_empty_class_folder_is_named(images, tmp_path: Path) -> None:
    images.tree(tmp_path / "data", {"cats": 3})
    (tmp_path / "data" / "dogs").mkdir()
    message = data_error(tmp_path / "data")
    assert "no images" in message and str(tmp_path / "data" / "dogs") in message
    assert "cats" not in message


def test_class_folder_with_only_other_files_counts_as_empty(images, tmp_path: Path) -> None:
    images.tree(tmp_path / "data", {"cats": 3})
    (tmp_path / "data" / "dogs").mkdir()
    (tmp_path / "data" / "dogs" / "readme.txt").write_text("dogs go here")
    (tmp_path / "data" / "dogs" / ".DS_Store.jpg").write_bytes(b"")
    message = data_error(tmp_path / "data")
    assert "no images" in message and "dogs" in message


def test_single_class(images, tmp_path: Path) -> None:
    images.tree(tmp_path / "data", {"cats": 4})
    message = data_error(tmp_path / "data")
    assert "only one class" in message and "cats" in message and "at least two" in message
    assert str(tmp_path / "data") in message


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    message = data_error(tmp_path / "data")
    assert str(tmp_path / "data") in message and "no class subfolders" in message


def test_images_directly_in_folder_get_a_hint(images, tmp_path: Path) -> None:
    for i in range(3):
        images.write(tmp_path / "data" / f"{i}.jpg")
    message = data_error(tmp_path / "data")
    assert "no class subfolders" in message and "3 images lie directly in it" in message


def test_folder_with_no_images_at_all(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "file.txt").write_text("x")
    message = data_error(tmp_path / "data")
    assert "no images" in message
    assert str(tmp_path / "data" / "a") in message and str(tmp_path / "data" / "b") in message


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_val_split_out_of_range(images, tmp_path: Path, bad: float) -> None:
    images.tree(tmp_path / "data", {"a": 3, "b": 3})
    assert "--val-split" in data_error(tmp_path / "data", val_split=bad)


# --------------------------------------------------------------------------- split layouts


@pytest.mark.parametrize("val_name", ["val", "validation", "valid"])
def test_train_and_val_folders(images, tmp_path: Path, val_name: str) -> None:
    root = tmp_path / "data"
    images.tree(root / "train", {"cats": 4, "dogs": 3})
    images.tree(root / val_name, {"cats": 2, "dogs": 1})
    dataset = discover(root)
    assert dataset.classes == ["cats", "dogs"]
    assert dataset.source == "folders"
    assert set(dataset.splits) == {"train", "val"}
    assert dataset.counts() == {"train": {"cats": 4, "dogs": 3}, "val": {"cats": 2, "dogs": 1}}
    assert all(s.path.parts[-3] == val_name for s in dataset.splits["val"])


def test_test_folder_picked_up(images, tmp_path: Path) -> None:
    root = tmp_path / "data"
    images.tree(root / "train", {"cats": 2, "dogs": 2})
    images.tree(root / "val", {"cats": 1, "dogs": 1})
    images.tree(root / "test", {"cats": 3, "dogs": 1})
    dataset = discover(root)
    assert set(dataset.splits) == {"train", "val", "test"}
    assert dataset.counts()["test"] == {"cats": 3, "dogs": 1}


def test_train_and_test_without_val_splits_train(images, tmp_path: Path) -> None:
    root = tmp_path / "data"
    made = images.tree(root / "train", {"cats": 10, "dogs": 5})
    images.tree(root / "test", {"cats": 2, "dogs": 2})
    dataset = discover(root, val_split=0.2, seed=3)
    assert set(dataset.splits) == {"train", "val", "test"}
    assert dataset.counts()["val"] == {"cats": 2, "dogs": 1}
    assert dataset.counts()["test"] == {"cats": 2, "dogs": 2}
    train_val = [s.path for s in dataset.splits["train"] + dataset.splits["val"]]
    assert sorted(train_val) == sorted(p for paths in made.values() for p in paths)
    assert "seed=3" in dataset.source


def test_val_class_missing_from_train(images, tmp_path: Path) -> None:
    root = tmp_path / "data"
    images.tree(root / "train", {"cats": 2, "dogs": 2})
    images.tree(root / "val", {"cats": 1, "birds": 1})
    message = data_error(root)
    assert "birds" in message and str(root / "val") in message and "not in the training classes" in message


def test_train_class_missing_from_val_is_fine(images, tmp_path: Path) -> None:
    root = tmp_path / "data"
    images.tree(root / "train", {"cats": 2, "dogs": 2})
    images.tree(root / "val", {"cats": 1})
    assert discover(root).counts()["val"] == {"cats": 1}


@pytest.mark.parametrize("present", [["val"], ["validation"], ["test"], ["val", "test"]])
def test_split_folders_without_train(images, tmp_path: Path, present: list[str]) -> None:
    root = tmp_path / "data"
    for name in present:
        images.tree(root / name, {"cats": 1, "dogs": 1})
    message = data_error(root)
    assert "no train/ folder" in message and str(root) in message
    assert all(f"{name}" in message for name in present)


def test_empty_train_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    message = data_error(tmp_path / "data")
    assert str(tmp_path / "data" / "train") in message and "no class subfolders" in message


def test_val_folder_without_images(images, tmp_path: Path) -> None:
    root = tmp_path / "data"
    images.tree(root / "train", {"cats": 2, "dogs": 2})
    (root / "val" / "cats").mkdir(parents=True)
    message = data_error(root)
    assert str(root / "val") in message and "no images" in message


# --------------------------------------------------------------------------- stratified split


def pool(counts: dict[int, int]) -> list[Sample]:
    return [Sample(Path(f"c{label}/{i:04d}.jpg"), label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_is_seeded_disjoint_and_complete() -> None:
    samples = pool({0: 50, 1: 20, 2: 10})
    train, val = stratified_split(samples, 0.2, seed=7)
    again_train, again_val = stratified_split(samples, 0.2, seed=7)
    assert (train, val) == (again_train, again_val)
    other_train, other_val = stratified_split(samples, 0.2, seed=8)
    assert set(other_val) != set(val)

    assert not set(train) & set(val)
    assert sorted(train + val, key=str) == sorted(samples, key=str)
    per_class = {label: sum(s.label == label for s in val) for label in (0, 1, 2)}
    assert per_class == {0: 10, 1: 4, 2: 2}  # each class keeps its 20 %


def test_stratified_split_tiny_classes() -> None:
    train, val = stratified_split(pool({0: 1, 1: 2, 2: 3}), 0.1, seed=0)
    val_labels = sorted(s.label for s in val)
    assert val_labels == [1, 2]  # a lone image stays in train; 2+ images give at least one to val
    assert sorted(s.label for s in train) == [0, 1, 2, 2]


def test_discover_split_seeded_and_stratified(images, tmp_path: Path) -> None:
    images.tree(tmp_path / "data", {"a": 30, "b": 10})
    first = discover(tmp_path / "data", val_split=0.3, seed=5)
    second = discover(tmp_path / "data", val_split=0.3, seed=5)
    third = discover(tmp_path / "data", val_split=0.3, seed=6)
    assert first.splits == second.splits
    assert names(first.splits["val"]) != names(third.splits["val"])
    for dataset in (first, third):
        assert dataset.counts()["val"] == {"a": 9, "b": 3}
        assert not names(dataset.splits["train"]) & names(dataset.splits["val"])
        assert len(dataset.splits["train"]) + len(dataset.splits["val"]) == 40


# --------------------------------------------------------------------------- symlinks


def test_symlinked_class_folders_are_followed(images, tmp_path: Path) -> None:
    elsewhere = images.tree(tmp_path / "elsewhere", {"dogs": 3})
    images.tree(tmp_path / "data", {"cats": 3})
    (tmp_path / "data" / "dogs").symlink_to(tmp_path / "elsewhere" / "dogs")
    dataset = discover(tmp_path / "data", val_split=0.34)
    assert dataset.counts() == {"train": {"cats": 2, "dogs": 2}, "val": {"cats": 1, "dogs": 1}}
    assert {s.path.resolve() for s in dataset.splits["train"] + dataset.splits["val"] if s.label == 1} == {
        p.resolve() for p in elsewhere["dogs"]
    }


def test_symlink_loop_lists_each_image_once(images, tmp_path: Path) -> None:
    images.tree(tmp_path / "data", {"cats": 4, "dogs": 4})
    (tmp_path / "data" / "cats" / "self").symlink_to(".")  # cats/self/self/... forever
    (tmp_path / "data" / "dogs" / "sub").mkdir()
    (tmp_path / "data" / "dogs" / "sub" / "back").symlink_to("..")
    dataset = discover(tmp_path / "data", val_split=0.25)
    assert dataset.counts() == {"train": {"cats": 3, "dogs": 3}, "val": {"cats": 1, "dogs": 1}}
    real = [s.path.resolve() for s in dataset.splits["train"] + dataset.splits["val"]]
    assert len(real) == len(set(real)) == 8  # no image twice, so none in both train and val


# --------------------------------------------------------------------------- manifests and odd names


def test_manifest_round_trip(images, tmp_path: Path) -> None:
    images.tree(tmp_path / "data", {"a": 5, "b": 5})
    dataset = discover(tmp_path / "data", seed=2)
    manifest = json.loads(json.dumps(dataset.split_manifest()))
    assert all(not Path(rel).is_absolute() for rel, _ in manifest["splits"]["train"])
    again = from_manifest(manifest)
    assert again.classes == dataset.classes and again.splits == dataset.splits
    assert again.source == dataset.source


def test_non_utf8_names(images, tmp_path: Path) -> None:
    root = tmp_path / "data"
    images.tree(root, {"a": 2})
    try:
        odd_class = os.path.join(os.fsencode(root), b"caf\xe9")
        os.mkdir(odd_class)
    except (OSError, UnicodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    message = data_error(root)  # the odd class is empty: its name must be printable in the message
    assert message.isprintable() and "caf" in message
    message.encode("utf-8")

    images.write(Path(os.fsdecode(os.path.join(odd_class, b"\xff.png"))))
    dataset = discover(root, val_split=0.5)
    assert len(dataset.classes) == 2
    again = from_manifest(json.loads(json.dumps(dataset.split_manifest())))
    assert again.splits == dataset.splits
    assert all(s.path.exists() for samples in again.splits.values() for s in samples)
