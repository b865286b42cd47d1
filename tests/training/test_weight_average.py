"""The recipe option `ema`: a moving average of the weights is what training validates, checkpoints
and keeps."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import imgcls
from imgcls.training.module import ClassifierModule

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.usefixtures("imgcls_env")]

TINY = {"image_size": 48, "epochs": 2, "batch_size": 8, "progress": False}


def test_ema_weights_are_the_ones_validated_and_kept(cats_dogs_subset, tmp_path: Path) -> None:
    data = cats_dogs_subset("data", train=16, val=8)
    run = imgcls.train(data, "scratch", out=tmp_path / "runs", seed=3, ema=0.9, **TINY)
    best = torch.load(run.checkpoint("train", "best"), map_location="cpu", weights_only=True)
    averaged, current = best["state_dict"], best["current_model_state"]
    saved = load_file(str(run / "model.safetensors"))
    assert saved.keys() == {key.removeprefix("model.") for key in averaged}
    for key, value in averaged.items():
        torch.testing.assert_close(saved[key.removeprefix("model.")], value, rtol=0, atol=0)
    moved = [k for k, v in current.items() if v.is_floating_point() and not torch.equal(v, averaged[k])]
    assert moved, "the averaged weights should lag the trained ones"
    with (run / "history.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_without_ema_no_averaging_callback() -> None:
    module = _module({"ema": 0.0})
    module.trainer = type("T", (), {"callbacks": []})()
    assert module.configure_callbacks() == []


def _module(recipe: dict) -> ClassifierModule:
    spec = {"architecture": "fast-resnet", "classes": ["a", "b"], "image_size": 32, "arch_args": {}}
    return ClassifierModule(spec, {"label_smoothing": 0.0, **recipe}, steps_per_epoch=1)
