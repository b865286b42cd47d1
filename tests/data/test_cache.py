"""ImageCache / decode_all: decode once, reuse from disk, never serve stale pixels, skip bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.data import cache as cache_module
from imgcls.data.cache import DecodeSettings, ImageCache, cache_key, decode_all
from imgcls.data.decode import BadImageError, load_image

SMALL = DecodeSettings(size=(8, 12))


@pytest.fixture(autouse=True)
def _cache_env(isolated_cache: Path) -> Path:
    return isolated_cache


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path the cache actually decodes (cache misses)."""
    seen: list[Path] = []

    def counting(path, *args, **kwargs):
        seen.append(Path(path))
        return load_image(path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "load_image", counting)
    return seen


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path, *args, **kwargs):
        raise AssertionError(f"{path} decoded again instead of read from the cache")

    monkeypatch.setattr(cache_module, "load_image", fail)


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.npy"))


# --------------------------------------------------------------------------- reuse


def test_second_pass_reads_from_cache(images, tmp_path: Path, isolated_cache: Path, calls, monkeypatch) -> None:
    paths = [images.write(tmp_path / f"img{i}.png", size=(20 + i, 16)) for i in range(4)]
    labels = [0, 1, 0, 1]
    first = decode_all(paths, labels, SMALL)
    assert sorted(calls) == sorted(paths)
    assert first.images.shape == (4, 3, 8, 12) and first.images.dtype == torch.uint8
    for row, path in enumerate(paths):
        expected = load_image(path, (8, 12))
        assert np.array_equal(first.images[row].permute(1, 2, 0).numpy(), expected)
    assert first.labels.tolist() == labels and first.paths == paths and first.skipped == []

    stored = entries(isolated_cache)  # default root: $IMGCLS_CACHE/images/<settings tag>/
    assert len(stored) == 4
    assert all(SMALL.tag() in p.parts and "images" in p.parts for p in stored)
    assert not list(isolated_cache.rglob("*.tmp"))  # atomic writes leave no temporaries

    forbid_decoding(monkeypatch)
    second = decode_all(paths, labels, SMALL)
    assert torch.equal(second.images, first.images)
    assert second.labels.tolist() == labels and second.paths == paths


def test_new_cache_object_and_single_worker_reuse_entries(images, tmp_path: Path, calls) -> None:
    paths = [images.write(tmp_path / f"{i}.png") for i in range(3)]
    decode_all(paths, [0, 1, 2], SMALL, workers=1)
    decode_all(paths, [0, 1, 2], SMALL, cache=ImageCache(SMALL), workers=1)
    assert len(calls) == 3


def test_explicit_root_and_disabled_cache(images, tmp_path: Path, isolated_cache: Path, calls) -> None:
    paths = [images.write(tmp_path / "a.png")]
    root = tmp_path / "elsewhere"
    decode_all(paths, [0], SMALL, cache=ImageCache(SMALL, root=root))
    decode_all(paths, [0], SMALL, cache=ImageCache(SMALL, root=root))
    assert len(calls) == 1 and len(entries(root)) == 1 and not isolated_cache.exists()

    off = ImageCache(SMALL, enabled=False)
    decode_all(paths, [0], SMALL, cache=off)
    decode_all(paths, [0], SMALL, cache=off)
    assert len(calls) == 3 and not isolated_cache.exists()


# --------------------------------------------------------------------------- invalidation


def test_modified_file_is_decoded_again(tmp_path: Path, calls) -> None:
    red, blue = solid(tmp_path / "a.bmp", (255, 0, 0)), solid(tmp_path / "b.bmp", (0, 0, 255))
    before = decode_all([red, blue], [0, 1], SMALL)
    assert (before.images[0, 0] == 255).all()

    size = red.stat().st_size
    solid(red, (0, 255, 0))  # same dimensions, BMP: same byte size, only content and mtime differ
    assert red.stat().st_size == size
    mtime = red.stat().st_mtime_ns
    os.utime(red, ns=(mtime + 2_000_000_000, mtime + 2_000_000_000))  # robust to coarse clocks
    calls.clear()
    after = decode_all([red, blue], [0, 1], SMALL)
    assert calls == [red]  # only the changed file
    assert (after.images[0, 1] == 255).all() and (after.images[0, 0] == 0).all()
    assert torch.equal(after.images[1], before.images[1])


def test_touch_alone_invalidates(images, tmp_path: Path, calls) -> None:
    path = images.write(tmp_path / "a.png")
    key = cache_key(path, SMALL)
    decode_all([path], [0], SMALL)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache_key(path, SMALL) != key
    decode_all([path], [0], SMALL)
    assert len(calls) == 2


