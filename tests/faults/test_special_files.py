"""Files that are not photos, though named like them: FIFOs, sockets, dangling links, links to an
ancestor folder, files that vanish after listing. None may hang or crash a command; each is
skipped and listed with its reason."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imgcls.data.cache import DecodeSettings, decode_all
from imgcls.data.check import check_dataset
from imgcls.data.decode import BadImageError, load_image
from imgcls.data.discover import discover

IMGCLS = Path(sys.executable).with_name("imgcls")
pytestmark = pytest.mark.timeout(120)  # a FIFO that is opened blocks forever: the timeout is the test


@pytest.fixture
def data(tmp_path: Path, images) -> Path:
    root = tmp_path / "data"
    images.tree(root, {"cat": 6, "dog": 6})
    os.mkfifo(root / "cat" / "pipe.jpg")
    (root / "dog" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # dangling
    (root / "dog" / "up").symlink_to(root)  # a link to an ancestor: the other class would come in as copies
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "dog" / "sock.png"))
    return root


def test_load_image_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(BadImageError, match=r"not a regular file \(a FIFO\)"):
        load_image(tmp_path / "pipe.jpg")


def test_discovery_lists_files_once_and_never_enters_an_ancestor(data: Path) -> None:
    dataset = discover(data, val_split=0.25)
    names = sorted(s.path.name for s in dataset.pooled())
    assert names.count("img_000.png") == 2  # once per class, not again through dog/up
    assert sum(1 for s in dataset.pooled() if "up" in s.path.parts) == 0


def test_data_check_reports_each_special_file_with_its_reason(data: Path) -> None:
    report = check_dataset(data)
    reasons = {item["path"]: item["reason"] for item in report["unreadable"]}
    assert reasons == {
        "cat/pipe.jpg": "not a regular file (a FIFO)",
        "dog/gone.jpg": "file not found",
        "dog/sock.png": "not a regular file (a socket)",
    }
    assert report["ok"] is False


def test_a_file_that_vanishes_after_discovery_is_skipped(data: Path) -> None:
    dataset = discover(data, val_split=0.25)
    train = dataset.splits["train"]
    victim = next(s.path for s in train if s.path.name.startswith("img_"))
    victim.unlink()
    decoded = decode_all([s.path for s in train], [s.label for s in train], DecodeSettings((16, 16)))
    reasons = {error.path.name: error.reason for error in decoded.skipped}
    assert reasons[victim.name] == "file not found"
    assert len(decoded.paths) == len(train) - len(decoded.skipped)


@pytest.mark.slow
def test_train_skips_them_and_lists_them(data: Path, tmp_path: Path, imgcls_env) -> None:
    command = [str(IMGCLS), "train", str(data), "--recipe", "seed-basic-cnn", "--image-size", "32", "--epochs", "1"]
    command += ["--batch-size", "4", "--out", str(tmp_path / "runs"), "--no-report", "--no-progress"]
    result = subprocess.run(command, env=imgcls_env, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    skipped = (tmp_path / "runs" / "seed-basic-cnn" / "skipped_files.txt").read_text().splitlines()
    reasons = {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in skipped}
    assert reasons == {
        "pipe.jpg": "not a regular file (a FIFO)",
        "gone.jpg": "file not found",
        "sock.png": "not a regular file (a socket)",
    }
