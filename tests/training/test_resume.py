"""`imgcls train --resume` after a SIGKILL in the middle of fine-tuning (the default recipe's stage 2):
it continues stage 2 from its last checkpoint, never recomputes stage 1, and ends as a finished run
whose model.json, config.yaml and history agree."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import imgcls
from imgcls.run import Run

IMGCLS = Path(sys.executable).with_name("imgcls")
pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"training ended (exit {process.returncode}) before {path.name} appeared:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)


def resume(run: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`imgcls train --resume RUN`, as a user would run it after the kill."""
    command = [str(IMGCLS), "train", "--resume", str(run), "--no-progress"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def history(run: Path) -> list[tuple[str, int]]:
    with (run / "history.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        assert row["loss"] and row["val_loss"], row  # every row complete
    return [(row["stage"], int(row["epoch"])) for row in rows]


def test_a_transfer_run_killed_while_fine_tuning_resumes_without_redoing_stage_1(
    cats_dogs_subset, imgcls_env, tmp_path: Path
) -> None:
    data = cats_dogs_subset("data", train=8, val=4)
    out = tmp_path / "runs"
    run = out / "transfer"
    settings = ["--image-size", "64", "--batch-size", "8", "--epochs", "2", "--fine-tune", "--fine-tune-epochs", "8"]
    settings += ["--fine-tune-image-size", "80", "--unfreeze-from", "last:1", "--out", str(out), "--no-report"]
    command = [str(IMGCLS), "train", str(data), "--recipe", "transfer", "--no-progress", *settings]
    process = subprocess.Popen(command, env=imgcls_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(run / "checkpoints" / "fine-tune-last.ckpt", process)
    kill(process)
    assert not (run / "model.safetensors").exists(), "killed too late: training had finished"
    head = run / "checkpoints" / "head-best.ckpt"
    head_written = head.stat().st_mtime_ns
    stopped_at = max(epoch for stage, epoch in history(run) if stage == "fine-tune")

    resumed = resume(run, imgcls_env, timeout=900)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr, resumed.stderr
    assert "stage 1 (head) is done" in resumed.stderr, resumed.stderr
    assert "features of" not in resumed.stderr  # no image went through the frozen backbone again
    assert "(resumed)" in resumed.stderr
    assert head.stat().st_mtime_ns == head_written
    rows = history(run)
    assert rows == [("head", 1), ("head", 2)] + [("fine-tune", e) for e in range(1, 9)], (stopped_at, rows)
    finished = Run.open(run)
    assert finished.kept["stage"] in ("head", "fine-tune")
    size = 80 if finished.kept["stage"] == "fine-tune" else 64
    assert finished.spec.image_size == finished.spec.arch_args["image_size"] == finished.kept["image_size"] == size
    assert finished.metrics["n_images"] == 8
    again = subprocess.run(
        [str(IMGCLS), "train", "--resume", str(run)], env=imgcls_env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 2 and "has finished" in again.stderr


def test_ctrl_c_in_the_head_stage_of_a_new_run_says_run_it_again(
    cats_dogs_subset, imgcls_env, add_trainer_callback, tmp_path: Path
) -> None:
    """Nothing is saved before stage 1 ends, so the run folder goes and the message says so."""
    import lightning as L

    from imgcls.errors import ImgclsError
    from imgcls.training import transfer

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            raise KeyboardInterrupt

    add_trainer_callback(transfer, CtrlC())
    data = cats_dogs_subset("data", train=4, val=2)
    with pytest.raises(ImgclsError, match="before its first checkpoint; run the same command again"):
        imgcls.train(data, "transfer", image_size=64, epochs=2, out=tmp_path / "runs", progress=False, report=False)
    assert not (tmp_path / "runs" / "transfer").exists()


def test_a_transfer_run_killed_in_stage_1_resumes_from_the_start_of_stage_1(
    cats_dogs_subset, imgcls_env, tmp_path: Path
) -> None:
    """Nothing of stage 1 is saved before it ends (it takes seconds on cached features): `--resume`
    trains the head again from the cached features and finishes the run."""
    data = cats_dogs_subset("data", train=8, val=4)
    out = tmp_path / "runs"
    run = out / "transfer"
    command = [str(IMGCLS), "train", str(data), "--image-size", "64", "--epochs", "100", "--batch-size", "4"]
    command += ["--out", str(out), "--no-report", "--no-progress"]
    process = subprocess.Popen(command, env=imgcls_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(run / "history.csv", process)
    kill(process)
    assert not (run / "checkpoints" / "head-best.ckpt").exists(), "killed too late: stage 1 had ended"

    resumed = resume(run, imgcls_env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert history(run) == [("head", e) for e in range(1, 101)]
    assert Run.open(run).kept["stage"] == "head"


def test_last_checkpoint_is_the_latest_epoch_when_the_best_stays(cats_dogs_subset, imgcls_env, tmp_path) -> None:
    """Lightning >= 2.6 rewrites save_last only when the monitored score improves; --resume must not
    go back to the best epoch. With lr 0 nothing improves after epoch 1."""
    data = cats_dogs_subset("data", train=4, val=2)
    run = imgcls.train(
        data, "seed-basic-cnn", epochs=3, lr=0.0, image_size=32, out=tmp_path / "runs", progress=False, report=False
    )
    best, last = (torch.load(run.checkpoint("train", kind), weights_only=True) for kind in ("best", "last"))
    assert (best["epoch"], last["epoch"]) == (0, 2)


def test_last_checkpoint_of_the_best_epoch_is_one_file(cats_dogs_subset, imgcls_env, tmp_path) -> None:
    """When the last epoch is the best, last.ckpt is a hard link to best.ckpt: one write, not two."""
    data = cats_dogs_subset("data", train=4, val=2)
    run = imgcls.train(data, "seed-basic-cnn", epochs=1, image_size=32, out=tmp_path / "runs", progress=False)
    best, last = run.checkpoint("train", "best"), run.checkpoint("train", "last")
    assert best.stat().st_ino == last.stat().st_ino
    assert torch.load(last, weights_only=True)["epoch"] == 0
    # the report written at the end reused training's predictions, which equal a fresh prediction
    from imgcls.evaluation import predict_run

    assert run.held_out is not None and run.report_path.is_file()
    remembered, fresh = predict_run(run), predict_run(Run.open(run.path))
    assert remembered.paths == fresh.paths and remembered.described == fresh.described
    assert abs(remembered.probs - fresh.probs).max() < 1e-5
