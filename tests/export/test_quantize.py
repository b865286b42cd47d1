"""`imgcls export --quantize int8`: calibrated on the run's training photos, measured on its validation
photos against float32, kept only when it holds accuracy and is faster (or with --force), refused with
the reason otherwise, and used by `predict --engine int8`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from imgcls.cli import app
from imgcls.engine import OnnxModule
from imgcls.errors import ImgclsError
from imgcls.export import quantize
from imgcls.export.quantize import quantize_run
from imgcls.predict import onnx_predictor
from imgcls.run import Run

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def run(tiny_runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """A copy of the tiny transfer run (the shared one stays as it is), with the session's cache."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    return Run(shutil.copytree(tiny_runs.transfer.path, tmp_path / "run", ignore=shutil.ignore_patterns("*.ckpt")))


def test_kept_int8_model_is_quantized_and_predicts_like_float32(run: Run) -> None:
    result = quantize_run(run, force=True)
    assert result.kept and result.path == run.int8_onnx_path and result.path.is_file()
    assert result.calibration_images == 16 and result.validation_images == 8  # the run's 8+8 / 4+4 photos
    assert quantize_run(run, calibration=10, force=True).calibration_images == 8  # whole batches of 8
    assert 0 <= result.int8_accuracy <= 1 and result.fp32_images_per_s > 0 and result.int8_images_per_s > 0
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    pixels = quantize.split_pixels(run, "val", None)[0]
    int8 = OnnxModule(result.path)(pixels).numpy()
    assert int8.shape == (8, 2) and np.allclose(int8.sum(axis=1), 1, atol=1e-5)
    # How close int8 stays to float32 is measured on a real model in benchmarks/bench_quantize.py: this
    # tiny head (2 epochs on 16 photos at 64 px) rides on feature differences smaller than int8's steps.
    described = json.loads((result.path.parent / "model.int8.onnx.json").read_text())
    assert described["quantization"]["fp32_accuracy"] == result.fp32_accuracy
    assert described["output"]["classes"] == ["cat", "dog"]


def test_refuses_when_int8_is_not_faster_and_keeps_float32(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(quantize.QUANTIZE, "min_speedup", 1000.0)  # no CPU makes int8 1000x faster
    result = quantize_run(run)
    assert not result.kept and result.path is None and not run.int8_onnx_path.exists()
    assert "kept float32 only" in result.reason and "as fast as float32 on this CPU" in result.reason
    assert run.onnx_path.is_file()


def test_refuses_when_int8_loses_accuracy(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(quantize.QUANTIZE, "max_accuracy_loss", -1.0)  # any result loses too much
    result = quantize_run(run)
    assert not result.kept and "accuracy (at most" in result.reason


def test_cli_prints_both_models_and_predict_uses_int8(run: Run, tiny_runs) -> None:
    result = runner.invoke(app, ["export", str(run), "--quantize", "int8", "--calibration", "8", "--force"])
    assert result.exit_code == 0, result.output
    assert "float32" in result.output and "int8" in result.output and str(run.int8_onnx_path) in result.output
    photos = tiny_runs.data / "val"
    int8 = runner.invoke(app, ["predict", str(run), str(photos), "--engine", "int8", "--format", "json"])
    fp32 = runner.invoke(app, ["predict", str(run), str(photos), "--engine", "onnx", "--format", "json"])
    assert int8.exit_code == 0 and fp32.exit_code == 0, int8.output + fp32.output
    int8_rows, fp32_rows = json.loads(int8.stdout), json.loads(fp32.stdout)
    assert [r["file"] for r in int8_rows] == [r["file"] for r in fp32_rows] and len(int8_rows) == 8


def test_int8_engine_without_an_int8_model_says_how_to_make_one(run: Run, tiny_runs) -> None:
    assert onnx_predictor(run, "int8") is None  # then Classifier.load explains
    result = runner.invoke(app, ["predict", str(run), str(tiny_runs.data / "val"), "--engine", "int8"])
    assert isinstance(result.exception, ImgclsError)
    assert "--quantize int8" in str(result.exception)


def test_int8_engine_predicts_without_torch_once_kept(run: Run) -> None:
    quantize_run(run, force=True)
    predictor = onnx_predictor(run, "int8")  # the torch-free path `imgcls predict` takes
    assert predictor is not None and predictor.classes == ["cat", "dog"]
    run.weights_path.touch()  # trained again since: the int8 file is stale
    assert onnx_predictor(run, "int8") is None


def test_cli_refuses_other_quantizations_and_options_it_would_ignore(run: Run, tmp_path: Path) -> None:
    for args in (["--quantize", "int4"], ["--quantize", "int8", "--format", "hf"]):
        result = runner.invoke(app, ["export", str(run), *args])
        assert isinstance(result.exception, ImgclsError) and "only int8" in str(result.exception)
    result = runner.invoke(app, ["export", str(run), "--quantize", "int8", "--out", str(tmp_path / "x.onnx")])
    assert isinstance(result.exception, ImgclsError) and "leave --out out" in str(result.exception)
    with pytest.raises(ImgclsError, match="at least 1 training photo"):
        quantize_run(run, calibration=0)
