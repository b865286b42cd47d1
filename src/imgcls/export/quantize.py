"""`imgcls export RUN --quantize int8`: ONNX Runtime's static QDQ quantization, kept only when it pays.

Calibrated on the run's own training photos; then both models predict the run's validation split
and are timed side by side on this machine. The int8 model is kept (`RUN/model.int8.onnx`, used
by `predict`/`serve --engine int8`) only when it loses at most `max_accuracy_loss` and is at least
`min_speedup` times as fast: CPUs without VNNI (AVX2 only) often gain little, and a model that is
worse or slower is not worth shipping. `force` keeps it anyway (a smaller file, say).

Choices, measured on cats-vs-dogs with EfficientNet-Lite0 (benchmarks/README.md, "int8 export"):
7-bit weights (`reduce_range`, which avoids the u8*s8 overflow of AVX2's `vpmaddubsw`), per-channel
weight scales, percentile calibration, and the first convolution and the head left in float32:
plain min-max int8 lost 0.6-1.0 points there.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from imgcls.errors import ImgclsError
from imgcls.files import atomic_path, atomic_write_text, display_path
from imgcls.modelfile import sidecar_path
from imgcls.run import Run

QUANTIZE = {
    "calibration_images": 100,  # training photos the activation ranges are measured on, spread over classes
    "calibration_batch": 8,  # images per calibration call
    "percentile": 99.999,  # % of each activation's values inside its int8 range
    "max_accuracy_loss": 0.005,  # fraction of the validation photos (0.5 points)
    "min_speedup": 1.05,  # int8 images/s divided by fp32 images/s, at `timing_batch`
    "timing_batch": 16,  # images per call when timing (predict's default batch)
    "timing_rounds": 5,  # alternating fp32/int8 rounds; the median round counts
}


@dataclass
class Quantized:
    """What `quantize_run` measured and decided."""

    fp32_accuracy: float
    int8_accuracy: float
    fp32_images_per_s: float
    int8_images_per_s: float
    validation_images: int
    calibration_images: int
    kept: bool
    reason: str
    path: Path | None  # the int8 model when kept

    @property
    def accuracy_loss(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    @property
    def speedup(self) -> float:
        return self.int8_images_per_s / self.fp32_images_per_s

    def as_dict(self) -> dict:
        values = asdict(self) | {"accuracy_loss": self.accuracy_loss, "speedup": self.speedup}
        return values | {"path": str(self.path) if self.path else None}


def quantize_run(run: Run | Path | str, calibration: int | None = None, force: bool = False) -> Quantized:
    """Quantize the run's ONNX model to int8, measure both, keep int8 only if it pays (or `force`)."""
    from imgcls.export.onnx import export_onnx

    run = Run.open(run)
    settings = QUANTIZE | ({"calibration_images": calibration} if calibration is not None else {})
    if settings["calibration_images"] < 1:
        raise ImgclsError(f"--calibration {calibration}: give at least 1 training photo")
    fp32 = run.onnx_path
    if not fp32.is_file() or run.onnx_is_stale:
        fp32 = export_onnx(run)
    train, val = split_pixels(run, "train", settings["calibration_images"]), split_pixels(run, "val", None)
    with tempfile.TemporaryDirectory(dir=run.path, prefix=".quantize-") as scratch:
        calibration_pixels = train[0].astype(np.float32)
        candidate, used = _quantize(fp32, calibration_pixels, Path(scratch), settings)
        result = _measure(fp32, candidate, val, used, settings)
        result = _decide(result, settings, force)
        if result.kept:
            result.path = _keep(run, fp32, candidate, result)
    return result


# --------------------------------------------------------------------------- steps


def split_pixels(run: Run, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) uint8 pixels and labels of a split, decoded as the model's inputs (decode cache)."""
    from imgcls.data.cache import decode_all

    samples = run.dataset.splits.get(split) or []
    if not samples:
        raise ImgclsError(f"{display_path(run.path)}: the run has no {split} photos to quantize with")
    if limit is not None and len(samples) > limit:
        picked = np.linspace(0, len(samples) - 1, limit).round().astype(int)  # every class, as the split orders them
        samples = [samples[i] for i in picked]
    decoded = decode_all([s.path for s in samples], [s.label for s in samples], run.decode_settings())
    if not len(decoded.labels):
        raise ImgclsError(f"{display_path(run.path)}: none of the run's {split} photos can be read any more")
    return decoded.images.numpy(), decoded.labels.numpy()  # uint8: a float copy is made a batch at a time


