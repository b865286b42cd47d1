"""A full disk in the middle of training: one message that names the file, says how much room is
left and what to run next; the run folder keeps its last good state and `--resume` finishes it."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import pytest

import imgcls
import imgcls.files
from imgcls import cli
from imgcls.errors import ImgclsError
from imgcls.run import Run

pytestmark = pytest.mark.timeout(300)
TINY = {"image_size": 32, "batch_size": 8, "progress": False, "report": False}


class DiskFillsUp:
    """`os` for imgcls.files, whose fsync fails with ENOSPC once `full_when()` is true: every atomic
    write (history, checkpoints, model, metrics, config) then fails as on a full disk."""

    def __init__(self, full_when):
        self.full_when = full_when
        self.failed: list[int] = []

    def __getattr__(self, name: str):
        return getattr(os, name)

    def fsync(self, descriptor: int) -> None:
        if self.full_when():
            self.failed.append(descriptor)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(descriptor)


def history_epochs(run: Path) -> list[int]:
    with (run / "history.csv").open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_the_disk_fills_up_after_the_first_epoch(tmp_path: Path, images, imgcls_env, monkeypatch) -> None:
    data = tmp_path / "data"
    images.tree(data, {"cat": 12, "dog": 12})
    run = tmp_path / "runs" / "seed-basic-cnn"
    disk = DiskFillsUp(lambda: (run / "checkpoints" / "last.ckpt").is_file())
    monkeypatch.setattr(imgcls.files, "os", disk)

    with pytest.raises(ImgclsError) as raised:
        imgcls.train(data, "seed-basic-cnn", epochs=3, out=tmp_path / "runs", **TINY)

    message = str(raised.value)
    assert "No space left on device" in message and "free on that disk" in message, message
    assert "it needs about" in message, message  # the size of the file it would have replaced
    assert str(run) in message and f"imgcls train --resume {run}" in message, message
    assert disk.failed
    assert history_epochs(run) == [1]  # the last good state: epoch 1, whole
    assert not (run / "model.safetensors").exists()
    assert not [p for p in Path(run).rglob("*.tmp")], "a temporary file was left behind"

    monkeypatch.setattr(imgcls.files, "os", os)  # room again
    finished = imgcls.train(resume=run, progress=False, report=False)
    assert history_epochs(run) == [1, 2, 3] and finished.is_finished


def test_a_disk_full_from_the_start_leaves_no_run_and_the_cli_says_it_in_one_line(
    tmp_path: Path, images, imgcls_env, monkeypatch, capsys
) -> None:
    data = tmp_path / "data"
    images.tree(data, {"cat": 4, "dog": 4})
    monkeypatch.setattr(imgcls.files, "os", DiskFillsUp(lambda: True))
    monkeypatch.setattr(
        "sys.argv",
        [
            "imgcls",
            "train",
            str(data),
            "--recipe",
            "seed-basic-cnn",
            "--out",
            str(tmp_path / "runs"),
            "--image-size",
            "32",
            "--no-progress",
            "--no-report",
        ],
    )
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "Traceback" not in err and "No space left on device" in err
    assert "nothing was trained yet" in err and "config.yaml" in err
    assert not (tmp_path / "runs" / "seed-basic-cnn").exists()


def test_the_cli_turns_other_failed_writes_into_a_message(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "run"
    folder.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder / "report.html"))

    monkeypatch.setattr("imgcls.report.write_report", read_only)
    monkeypatch.setattr("sys.argv", ["imgcls", "report", str(folder)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    assert f"{folder / 'report.html'}: Read-only file system" in capsys.readouterr().err
    assert Run(folder).path == folder
