"""Transfer learning end to end on a tiny cats/dogs subset at 64 px: the head trained on cached
EfficientNet-Lite0 features gives a loadable run whose predictions match its metrics; fine-tuning
changes exactly the unfrozen block (frozen weights and BatchNorm statistics stay bit-identical);
a seed recipe whose Keras weights cannot be downloaded stops before decoding any image, and the
CLI says so in one line with exit code 2."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import imgcls
import imgcls.data.cache
import imgcls.data.decode
from imgcls.errors import ImgclsError
from imgcls.inference import Classifier
from imgcls.models.backbones import block_names, create_backbone, load_pretrained, set_trainable

RUN_DIR_ENV = "IMGCLS_RUN_DIR"
ONNX_FILE = "model.onnx"  # the run-folder contract (docs/run-folder.md)
IMGCLS = Path(sys.executable).with_name("imgcls")
TINY = {"image_size": 64, "batch_size": 8, "progress": False}
VGG16_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
BACKBONE = "net.backbone."
HEAD = "net.head."


def trains_on_photos(test):
    return pytest.mark.slow(pytest.mark.shared_data(test))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(training_env, tmp_path_factory):
    """One fresh $IMGCLS_CACHE for the module (the second run reuses the first one's features), no
    inherited $IMGCLS_RUN_DIR; everything restored afterwards."""
    with training_env(tmp_path_factory.mktemp("imgcls-cache")):
        yield


@pytest.fixture(scope="module")
def subset(cats_dogs_tree, tmp_path_factory) -> Path:
    return cats_dogs_tree(tmp_path_factory.mktemp("data") / "cats-dogs", train=8, val=4)


@pytest.fixture(scope="module")
def head_run(env, subset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return imgcls.train(subset, "transfer", epochs=3, views=2, out=out, **TINY)


@pytest.fixture(scope="module")
def fine_tuned_run(env, subset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return imgcls.train(
        subset,
        "transfer",
        epochs=2,
        views=2,
        fine_tune=True,
        fine_tune_epochs=1,
        fine_tune_image_size=80,
        unfreeze="last:1",
        out=out,
        **TINY,
    )


@pytest.fixture(scope="module")
def pretrained() -> torch.nn.Module:
    backbone, _ = create_backbone("efficientnet_lite0")
    load_pretrained("efficientnet_lite0", backbone, "imagenet")
    return backbone


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def val_files(run: Path) -> tuple[list[Path], np.ndarray]:
    split = json.loads((run / "split.json").read_text())
    root = Path(split["root"])
    pairs = split["splits"]["val"]
    return [root / path for path, _ in pairs], np.array([label for _, label in pairs])


def probabilities(classifier: Classifier, files: list[Path]) -> np.ndarray:
    predictions = classifier.predict(files)
    assert all(p.error is None for p in predictions)
    return np.array([[p.probabilities[c] for c in classifier.classes] for p in predictions])


def assert_predictions_match_metrics(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    files, labels = val_files(run)
    assert metrics["split"] == "val" and metrics["n_images"] == len(files) == 8
    classifier = imgcls.load(run)
    assert classifier.classes == json.loads((run / "classes.json").read_text()) == ["cat", "dog"]
    probs = probabilities(classifier, files)
    assert (probs.argmax(1) == labels).mean() == metrics["accuracy"]
    picked = probs[np.arange(len(labels)), labels]
    # metrics.json of a head-only run comes from float16-cached features: the log loss agrees closely
    assert abs(-np.log(np.clip(picked, 1e-7, 1)).mean() - metrics["loss"]) < 5e-3
    assert np.array(metrics["confusion_matrix"]).sum() == len(files)


@trains_on_photos
def test_head_run_loads_and_predicts_its_metrics(head_run):
    for name in ("config.yaml", "split.json", "classes.json", "model.json", "model.safetensors", "metrics.json"):
        assert (head_run / name).is_file(), name
    spec = json.loads((head_run / "model.json").read_text())
    assert spec["architecture"] == "transfer" and spec["image_size"] == 64
    assert spec["arch_args"]["backbone"] == "efficientnet_lite0"
    assert_predictions_match_metrics(head_run)


@trains_on_photos
def test_flip_tta_head_run_scores_what_its_model_predicts(env, subset, tmp_path):
    """Stage 1's metrics, `imgcls evaluate` and the saved model agree for a flip-TTA head: all three
    average each photo with its mirror (the metrics from cached features of both views)."""
    from imgcls.api import evaluate

    run = imgcls.train(subset, "transfer", epochs=3, flip_tta=True, out=tmp_path / "runs", **TINY)
    assert json.loads((run / "model.json").read_text())["flip_tta"] is True
    assert_predictions_match_metrics(run)
    assert evaluate(run)["accuracy"] == run.metrics["accuracy"]
    assert abs(evaluate(run)["loss"] - run.metrics["loss"]) < 1e-6


@trains_on_photos
def test_head_run_history_has_head_rows_only(head_run):
    rows = history(head_run)
    assert [row["stage"] for row in rows] == ["head"] * 3
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    for row in rows:
        assert float(row["loss"]) > 0 and float(row["val_loss"]) > 0
    checkpoints = sorted(p.name for p in (head_run / "checkpoints").iterdir())
    assert checkpoints == ["head-best.ckpt"]  # no per-epoch files of Lightning's default checkpointing


@trains_on_photos
def test_head_run_onnx_and_torch_predict_the_same(head_run):
    files, _ = val_files(head_run)
    onnx = Classifier.load(head_run)  # auto: exports model.onnx on first use
    eager = Classifier.load(head_run, engine="torch")
    assert (onnx.engine, eager.engine) == ("onnx", "torch")
    assert (head_run / ONNX_FILE).is_file()
    by_onnx, by_torch = probabilities(onnx, files), probabilities(eager, files)
    np.testing.assert_allclose(by_onnx, by_torch, atol=1e-4)
    assert (by_onnx.argmax(1) == by_torch.argmax(1)).all()


@trains_on_photos
def test_fine_tune_history_has_head_then_fine_tune_rows(fine_tuned_run):
    stages = [row["stage"] for row in history(fine_tuned_run)]
    assert stages == ["head", "head", "fine-tune"]
    for name in ("head-best.ckpt", "fine-tune-best.ckpt"):
        assert (fine_tuned_run / "checkpoints" / name).is_file(), name
    assert_predictions_match_metrics(fine_tuned_run)


@trains_on_photos
def test_progressive_resizing_keeps_the_size_of_the_stage_that_won(fine_tuned_run):
    """Stage 2 runs at fine_tune_image_size (80 px, head at 64): the model kept predicts at its stage's size."""
    rows = history(fine_tuned_run)
    best = {stage: min(float(r["val_loss"]) for r in rows if r["stage"] == stage) for stage in ("head", "fine-tune")}
    spec = json.loads((fine_tuned_run / "model.json").read_text())
    assert spec["image_size"] == (80 if best["fine-tune"] < best["head"] else 64)


@trains_on_photos
def test_fine_tune_changes_only_the_unfrozen_block(fine_tuned_run, pretrained):
    before = {k: v.contiguous() for k, v in pretrained.state_dict().items()}  # ImageNet weights
    saved = checkpoint_model(fine_tuned_run, "fine-tune-last.ckpt")  # the weights fine-tuning ended with
    after = {k[len(BACKBONE) :]: v for k, v in saved.items() if k.startswith(BACKBONE)}
    assert set(after) == set(before)

    # which parameters `unfreeze="last:1"` trains, and which BatchNorms are frozen with them
    assert set_trainable(pretrained, "last:1") == block_names(pretrained)[-1:] == ["blocks.6+conv_head+bn2"]
    trainable = {name for name, p in pretrained.named_parameters() if p.requires_grad}
    frozen = {name for name, _ in pretrained.named_parameters()} - trainable
    assert trainable and frozen
    assert all(name.startswith(("blocks.6.", "conv_head.", "bn2.")) for name in trainable)
    batchnorms = {
        name: all(not p.requires_grad for p in module.parameters(recurse=False))
        for name, module in pretrained.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    }
    stats = ("running_mean", "running_var", "num_batches_tracked")
    frozen_stats = [f"{bn}.{s}" for bn, is_frozen in batchnorms.items() if is_frozen for s in stats]
    trained_stats = [f"{bn}.{s}" for bn, is_frozen in batchnorms.items() if not is_frozen for s in stats]
    assert frozen_stats and trained_stats

    # Keras' fine-tuning rule: every BatchNorm stays in inference mode, its statistics as loaded
    unchanged = [k for k in sorted(frozen) + frozen_stats + trained_stats if not torch.equal(after[k], before[k])]
    assert unchanged == [], f"frozen weights or BatchNorm statistics moved: {unchanged[:5]}"
    still = [k for k in sorted(trainable) if torch.equal(after[k], before[k])]
    assert still == [], f"unfrozen parameters did not change: {still[:5]}"


@trains_on_photos
def test_head_stage_leaves_the_backbone_alone_and_fine_tuning_moves_the_head(fine_tuned_run, pretrained):
    checkpoint = torch.load(fine_tuned_run / "checkpoints" / "head-best.ckpt", map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    after_head = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    for name, tensor in pretrained.state_dict().items():
        assert torch.equal(after_head[BACKBONE + name], tensor), name  # stage 1 touches no backbone number
    tuned = checkpoint_model(fine_tuned_run, "fine-tune-last.ckpt")
    head_keys = [k for k in tuned if k.startswith(HEAD)]
    assert head_keys
    assert any(not torch.equal(tuned[k], after_head[k]) for k in head_keys)
    # the kept model is the best checkpoint across both stages, by val_loss
    saved = load_file(str(fine_tuned_run / "model.safetensors"))
    candidates = [after_head, checkpoint_model(fine_tuned_run, "fine-tune-best.ckpt")]
    assert any(all(torch.equal(saved[k], c[k]) for k in saved) for c in candidates)


def checkpoint_model(run: Path, name: str) -> dict[str, torch.Tensor]:
    """The ImageClassifier weights inside a Lightning checkpoint of the run (keys as in model.safetensors)."""
    state = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


# --------------------------------------------------------------------------- missing seed weights


@pytest.fixture
def offline_keras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imgcls_env: dict[str, str]) -> dict[str, str]:
    """HOME (so ~/.keras/models) and $IMGCLS_CACHE in tmp, Keras weights URL on a closed local port."""
    with socket.socket() as probe:  # a port that was free a moment ago: connecting is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir()
    values = {"HOME": str(home), "IMGCLS_KERAS_WEIGHTS_URL": f"http://127.0.0.1:{port}/keras"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**imgcls_env, **values, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}


@pytest.fixture
def tiny_images(tmp_path: Path, images) -> Path:
    root = tmp_path / "pets"
    images.tree(root, {"cat": 5, "dog": 5})
    return root


def test_missing_seed_weights_stop_before_any_image_is_decoded(offline_keras, tiny_images, tmp_path, monkeypatch):
    decoded = []

    def no_decoding(path, *args, **kwargs):
        decoded.append(path)
        raise AssertionError(f"decoded {path} before the weights were checked")

    monkeypatch.setattr(imgcls.data.cache, "load_image", no_decoding)
    monkeypatch.setattr(imgcls.data.decode, "load_image", no_decoding)
    out = tmp_path / "runs"
    with pytest.raises(ImgclsError, match=VGG16_FILE):
        imgcls.train(tiny_images, "seed-vgg16", image_size=32, out=out, progress=False)
    assert decoded == []
    cache = Path(os.environ["IMGCLS_CACHE"])
    assert not (cache / "images").exists() and not (cache / "features").exists()
    assert not (cache / "weights" / VGG16_FILE).exists()
    assert not out.exists() or list(out.iterdir()) == []  # no run folder is left behind


def test_cli_missing_seed_weights_exit_2_without_traceback(offline_keras, tiny_images, tmp_path):
    out = tmp_path / "runs"
    command = [str(IMGCLS), "train", str(tiny_images), "--recipe", "seed-vgg16", "--image-size", "32"]
    command += ["--out", str(out), "--no-progress"]
    done = subprocess.run(command, env=offline_keras, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert VGG16_FILE in done.stderr
    assert "error:" in done.stderr
    cache = Path(offline_keras["IMGCLS_CACHE"])
    assert not (cache / "images").exists()  # no image was decoded (they would be cached here)
    assert not out.exists() or list(out.iterdir()) == [], sorted(out.rglob("*"))
