"""Damaged checkpoints and cache entries (cut short, bytes flipped): recomputed, passed over for an
older good one, or refused with a message that names the file; never served, never a traceback."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest

import imgcls
from imgcls.data.cache import DecodeSettings, ImageCache
from imgcls.errors import ImgclsError
from imgcls.training import driver, plain

pytestmark = pytest.mark.timeout(300)
TINY = {"image_size": 32, "batch_size": 8, "progress": False, "report": False}


class CtrlCInEpochTwo(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 0:
            raise KeyboardInterrupt


@pytest.fixture
def interrupted_run(tmp_path: Path, images, imgcls_env, add_trainer_callback, monkeypatch) -> Path:
    """A seed-basic-cnn run stopped by Ctrl-C in epoch 2: checkpoints/last.ckpt (epoch 1) and the newer
    interrupted.ckpt."""
    data = tmp_path / "data"
    images.tree(data, {"cat": 16, "dog": 16})
    add_trainer_callback(plain, CtrlCInEpochTwo())
    with pytest.raises(ImgclsError, match="imgcls train --resume"):
        imgcls.train(data, "seed-basic-cnn", epochs=3, out=tmp_path / "runs", **TINY)
    monkeypatch.undo()
    run = tmp_path / "runs" / "seed-basic-cnn"
    assert (run / "checkpoints" / "interrupted.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    return run


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def test_a_damaged_newest_checkpoint_is_passed_over(interrupted_run: Path, caplog) -> None:
    cut_short(interrupted_run / "checkpoints" / "interrupted.ckpt")
    driver.resume(interrupted_run, progress=False)
    assert "interrupted.ckpt cannot be read" in caplog.text
    with (interrupted_run / "history.csv").open(newline="") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [1, 2, 3]


def test_no_readable_checkpoint_is_a_message(interrupted_run: Path) -> None:
    cut_short(interrupted_run / "checkpoints" / "interrupted.ckpt")
    last = interrupted_run / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # bytes flipped inside the archive
    last.write_bytes(bytes(data))
    with pytest.raises(ImgclsError, match="cannot be read \\(damaged\\)"):
        driver.resume(interrupted_run, progress=False)


def test_a_damaged_image_cache_entry_is_decoded_again(tmp_path: Path, images, isolated_cache: Path) -> None:
    photo = images.write(tmp_path / "a.png", size=(40, 30))
    cache = ImageCache(DecodeSettings((24, 24)))
    first = cache.load(photo)
    (entry,) = list((isolated_cache / "images").rglob("*.npy"))
    cut_short(entry)
    again = ImageCache(DecodeSettings((24, 24))).load(photo)
    assert np.array_equal(first, again)
    entry.write_bytes(entry.read_bytes()[:128])  # only the header is left
    assert np.array_equal(ImageCache(DecodeSettings((24, 24))).load(photo), first)
    data = bytearray(entry.read_bytes())
    data[200] ^= 0xFF  # one pixel changed: the array still loads, but its digest no longer matches
    entry.write_bytes(bytes(data))
    assert np.array_equal(ImageCache(DecodeSettings((24, 24))).load(photo), first)
    assert entry.read_bytes() != bytes(data)  # and the entry was written again