def _quantize(fp32: Path, pixels: np.ndarray, scratch: Path, settings: dict) -> tuple[Path, int]:
    """The int8 model and how many photos calibrated it."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, quantized = scratch / "prepared.onnx", scratch / "int8.onnx"
    quant_pre_process(str(fp32), str(prepared))
    graph = onnx.load(str(prepared), load_external_data=False).graph
    input_name = graph.input[0].name
    calibration = _Calibration(input_name, pixels, settings["calibration_batch"])
    with _quiet():  # the calibrator prints its progress on stdout, which `imgcls export` keeps for paths
        quantize_static(
            str(prepared),
            str(quantized),
            calibration,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            calibrate_method=CalibrationMethod.Percentile,
            nodes_to_exclude=_float_nodes(graph),
            extra_options={"CalibPercentile": settings["percentile"]},
        )
    return quantized, calibration.used


def _float_nodes(graph) -> list[str]:
    """Nodes left in float32: the convolutions that see the pixels (two with flip TTA, whose graph runs
    the network on the photo and on its mirror), and the head (the last Gemm/MatMul: transformer
    blocks have their own) with everything after it, a few small ops where rounding probabilities
    costs the most. ONNX lists nodes in topological order."""
    nodes = list(graph.node)
    heads = [i for i, node in enumerate(nodes) if node.op_type in ("Gemm", "MatMul")]
    after_conv: set[str] = set()  # tensors computed from some convolution's output
    after_head: set[str] = set()  # ... from the head's
    kept = []
    for i, node in enumerate(nodes):
        behind_conv = any(tensor in after_conv for tensor in node.input)
        in_tail = (heads and i == heads[-1]) or any(tensor in after_head for tensor in node.input)
        if in_tail or (node.op_type == "Conv" and not behind_conv):
            kept.append(node.name)
        if behind_conv or node.op_type == "Conv":
            after_conv.update(node.output)
        if in_tail:
            after_head.update(node.output)
    return kept


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # "please consider pre-processing": done, by quant_pre_process
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over an array of pixels."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch: int):
        batch = min(batch, len(pixels))
        full = len(pixels) - len(pixels) % batch  # the histogram collector needs batches of one shape
        self.used = full
        self.batches = iter({input_name: pixels[i : i + batch]} for i in range(0, full, batch))

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def _measure(fp32: Path, int8: Path, val: tuple[np.ndarray, np.ndarray], n_calibration: int, settings: dict):
    from imgcls.engine import OnnxModule, images_per_second

    pixels, labels = val
    models = {"fp32": OnnxModule(fp32), "int8": OnnxModule(int8)}
    accuracy = {name: _accuracy(model, pixels, labels) for name, model in models.items()}
    speed = images_per_second(models, pixels[: settings["timing_batch"]].astype(np.float32), settings["timing_rounds"])
    return Quantized(
        fp32_accuracy=accuracy["fp32"],
        int8_accuracy=accuracy["int8"],
        fp32_images_per_s=speed["fp32"],
        int8_images_per_s=speed["int8"],
        validation_images=len(labels),
        calibration_images=n_calibration,
        kept=False,
        reason="",
        path=None,
    )


def _accuracy(model, pixels: np.ndarray, labels: np.ndarray, batch: int = 64) -> float:
    chunks = [model(pixels[i : i + batch].astype(np.float32)).numpy().argmax(1) for i in range(0, len(pixels), batch)]
    predicted = np.concatenate(chunks)
    return float((predicted == labels).mean())


def _decide(result: Quantized, settings: dict, force: bool) -> Quantized:
    loss, speedup = result.accuracy_loss, result.speedup
    problems = []
    if loss > settings["max_accuracy_loss"]:
        problems.append(f"it loses {loss:.1%} accuracy (at most {settings['max_accuracy_loss']:.1%} allowed)")
    if speedup < settings["min_speedup"]:
        problems.append(
            f"it is only {speedup:.2f}x as fast as float32 on this CPU (at least {settings['min_speedup']}x)"
        )
    if not problems:
        result.kept, result.reason = True, f"{speedup:.2f}x as fast, {loss:+.1%} accuracy loss"
    elif force:
        result.kept, result.reason = True, "kept because of --force although " + " and ".join(problems)
    else:
        result.reason = "kept float32 only: " + " and ".join(problems)
    return result


def _keep(run: Run, fp32: Path, candidate: Path, result: Quantized) -> Path:
    """RUN/model.int8.onnx and its sidecar: the float model's description plus the measurements."""
    target = run.int8_onnx_path
    description = json.loads(sidecar_path(fp32).read_text())
    description["quantization"] = {k: v for k, v in result.as_dict().items() if k not in ("path", "kept")}
    description["quantization"]["settings"] = "imgcls.export.quantize.QUANTIZE"
    with atomic_path(target) as temporary:
        shutil.copyfile(candidate, temporary)
    atomic_write_text(sidecar_path(target), json.dumps(description, indent=2) + "\n")
    return target
