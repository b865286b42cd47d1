"""Grayscale (1-channel) models end to end, like RGB ones: train, evaluate, predict (PyTorch and ONNX
Runtime), export and data check, on a folder of grayscale PNGs and on the built-in `mnist` read
from tiny IDX files through --data-root."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import imgcls
from imgcls.cli import app
from imgcls.data.decode import load_image

pytestmark = pytest.mark.slow
runner = CliRunner()
SIZE = 16


def invoke(*args: object) -> dict | str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def write_gray_folder(root: Path, per_class: int = 16) -> Path:
    """dark/ and light/ noisy 20x20 grayscale (mode L) PNGs."""
    rng = np.random.default_rng(0)
    for name, mean in (("dark", 60), ("light", 190)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(mean, 30, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / name / f"{i:02d}.png")
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(raw: Path, n_train: int = 60, n_test: int = 20) -> None:
    """Gzipped IDX files; digit d is a white bar at height 2d, so the classes are learnable."""
    raw.mkdir(parents=True)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(count) % 10
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 6 + 2 * label, 4:24] = 255
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grayscale")


@pytest.fixture(scope="module")
def gray_run(workspace: Path, training_env) -> Path:
    """seed-basic-cnn with --channels 1 and flip TTA on the grayscale folder, through the CLI."""
    data = write_gray_folder(workspace / "gray")
    with training_env(workspace / "cache"):
        tiny = ["--image-size", SIZE, "--epochs", 2, "--batch-size", 8, "--out", workspace / "runs", "--no-progress"]
        invoke("train", data, "--recipe", "seed-basic-cnn", "--channels", 1, "--flip-tta", *tiny)
    return workspace / "runs" / "seed-basic-cnn"


@pytest.fixture(autouse=True)
def _cache(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGCLS_CACHE", str(workspace / "cache"))
    monkeypatch.delenv("IMGCLS_DATA", raising=False)


def test_train_records_one_channel(gray_run: Path) -> None:
    spec = json.loads((gray_run / "model.json").read_text())
    assert spec["channels"] == 1 and spec["flip_tta"] is True  # so ONNX below must carry the mirror view too
    assert len(spec["mean"]) == len(spec["std"]) == 3  # the recipe's RGB stats, reduced when the model is built
    config = yaml.safe_load((gray_run / "config.yaml").read_text())
    assert config["recipe"]["channels"] == 1
    weights = imgcls.load(gray_run).model.state_dict()
    first_conv = next(v for k, v in weights.items() if v.ndim == 4)
    assert first_conv.shape[1] == 1  # the network really takes one channel


def test_predict_torch_and_onnx_agree_and_rgb_files_are_converted(gray_run: Path, workspace: Path) -> None:
    files = sorted((workspace / "gray").rglob("*.png"))[::5]
    rgb = workspace / "rgb-copy.png"
    Image.open(files[0]).convert("RGB").save(rgb)
    torch_clf = imgcls.Classifier.load(gray_run, engine="torch")
    torch_probs = [p.probabilities for p in torch_clf.predict([*files, rgb])]
    invoke("export", gray_run)
    onnx_probs = [p.probabilities for p in imgcls.Classifier.load(gray_run, engine="onnx").predict([*files, rgb])]
    for expected, got in zip(torch_probs, onnx_probs, strict=True):
        assert got == pytest.approx(expected, abs=1e-5)
    assert torch_probs[-1] == pytest.approx(torch_probs[0], abs=1e-6)  # an RGB copy reads as the same gray image
    rows = json.loads(invoke("predict", gray_run, *files, "--format", "json", "--engine", "onnx"))
    for row, expected in zip(rows, onnx_probs, strict=False):
        assert row["probabilities"] == pytest.approx(expected, abs=1e-6)


def test_exported_onnx_takes_one_channel(gray_run: Path, workspace: Path) -> None:
    out = workspace / "exported.onnx"
    invoke("export", gray_run, "--out", out)
    sidecar = json.loads(out.with_name("exported.onnx.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 1, SIZE, SIZE] and sidecar["input"]["channels"] == "L"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == 1
    file = next((workspace / "gray" / "light").glob("*.png"))
    pixels = load_image(file, (SIZE, SIZE), channels=1).transpose(2, 0, 1)[None].astype(np.float32)
    (probs,) = session.run(None, {session.get_inputs()[0].name: pixels})
    expected = imgcls.Classifier.load(gray_run, engine="torch").predict([file])[0].probabilities
    assert probs[0].tolist() == pytest.approx(list(expected.values()), abs=1e-5)


def test_evaluate_reuses_the_split(gray_run: Path) -> None:
    metrics = json.loads(invoke("evaluate", gray_run, "--json"))
    split = json.loads((gray_run / "split.json").read_text())
    assert metrics["n_images"] == len(split["splits"]["val"]) == 6  # round(20% of 16) per class
    assert metrics["accuracy"] == pytest.approx(json.loads((gray_run / "metrics.json").read_text())["accuracy"])


def test_data_check_of_grayscale_folder(workspace: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(workspace / "gray"), "--json"])
    report = json.loads(result.stdout)
    assert report["n_images"] == 32 and report["formats"] == {"PNG": 32}
    assert report["unreadable"] == []


def test_mnist_end_to_end(workspace: Path) -> None:
    """`imgcls train mnist --data-root DIR` with 1 channel: the official test split is reported and reused."""
    write_mnist(workspace / "mnist-files" / "MNIST" / "raw")
    root = workspace / "mnist-files"
    tiny = ["--image-size", 28, "--epochs", 1, "--batch-size", 16, "--out", workspace / "runs", "--name", "mnist"]
    invoke("train", "mnist", "--data-root", root, "--recipe", "seed-basic-cnn", "--channels", 1, "--no-progress", *tiny)
    run = workspace / "runs" / "mnist"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_images"] == 20
    split = json.loads((run / "split.json").read_text())
    assert {name: len(items) for name, items in split["splits"].items()} == {"train": 50, "val": 10, "test": 20}
    assert metrics["classes"][:2] == ["0 - zero", "1 - one"]

    again = json.loads(invoke("evaluate", run, "--json"))
    assert again["data"] == "test split of the run" and again["accuracy"] == pytest.approx(metrics["accuracy"])
    other = json.loads(invoke("evaluate", run, "mnist", "--data-root", root, "--json"))
    assert other["n_images"] == 20 and other["data"].startswith("test images of")  # the test split, not train
    test_png = Path(split["root"]) / split["splits"]["test"][0][0]
    (prediction,) = imgcls.Classifier.load(run, engine="torch").predict([test_png])
    assert prediction.error is None and set(prediction.probabilities) == set(metrics["classes"])
