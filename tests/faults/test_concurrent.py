"""Two commands at once on the same names: two trainings both finish in their own folders; two
`data split` into one DEST: one wins, the other refuses, nothing is mixed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imgcls.data.split import _move_into_place  # the step where two splits race
from imgcls.errors import DataError

IMGCLS = Path(sys.executable).with_name("imgcls")
pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
def test_two_trainings_with_one_name_both_finish(tmp_path: Path, images, imgcls_env) -> None:
    data = tmp_path / "data"
    images.tree(data, {"cat": 8, "dog": 8})
    command = [str(IMGCLS), "train", str(data), "--recipe", "seed-basic-cnn", "--name", "X", "--epochs", "2"]
    command += ["--image-size", "32", "--batch-size", "4", "--out", str(tmp_path / "runs"), "--no-progress"]
    command += ["--no-report"]
    started = [
        subprocess.Popen(command, env=imgcls_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in started:
        out, err = process.communicate(timeout=280)
        assert process.returncode == 0, err
    for name in ("X", "X-2"):
        run = tmp_path / "runs" / name
        assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
        assert len((run / "history.csv").read_text().splitlines()) == 3  # its own two epochs, no others


def test_two_splits_into_one_dest(tmp_path: Path, images) -> None:
    dest = tmp_path / "dest"
    winner, loser = tmp_path / ".dest.partial-a", tmp_path / ".dest.partial-b"
    for staging, name in ((winner, "a.txt"), (loser, "b.txt")):
        staging.mkdir()
        (staging / name).write_text(name)
    _move_into_place(winner, dest)
    with pytest.raises(DataError, match="another split was written there meanwhile"):
        _move_into_place(loser, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt"]
