"""SIGKILL in the middle of training, for each kind of training (whole network with augmentation,
GoogLeNet with auxiliary heads, two DDP processes): `imgcls train --resume` finishes the run with a
complete history, and a resumed seeded run is the run that was never killed (the epoch order and
the random draws of augmentation are restored from the checkpoint)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

IMGCLS = Path(sys.executable).with_name("imgcls")
pytestmark = [pytest.mark.slow, pytest.mark.shared_data, pytest.mark.timeout(600)]


def rows(run: Path) -> list[dict]:
    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def train(args: list[str], env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    result = subprocess.run([str(IMGCLS), "train", *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    return result


def kill_after_first_checkpoint(args: list[str], run: Path, env: dict) -> None:
    """Start the training in its own process group and SIGKILL all of it once epoch 1 is saved."""
    process = subprocess.Popen(
        [str(IMGCLS), "train", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 400
    while not (run / "checkpoints" / "last.ckpt").is_file():
        if process.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint:\n{process.communicate()[1].decode()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("no checkpoint within 400 s")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (run / "model.safetensors").exists(), "killed too late: training had finished"


def assert_same_run(resumed: Path, never_stopped: Path, epochs: int) -> None:
    a, b = rows(resumed), rows(never_stopped)
    assert [int(r["epoch"]) for r in a] == list(range(1, epochs + 1)), a
    for mine, theirs in zip(a, b, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), rel=1e-4, abs=1e-6), (key, mine, theirs)
    first, second = (json.loads((run / "metrics.json").read_text()) for run in (resumed, never_stopped))
    assert first["accuracy"] == second["accuracy"]
    assert first["loss"] == pytest.approx(second["loss"], rel=1e-4)


@pytest.mark.parametrize(
    ("recipe", "extra"),
    [
        ("seed-basic-cnn", ["--augment", "--image-size", "32"]),  # the seeds' random augmentation
        ("seed-googlenet-fast", []),  # two auxiliary classifiers, 32 px
    ],
)
def test_a_killed_run_resumes_to_the_run_that_never_stopped(
    recipe: str, extra: list[str], cifar_subset, imgcls_env, tmp_path: Path
) -> None:
    data = cifar_subset("cifar", per_class=4) if recipe.endswith("fast") else cifar_subset("cifar", per_class=6)
    env = {**imgcls_env, "OMP_NUM_THREADS": "1"}  # the same arithmetic in both runs
    common = [str(data), "--recipe", recipe, "--epochs", "3", "--batch-size", "8", "--seed", "3", *extra]
    common += ["--out", str(tmp_path / "runs"), "--no-progress", "--no-report"]
    train([*common, "--name", "never-stopped"], env)
    killed = tmp_path / "runs" / "killed"
    kill_after_first_checkpoint([*common, "--name", "killed"], killed, env)

    train(["--resume", str(killed), "--no-progress"], env)

    assert_same_run(killed, tmp_path / "runs" / "never-stopped", 3)


def test_a_killed_ddp_run_resumes_in_two_processes(cats_dogs_subset, imgcls_env, tmp_path: Path) -> None:
    data = cats_dogs_subset("data", train=8, val=4)
    env = {**imgcls_env, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "runs" / "seed-basic-cnn"
    args = [str(data), "--recipe", "seed-basic-cnn", "--image-size", "32", "--epochs", "3", "--batch-size", "4"]
    args += ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--out", str(tmp_path / "runs")]
    kill_after_first_checkpoint([*args, "--no-progress", "--no-report"], run, env)

    resumed = train(["--resume", str(run), "--no-progress"], env)

    assert "GLOBAL_RANK: 1" in resumed.stdout + resumed.stderr  # resumed as two processes again
    assert [int(r["epoch"]) for r in rows(run)] == [1, 2, 3]
    assert json.loads((run / "metrics.json").read_text())["n_images"] == 8
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["seed-basic-cnn"]
