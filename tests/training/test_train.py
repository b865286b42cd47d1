"""End-to-end training on tiny subsets of real photos: the run folder contract, run naming,
reproducibility, bad files, automatic splits, multi-class, class weights, resume after a crash
and after Ctrl-C."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

import imgcls
from imgcls.cli import app
from imgcls.errors import ImgclsError
from imgcls.run import HISTORY_COLUMNS, Run
from imgcls.training import driver, plain

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.usefixtures("imgcls_env")]

TINY = {"image_size": 48, "epochs": 2, "batch_size": 8, "progress": False}
RUN_FILES = (
    "config.yaml",
    "split.json",
    "classes.json",
    "model.safetensors",
    "model.json",
    "history.csv",
    "curves.png",
    "metrics.json",
    "confusion_matrix.png",
    "skipped_files.txt",
)
IMGCLS = Path(sys.executable).with_name("imgcls")


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def history_header(run: Path) -> list[str]:
    with (run / "history.csv").open(newline="") as handle:
        return next(csv.reader(handle))


def digest(folder: Path) -> dict[str, str]:
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_safetensors(path: Path) -> None:
    """A safetensors file (u64 header length + JSON header), not a pickle or a zip."""
    raw = path.read_bytes()
    assert raw[:2] != b"PK" and raw[:1] != b"\x80", f"{path} looks like a pickle/zip"
    (length,) = struct.unpack("<Q", raw[:8])
    assert 0 < length < len(raw)
    assert isinstance(json.loads(raw[8 : 8 + length]), dict)
    assert load_file(str(path))


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"training ended (exit {process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_training(data: Path, out: Path, env: dict[str, str], epochs: int = 6) -> subprocess.Popen:
    command = [str(IMGCLS), "train", str(data), "--recipe", "seed-basic-cnn", "--image-size", "32"]
    command += ["--epochs", str(epochs), "--batch-size", "8", "--out", str(out), "--no-progress"]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a terminal's Ctrl-C needs SIGINT's default disposition, which a shell's background job lacks
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def resume_with_cli(run: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)


def assert_complete_history(run: Path, epochs: int, started: float) -> None:
    """Epochs 0..epochs-1 once each, with plausible durations (none longer than the whole test)."""
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1)), rows
    elapsed = time.monotonic() - started
    assert all(math.isfinite(float(r["loss"])) and 0 < float(r["seconds"]) < elapsed for r in rows), rows
    assert (run / "model.safetensors").is_file()
    assert json.loads((run / "metrics.json").read_text())["n_images"] > 0


@pytest.fixture
def first_run(cats_dogs_subset, tmp_path: Path) -> Path:
    data = cats_dogs_subset("data", train=16, val=8)
    return imgcls.train(data, "seed-basic-cnn", out=tmp_path / "runs", seed=7, **TINY)


def test_run_folder_contents(first_run: Path, tmp_path: Path) -> None:
    run = first_run
    assert run == tmp_path / "runs" / "seed-basic-cnn"
    for name in RUN_FILES:
        assert (run / name).is_file(), f"{name} missing from {sorted(p.name for p in run.iterdir())}"
    assert (run / "checkpoints" / "last.ckpt").is_file()

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["recipe"]["image_size"] == 48
    assert config["recipe"]["epochs"] == 2
    assert config["recipe"]["batch_size"] == 8
    assert config["options"]["seed"] == 7
    assert config["data"]["counts"] == {"train": {"cat": 16, "dog": 16}, "val": {"cat": 8, "dog": 8}}

    assert json.loads((run / "classes.json").read_text()) == ["cat", "dog"]
    split = json.loads((run / "split.json").read_text())
    assert split["source"] == "folders"
    assert [len(split["splits"][s]) for s in ("train", "val")] == [32, 16]

    # the model: safetensors weights + JSON description, no pickle
    assert_safetensors(run / "model.safetensors")
    spec = json.loads((run / "model.json").read_text())
    assert spec["architecture"] == "seed-basic-cnn"
    assert spec["classes"] == ["cat", "dog"]
    assert (spec["image_size"], spec["output"]) == (48, "sigmoid")

    assert history_header(run) == list(HISTORY_COLUMNS)
    rows = history(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        for column in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
            assert math.isfinite(float(row[column])), (column, row)
        assert 0 <= float(row["val_accuracy"]) <= 1
    assert float(rows[0]["lr"]) == pytest.approx(1e-3)

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "val"
    assert metrics["n_images"] == 16
    assert 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0
    assert np.asarray(metrics["confusion_matrix"]).sum() == 16
    assert set(metrics["per_class"]) == {"cat", "dog"}
    assert 0 <= metrics["roc_auc"] <= 1
    assert is_png(run / "curves.png") and is_png(run / "confusion_matrix.png")
    assert (run / "skipped_files.txt").read_text() == ""

    predictions = imgcls.load(run).predict(sorted((tmp_path / "data" / "val" / "cat").iterdir())[:2])
    assert [p.error for p in predictions] == [None, None]
    assert all(p.label in ("cat", "dog") for p in predictions)


def test_same_name_new_folder_and_same_seed_same_history(first_run: Path, tmp_path: Path) -> None:
    before = digest(first_run)
    second = imgcls.train(tmp_path / "data", "seed-basic-cnn", out=tmp_path / "runs", seed=7, **TINY)
    assert second == tmp_path / "runs" / "seed-basic-cnn-2"
    assert digest(first_run) == before, "the first run folder was modified"

    columns = ("loss", "accuracy", "val_loss", "val_accuracy")
    first_rows, second_rows = history(first_run), history(second)
    assert [[r[c] for c in columns] for r in second_rows] == [[r[c] for c in columns] for r in first_rows]
    first_metrics = json.loads((first_run / "metrics.json").read_text())
    second_metrics = json.loads((second / "metrics.json").read_text())
    for key in ("accuracy", "loss", "confusion_matrix", "roc_auc"):
        assert second_metrics[key] == first_metrics[key], key


def test_scratch_recipe_tiny(cats_dogs_subset, tmp_path: Path) -> None:
    data = cats_dogs_subset("data", train=8, val=4)
    tiny = {"image_size": 32, "epochs": 1, "batch_size": 8, "progress": False}
    run = imgcls.train(data, "scratch", out=tmp_path / "runs", **tiny)
    assert run.name == "scratch"
    spec = json.loads((run / "model.json").read_text())
    assert (spec["architecture"], spec["output"], spec["image_size"]) == ("small-resnet", "softmax", 32)
    assert [r["epoch"] for r in history(run)] == ["1"]
    assert_safetensors(run / "model.safetensors")
    prediction = imgcls.load(run).predict(next((data / "val" / "dog").iterdir()))[0]
    assert sum(prediction.probabilities.values()) == pytest.approx(1, abs=1e-5)


def test_bad_files_are_skipped_and_listed(cats_dogs_subset, tmp_path: Path) -> None:
    data = cats_dogs_subset("data", train=12, val=6)
    real = sorted((data / "train" / "cat").iterdir())[0].resolve().read_bytes()
    truncated = data / "train" / "cat" / "truncated.jpg"
    truncated.write_bytes(real[: len(real) // 3])
    text = data / "train" / "dog" / "notes.jpg"
    text.write_text("these are my notes, not a photo\n")

    run = imgcls.train(data, "seed-basic-cnn", out=tmp_path / "runs", **TINY)

    lines = (run / "skipped_files.txt").read_text().splitlines()
    assert len(lines) == 2, lines
    listed = {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in lines}
    assert set(listed) == {"truncated.jpg", "notes.jpg"}
    assert "truncated" in listed["truncated.jpg"] or "corrupt" in listed["truncated.jpg"]
    assert "not an image" in listed["notes.jpg"]
    assert (run / "model.safetensors").is_file()
    assert len(history(run)) == 2
    assert json.loads((run / "metrics.json").read_text())["n_images"] == 12


def test_no_val_folder_gets_stratified_split_reused_by_evaluate(cats_dogs_subset, tmp_path: Path) -> None:
    data = cats_dogs_subset("flat", train={"cat": 15, "dog": 10}, flat=True)
    run = imgcls.train(data, "seed-basic-cnn", out=tmp_path / "runs", seed=3, val_split=0.2, **TINY)

    split = json.loads((run / "split.json").read_text())
    assert split["source"] == "val_split=0.2,seed=3"
    train = {tuple(item) for item in split["splits"]["train"]}
    val = {tuple(item) for item in split["splits"]["val"]}
    assert not train & val
    every = {str(p.relative_to(data)) for p in data.rglob("*.jpg")}
    assert {rel for rel, _ in train | val} == every
    # stratified: 20% of each class (3 of 15 cats, 2 of 10 dogs), labels match the folders
    assert sorted(label for _, label in val) == [0, 0, 0, 1, 1]
    assert all(rel.split("/")[0] == ["cat", "dog"][label] for rel, label in train | val)

    result = CliRunner().invoke(app, ["evaluate", str(run), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    saved = json.loads((run / "metrics.json").read_text())
    assert evaluated["data"] == "val split of the run"
    assert evaluated["n_images"] == len(val) == saved["n_images"]
    assert evaluated["confusion_matrix"] == saved["confusion_matrix"]
    assert evaluated["accuracy"] == saved["accuracy"]
    assert evaluated["loss"] == pytest.approx(saved["loss"], rel=1e-6)


def test_multiclass_cifar_softmax(cifar_subset, tmp_path: Path) -> None:
    data = cifar_subset("cifar", per_class=10)
    run = imgcls.train(
        data, "seed-basic-cnn", out=tmp_path / "runs", image_size=32, epochs=2, batch_size=16, progress=False
    )
    spec = json.loads((run / "model.json").read_text())
    assert spec["output"] == "softmax"
    assert len(spec["classes"]) == 10
    weights = load_file(str(run / "model.safetensors"))
    assert weights["net.12.weight"].shape == (10, 512)  # one logit per class

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 20  # 2 of 10 per class held out
    assert np.asarray(metrics["confusion_matrix"]).shape == (10, 10)
    assert "roc_auc" not in metrics
    assert len(history(run)) == 2

    files = sorted(data.rglob("*.jpg"))[::10]
    predictions = imgcls.load(run).predict(files)
    for prediction in predictions:
        assert set(prediction.probabilities) == set(spec["classes"])
        assert sum(prediction.probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)


def test_class_weights_auto_on_imbalanced_data(cats_dogs_subset, tmp_path: Path) -> None:
    data = cats_dogs_subset("imbalanced", train={"cat": 16, "dog": 4}, val=4)
    run = imgcls.train(data, "seed-basic-cnn", out=tmp_path / "runs", class_weights="auto", **TINY)

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["options"]["class_weights"] == "auto"
    assert config["data"]["counts"]["train"] == {"cat": 16, "dog": 4}
    # inverse frequency, 1 for a balanced set: 20 / (2 * 16) and 20 / (2 * 4)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["class_weights"] == pytest.approx([0.625, 2.5])
    assert len(history(run)) == 2
    assert all(math.isfinite(float(r["loss"])) for r in history(run))
    assert (run / "model.safetensors").is_file()


def wait_for_first_epoch(run: Path, process) -> None:
    """Until the first epoch's checkpoint and history row exist (the moment to interrupt)."""
    wait_for(
        lambda: (
            (run / "checkpoints" / "last.ckpt").is_file() and (run / "history.csv").is_file() and len(history(run)) >= 1
        ),
        process,
        "the first checkpoint",
    )


