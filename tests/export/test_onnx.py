"""ONNX export and ONNX Runtime prediction: probabilities match eager PyTorch (batch 1 and 7, sigmoid and
softmax, 1 and 3 channels), the preprocessing is documented next to the model, nothing unrelated is
overwritten, `Classifier` picks its engine, `onnx_session_for` exports once per key, and the CLI.

Models are built from the registry at 48 px with random weights (sharpened, BatchNorm statistics
randomised so eval mode matters); only the last test trains, on a few real photos.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

import imgcls
from imgcls import engine
from imgcls.cli import app
from imgcls.engine import OnnxModule, onnx_session_for
from imgcls.errors import ImgclsError
from imgcls.export import describe, export_model, export_onnx
from imgcls.inference import Classifier
from imgcls.models.classifier import ImageClassifier, ModelSpec, build_classifier, probabilities, save_model
from imgcls.models.registry import accepts

pytestmark = pytest.mark.usefixtures("isolated_cache")

SIZE = 48
TOLERANCE = 1e-4
runner = CliRunner()


def make_run(
    folder: Path,
    arch: str = "seed-basic-cnn",
    output: str = "sigmoid",
    channels: int = 3,
    seed: int = 0,
    flip_tta: bool = False,
    eval_crops: tuple[float, ...] = (1.0,),
) -> tuple[Path, ImageClassifier, ModelSpec]:
    """A run folder holding just model.json + model.safetensors of a random, eval-mode model."""
    classes = ["cat", "dog"] if output == "sigmoid" else ["ant", "bee", "cow"]
    spec = ModelSpec(
        architecture=arch,
        classes=classes,
        image_size=SIZE,
        channels=channels,
        arch_args={"image_size": SIZE} if accepts(arch, "image_size") else {},
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        output=output,
        flip_tta=flip_tta,
        eval_crops=eval_crops,
    )
    torch.manual_seed(seed)
    model = build_classifier(spec)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(20)  # confident, varied probabilities rather than ~uniform ones
    model.eval()
    save_model(folder, model, spec)
    return folder, model, spec


def torch_probabilities(model: ImageClassifier, spec: ModelSpec, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return probabilities(model(pixels), spec.output)


def random_pixels(batch: int, channels: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, SIZE, SIZE), dtype=torch.uint8, generator=generator)


# --------------------------------------------------------------------------- export_onnx: parity and contract


@pytest.mark.parametrize(
    ("arch", "output", "channels", "flip_tta", "eval_crops"),
    [
        ("seed-basic-cnn", "sigmoid", 3, False, (1.0,)),
        ("seed-basic-cnn", "softmax", 1, False, (1.0,)),
        ("small-resnet", "softmax", 3, False, (1.0,)),
        ("small-resnet", "sigmoid", 1, False, (1.0,)),
        ("small-resnet", "softmax", 3, True, (0.9, 0.8, 0.7)),
    ],
)
def test_onnx_probabilities_match_torch(
    tmp_path: Path, arch: str, output: str, channels: int, flip_tta: bool, eval_crops: tuple[float, ...]
) -> None:
    run, model, spec = make_run(tmp_path / "run", arch, output, channels, flip_tta=flip_tta, eval_crops=eval_crops)
    path = export_onnx(run)
    assert path == run / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)

    graph = onnx.load(str(path)).graph
    (pixels_input,) = graph.input
    (probs_output,) = graph.output
    assert (pixels_input.name, probs_output.name) == ("pixels", "probabilities")
    assert pixels_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = pixels_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [channels, SIZE, SIZE]
    assert probs_output.type.tensor_type.shape.dim[0].dim_param == "batch"

    session = OnnxModule(path)
    worst = 0.0
    for batch in (1, 7):
        pixels = random_pixels(batch, channels)
        expected = torch_probabilities(model, spec, pixels)
        got = session(pixels)  # uint8 tensor in: converted to float32
        assert got.dtype == torch.float32 and got.shape == (batch, len(spec.classes))
        worst = max(worst, float((got - expected).abs().max()))
        assert torch.allclose(got.sum(1), torch.ones(batch), atol=1e-5)
        from_numpy = session(pixels.numpy().astype(np.float32))  # float32 arrays work the same
        assert torch.equal(from_numpy, got)
    assert worst <= TOLERANCE
    assert expected.max() - expected.min() > 0.3, "probabilities should not all be ~uniform"

    description = json.loads((run / "model.onnx.json").read_text())
    assert description["input"]["shape"] == ["batch", channels, SIZE, SIZE]
    assert description["input"]["channels"] == ("RGB" if channels == 3 else "L")
    assert description["input"]["value_range"] == [0, 255] and description["input"]["layout"] == "NCHW"
    assert description["preprocessing"]["resize"] == "squash"
    assert description["preprocessing"]["size"] == [SIZE, SIZE]
    assert description["output"]["classes"] == spec.classes
    assert description["output"]["activation"] == output
    assert description["output"]["flip_tta"] is flip_tta
    metadata = session.metadata
    assert json.loads(metadata["imgcls.classes"]) == spec.classes
    assert json.loads(metadata["imgcls.preprocessing"])["input"] == description["input"]


def test_describe_crop_policy() -> None:
    spec = ModelSpec("small-resnet", ["a", "b"], 64, channels=3, resize="crop")
    steps = describe(spec)["preprocessing"]["steps"]
    assert describe(spec)["preprocessing"]["resize"] == "crop"
    assert any("short side is 64" in step and "centre 64x64" in step for step in steps)


def test_export_overwrites_only_its_own_files(tmp_path: Path) -> None:
    run, _, _ = make_run(tmp_path / "run")
    first = export_onnx(run)
    before = first.stat().st_mtime_ns
    assert export_onnx(run) == first  # the run's own model.onnx is replaced
    assert first.stat().st_mtime_ns > before

    unrelated = tmp_path / "unrelated.onnx"
    unrelated.write_text("not mine")
    with pytest.raises(ImgclsError, match="not an earlier export"):
        export_onnx(run, unrelated)
    assert unrelated.read_text() == "not mine"

    deploy = tmp_path / "deploy" / "cats.onnx"
    assert export_onnx(run, deploy) == deploy  # parent folder created
    assert (tmp_path / "deploy" / "cats.onnx.json").is_file()
    assert export_onnx(run, deploy) == deploy  # an earlier export of this run: replaced

    other, _, _ = make_run(tmp_path / "other", seed=1)
    with pytest.raises(ImgclsError, match="not an earlier export"):
        export_onnx(other, deploy)  # an export of another run is not replaced silently

    lone_sidecar = tmp_path / "x.onnx.json"
    lone_sidecar.write_text("{}")
    with pytest.raises(ImgclsError, match="x.onnx.json"):
        export_onnx(run, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()

    folder = tmp_path / "folder"
    folder.mkdir()
    assert export_onnx(run, folder) == folder / "model.onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.json"]  # no temp files


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(ImgclsError, match="no such run folder"):
        export_onnx(tmp_path / "missing")
    run, _, _ = make_run(tmp_path / "run")
    (run / "model.safetensors").unlink()
    with pytest.raises(ImgclsError, match="missing"):
        export_onnx(run)
    with pytest.raises(ImgclsError, match="supported: onnx"):
        export_model(run, "tflite")


# --------------------------------------------------------------------------- Classifier engines


def test_classifier_engines(tmp_path: Path, images) -> None:
    run, _, _ = make_run(tmp_path / "run")
    photos = [images.make_pil("RGB", (64 + 9 * k, 40 + 5 * k)) for k in range(6)]
    photos += [np.asarray(images.make_pil("L", (30, 50)))]  # grayscale array: converted like training
    photos += [np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)]

    with pytest.raises(ImgclsError, match="imgcls export"):
        Classifier.load(run, engine="onnx")
    with pytest.raises(ImgclsError, match="auto, torch, onnx"):
        Classifier.load(run, engine="tensorrt")
    assert Classifier.load(run).engine == "onnx"  # auto: exported on first use, beside the weights
    assert (run / "model.onnx").is_file()
    first_export = (run / "model.onnx").stat().st_mtime_ns
    assert Classifier.load(run).engine == "onnx"
    assert (run / "model.onnx").stat().st_mtime_ns == first_export  # reused, not exported again

    export_onnx(run)
    torch_classifier = Classifier.load(run, engine="torch")
    onnx_classifier = Classifier.load(run, engine="onnx")
    assert (torch_classifier.engine, onnx_classifier.engine) == ("torch", "onnx")
    assert Classifier.load(run).engine == "onnx"  # auto: the export is newer than the weights
    assert imgcls.load(run).engine == "onnx"

    expected = torch_classifier.predict(photos, batch_size=5)
    got = onnx_classifier.predict(photos, batch_size=5)
    assert [p.label for p in got] == [p.label for p in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.error is None and a.probabilities == pytest.approx(b.probabilities, abs=TOLERANCE)
    np.testing.assert_array_equal(onnx_classifier.pixels(photos[0]), torch_classifier.pixels(photos[0]))

    weights = run / "model.safetensors"
    later = (run / "model.onnx").stat().st_mtime + 10
    os.utime(weights, (later, later))  # weights retrained after the export: the ONNX file is stale
    assert Classifier.load(run, engine="onnx").engine == "onnx"  # asked for explicitly: still used
    assert Classifier.load(run).engine == "onnx"  # auto: exported again from the newer weights
    assert (run / "model.onnx").stat().st_mtime > later - 10

    (run / "model.onnx").unlink()
    run.chmod(0o555)  # a read-only run folder: auto falls back to PyTorch
    try:
        if not os.access(run, os.W_OK):  # root can write anyway
            assert Classifier.load(run).engine == "torch"
    finally:
        run.chmod(0o755)


# --------------------------------------------------------------------------- onnx_session_for


class Backbone(torch.nn.Module):
    def __init__(self, pair: bool = False):
        super().__init__()
        self.pair = pair
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return (features, features.sum(1)) if self.pair else features


def test_onnx_session_for_exports_once_per_key(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exports: list[Path] = []
    real_export = engine.export_module

    def counting(module, example, path, *args, **kwargs):
        exports.append(path)
        return real_export(module, example, path, *args, **kwargs)

    monkeypatch.setattr(engine, "export_module", counting)
    torch.manual_seed(0)
    backbone = Backbone().eval()
    example = torch.rand(2, 3, 16, 16)

    session = onnx_session_for(backbone, example, "backbone-a")
    path = isolated_cache / "onnx" / "backbone-a.onnx"
    assert exports == [path] and session.path == path
    for batch in (1, 5):
        x = torch.rand(batch, 3, 16, 16)
        with torch.no_grad():
            assert float((session(x) - backbone(x)).abs().max()) <= TOLERANCE
    assert [p.name for p in path.parent.iterdir()] == ["backbone-a.onnx"]  # no temp files left behind

    mtime = path.stat().st_mtime_ns
    again = onnx_session_for(backbone, example, "backbone-a")
    assert exports == [path] and path.stat().st_mtime_ns == mtime  # reused, not exported again
    assert torch.equal(again(example), session(example))

    onnx_session_for(backbone, example, "backbone-b")
    assert exports == [path, isolated_cache / "onnx" / "backbone-b.onnx"]

    with torch.no_grad():
        backbone.body[0].weight.mul_(2)  # same key, other weights: exported anew
    changed = onnx_session_for(backbone, example, "backbone-a")
    assert len(exports) == 3
    with torch.no_grad():
        assert float((changed(example) - backbone(example)).abs().max()) <= TOLERANCE

    with pytest.raises(ValueError, match="cache key"):
        onnx_session_for(backbone, example, "../escape")


def test_onnx_session_for_tuple_outputs_and_training_mode() -> None:
    backbone = Backbone(pair=True).train()
    session = onnx_session_for(backbone, torch.rand(1, 3, 16, 16), "pair")  # batch-1 example
    assert backbone.training  # exported in eval mode, the caller's mode restored
    x = torch.rand(3, 3, 16, 16)
    features, sums = session(x)
    with torch.no_grad():
        expected = backbone.eval()(x)
    assert features.shape == (3, 8) and sums.shape == (3,)
    assert float((features - expected[0]).abs().max()) <= TOLERANCE
    assert float((sums - expected[1]).abs().max()) <= TOLERANCE


# --------------------------------------------------------------------------- CLI


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def predict_json(run: Path, folder: Path, engine: str) -> list[dict]:
    result = invoke("predict", run, folder, "--format", "json", "--engine", engine)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_export_and_predict_engines(tmp_path: Path, images) -> None:
    run, _, _ = make_run(tmp_path / "run", "small-resnet", "softmax", 3)
    folder = tmp_path / "photos"
    for k in range(5):
        images.write(folder / f"p{k}.png", size=(40 + 7 * k, 30 + 3 * k))

    result = invoke("predict", run, folder, "--engine", "onnx")
    assert isinstance(result.exception, ImgclsError) and "imgcls export" in str(result.exception)
    result = invoke("export", tmp_path / "nope")
    assert isinstance(result.exception, ImgclsError) and "no such run folder" in str(result.exception)
    result = invoke("export", run, "--format", "coreml")
    assert isinstance(result.exception, ImgclsError) and "supported: onnx" in str(result.exception)

    result = invoke("export", run)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{run / 'model.onnx'}\n"
    result = invoke("export", run, "--out", tmp_path / "ship.onnx")
    assert result.exit_code == 0 and result.stdout == f"{tmp_path / 'ship.onnx'}\n"

    with_torch, with_onnx = predict_json(run, folder, "torch"), predict_json(run, folder, "onnx")
    assert [r["label"] for r in with_onnx] == [r["label"] for r in with_torch]
    for a, b in zip(with_onnx, with_torch, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=TOLERANCE)


@pytest.mark.slow
@pytest.mark.shared_data
def test_trained_run_predicts_the_same_through_onnx(
    cats_dogs_subset, imgcls_env: dict[str, str], tmp_path: Path
) -> None:
    data = cats_dogs_subset("data", train=8, val=6)
    run = imgcls.train(
        data, "seed-basic-cnn", out=tmp_path / "runs", image_size=SIZE, epochs=1, batch_size=8, progress=False
    )
    result = invoke("export", run)
    assert result.exit_code == 0, result.output
    photos = data / "val"
    with_torch, with_onnx = predict_json(run, photos, "torch"), predict_json(run, photos, "onnx")
    assert len(with_onnx) == 12 and all(r["error"] is None for r in with_onnx)
    assert [r["label"] for r in with_onnx] == [r["label"] for r in with_torch]
    worst = max(
        abs(a["probabilities"][c] - b["probabilities"][c])
        for a, b in zip(with_onnx, with_torch, strict=True)
        for c in ("cat", "dog")
    )
    assert worst <= TOLERANCE