def test_settings_are_part_of_the_key(images, tmp_path: Path, isolated_cache: Path, calls) -> None:
    path = images.write(tmp_path / "a.png", size=(40, 30))
    variants = [
        DecodeSettings((8, 8)),
        DecodeSettings((16, 16)),
        DecodeSettings((8, 8), channels=1),
        DecodeSettings((8, 8), policy="crop"),
    ]
    results = [decode_all([path], [0], settings) for settings in variants]
    assert len(calls) == 4
    assert len({cache_key(path, s) for s in variants}) == 4
    assert [tuple(r.images.shape) for r in results] == [
        (1, 3, 8, 8),
        (1, 3, 16, 16),
        (1, 1, 8, 8),
        (1, 3, 8, 8),
    ]
    assert len({p.parent.parent.name for p in entries(isolated_cache)}) == 4  # one folder per settings tag

    again = [decode_all([path], [0], settings) for settings in variants]
    assert len(calls) == 4
    for first, second in zip(results, again, strict=True):
        assert torch.equal(first.images, second.images)


def test_same_content_at_another_path_is_another_entry(images, tmp_path: Path, calls) -> None:
    a = images.write(tmp_path / "a.png")
    b = tmp_path / "b.png"
    b.write_bytes(a.read_bytes())
    os.utime(b, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns))
    assert cache_key(a, SMALL) != cache_key(b, SMALL)
    decode_all([a, b], [0, 0], SMALL)
    assert len(calls) == 2


# --------------------------------------------------------------------------- bad files and damage


def test_bad_files_skipped_with_reasons(images, tmp_path: Path, calls) -> None:
    good = [images.write(tmp_path / f"good{i}.png", size=(10 + i, 10)) for i in range(3)]
    empty = tmp_path / "empty.jpg"
    empty.touch()
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    folder = tmp_path / "dir.jpg"
    folder.mkdir()
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "missing.jpg")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(images.write(tmp_path / "whole.png", size=(64, 64)).read_bytes()[:200])

    paths = [empty, good[0], text, good[1], folder, dangling, truncated, good[2]]
    labels = [9, 0, 9, 1, 9, 9, 9, 2]
    result = decode_all(paths, labels, SMALL)
    assert result.paths == good and result.labels.tolist() == [0, 1, 2]
    assert result.images.shape == (3, 3, 8, 12)
    for row, path in enumerate(good):
        assert np.array_equal(result.images[row].permute(1, 2, 0).numpy(), load_image(path, (8, 12)))

    reasons = {error.path: error.reason for error in result.skipped}
    assert all(isinstance(error, BadImageError) for error in result.skipped)
    assert list(reasons) == [empty, text, folder, dangling, truncated]  # in input order
    assert "empty" in reasons[empty]
    assert "not an image" in reasons[text]
    assert "directory" in reasons[folder]
    assert "not found" in reasons[dangling]
    assert "truncated" in reasons[truncated]

    calls.clear()
    again = decode_all(paths, labels, SMALL)  # good files from the cache, bad ones tried again
    assert sorted(calls) == sorted([empty, text, folder, dangling, truncated])
    assert torch.equal(again.images, result.images) and len(again.skipped) == 5


def test_all_bad_or_no_files(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("nope")
    result = decode_all([tmp_path / "x.jpg"], [0], SMALL)
    assert result.images.shape == (0, 3, 8, 12) and result.labels.shape == (0,)
    assert result.paths == [] and len(result.skipped) == 1
    empty = decode_all([], [], DecodeSettings((4, 4), channels=1))
    assert empty.images.shape == (0, 1, 4, 4) and empty.skipped == []


@pytest.mark.parametrize("damage", [b"", b"\x93NUMPY", b"garbage bytes that are not npy", "truncated"])
def test_damaged_cache_entry_is_rebuilt(images, tmp_path: Path, isolated_cache: Path, calls, damage) -> None:
    path = images.write(tmp_path / "a.png")
    first = decode_all([path], [0], SMALL)
    (entry,) = entries(isolated_cache)
    entry.write_bytes(entry.read_bytes()[:60] if damage == "truncated" else damage)

    second = decode_all([path], [0], SMALL)
    assert len(calls) == 2 and second.skipped == []
    assert torch.equal(second.images, first.images)
    assert np.array_equal(np.load(entry), first.images[0].permute(1, 2, 0).numpy())  # repaired


def test_unwritable_cache_only_costs_speed(images, tmp_path: Path, calls) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cache = ImageCache(SMALL, root=blocker)
    path = images.write(tmp_path / "a.png")
    assert decode_all([path], [0], SMALL, cache=cache).images.shape == (1, 3, 8, 12)
    assert decode_all([path], [0], SMALL, cache=cache).skipped == []
    assert len(calls) == 2


def test_non_utf8_name_is_cached(images, tmp_path: Path, calls, monkeypatch) -> None:
    target = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
    except (OSError, UnicodeError):
        pytest.skip("file system refuses non-UTF-8 file names")
    path = images.write(Path(os.fsdecode(target)))
    first = decode_all([path], [3], SMALL)
    assert first.paths == [path] and first.labels.tolist() == [3]
    forbid_decoding(monkeypatch)
    assert torch.equal(decode_all([path], [3], SMALL).images, first.images)


def test_duplicate_paths_each_returned(images, tmp_path: Path) -> None:
    path = images.write(tmp_path / "a.png")
    result = decode_all([path, path, path], [0, 1, 2], SMALL)
    assert result.labels.tolist() == [0, 1, 2]
    assert torch.equal(result.images[0], result.images[2])