def test_resume_after_kill(cats_dogs_subset, tmp_path: Path, imgcls_env: dict[str, str]) -> None:
    data = cats_dogs_subset("data", train=16, val=8)
    run = tmp_path / "runs" / "seed-basic-cnn"
    started = time.monotonic()
    process = start_training(data, tmp_path / "runs", imgcls_env, epochs=6)
    try:
        wait_for_first_epoch(run, process)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()
    done = len(history(run))
    assert 1 <= done < 6

    resume_with_cli(run)

    assert_complete_history(run, 6, started)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["seed-basic-cnn"]


def test_ctrl_c_says_how_to_resume(cats_dogs_subset, tmp_path: Path, imgcls_env: dict[str, str]) -> None:
    data = cats_dogs_subset("data", train=16, val=8)
    run = tmp_path / "runs" / "seed-basic-cnn"
    started = time.monotonic()
    process = start_training(data, tmp_path / "runs", imgcls_env, epochs=6)
    try:
        wait_for_first_epoch(run, process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode not in (0, None), out + err
    assert "Traceback" not in err, err
    assert f"imgcls train --resume {run}\n" in err, err  # one line: copy-paste works
    # interrupted.ckpt, or last.ckpt if the epoch's batches were done
    assert Run(run).resume_checkpoint("train") is not None
    assert not (run / "model.safetensors").exists()

    resume_with_cli(run)

    assert_complete_history(run, 6, started)


class CtrlCInEpochOne(L.Callback):
    """Ctrl-C in epoch 1: after its first batch, during its last one, or in its validation."""

    def __init__(self, when: str):
        self.when = when

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.when == "mid-epoch" and trainer.current_epoch == 1 and batch_idx == 0:
            raise KeyboardInterrupt

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if (
            self.when == "in-last-batch"
            and trainer.current_epoch == 1
            and batch_idx == trainer.num_training_batches - 1
        ):
            raise KeyboardInterrupt

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when == "in-validation" and trainer.current_epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("when", ["mid-epoch", "in-last-batch", "in-validation"])
def test_interrupted_epoch_resumes_to_a_complete_history(
    when: str, cats_dogs_subset, add_trainer_callback, tmp_path: Path, monkeypatch
) -> None:
    """Every row has its training and validation metrics, wherever in the epoch Ctrl-C came
    (Lightning would resume a checkpoint taken after the last batch without validating)."""
    data = cats_dogs_subset("data", train=16, val=8)
    add_trainer_callback(plain, CtrlCInEpochOne(when))
    with pytest.raises(ImgclsError, match="imgcls train --resume"):
        imgcls.train(data, "seed-basic-cnn", out=tmp_path / "runs", seed=7, **{**TINY, "epochs": 3})
    monkeypatch.undo()
    run = tmp_path / "runs" / "seed-basic-cnn"
    assert [int(r["epoch"]) for r in history(run)] == [1]  # epochs count from 1
    assert (run / "checkpoints" / "interrupted.ckpt").is_file() == (when == "mid-epoch")

    driver.resume(run, progress=False)

    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3], rows
    for row in rows:
        assert math.isfinite(float(row["loss"])) and 0 <= float(row["accuracy"]) <= 1, row
        assert math.isfinite(float(row["val_loss"])) and 0 <= float(row["val_accuracy"]) <= 1, row


def test_resume_of_a_foreign_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "empty")])
    assert result.exit_code != 0
    assert "not an imgcls run folder" in str(result.exception)


def test_monitor_val_accuracy_keeps_the_most_accurate_epoch(cifar_subset, tmp_path: Path) -> None:
    """The kept model scores exactly the best val_accuracy of its history (not the lowest-val_loss epoch's)."""
    data = cifar_subset("cifar", per_class=10)
    settings = dict(image_size=32, epochs=4, batch_size=16, lr=3e-3, progress=False, report=False)
    run = imgcls.train(data, "seed-basic-cnn", out=tmp_path / "runs", monitor="val_accuracy", **settings)
    rows = history(run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(max(float(r["val_accuracy"]) for r in rows), abs=1e-6)

    with pytest.raises(ImgclsError, match="unknown monitor 'val_f1'"):
        imgcls.train(data, "seed-basic-cnn", out=tmp_path / "runs", monitor="val_f1", **settings)
