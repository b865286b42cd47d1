"""Export a run's model to ONNX, and run ONNX models (or any frozen `nn.Module`) with ONNX Runtime.

`export_onnx(run)` writes `RUN/model.onnx`: input `pixels`, float32 (B, C, H, W) in [0, 255]
(the normalisation is inside the graph), output `probabilities` (B, n_classes) in the order of
`model.json` classes (the sigmoid of one-logit models already expanded to [1 - p, p]), so every
consumer gets the same thing as `imgcls predict`. `RUN/model.onnx.json` says how to prepare
images (resize policy and size, channel order, layout) and is also stored as ONNX metadata.

`OnnxModule(path)` is the runtime side: a CPU `InferenceSession` called like a module.
`onnx_session_for(module, example, key)` exports any eval-mode module once to
`cache_dir()/onnx/<key>.onnx` and reuses it, e.g. to run a frozen backbone through ONNX Runtime.

Exporter: the TorchScript-based one (`dynamo=False`), which needs no `onnxscript`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.classifier import SPEC_FILE, WEIGHTS_FILE, ImageClassifier, ModelSpec, load_model, probabilities
from imgcls.runs import resolve_run

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("onnx",)
ONNX_FILE = "model.onnx"
ENGINES = ("auto", "torch", "onnx")
SIDECAR_FORMAT = "imgcls-onnx"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_RESIZE_DOCS = {
    "squash": "resize the whole image to {w}x{h} (width x height), aspect ratio not kept, bilinear",
    "crop": "resize so the short side is {s} px (aspect ratio kept), then cut the centre {w}x{h}, bilinear",
}


# --------------------------------------------------------------------------- export a run


class ProbabilityModel(nn.Module):
    """`ImageClassifier` + its output activation: pixels in, (B, n_classes) probabilities out."""

    def __init__(self, model: ImageClassifier, output: str):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return probabilities(self.model(pixels), self.output)


def export_model(run: Path | str, export_format: str = "onnx", out: Path | None = None, opset: int = 17) -> Path:
    """Export in `export_format` (only 'onnx' for now); returns the file written."""
    if export_format.lower() not in SUPPORTED_FORMATS:
        supported = ", ".join(SUPPORTED_FORMATS)
        raise ImgclsError(f"export format {export_format!r} is not supported; supported: {supported}")
    return export_onnx(Path(run), out, opset)


def export_onnx(run: Path, out: Path | None = None, opset: int = 17) -> Path:
    """Write the run's model as ONNX (default `RUN/model.onnx`) plus `<out>.json` describing the
    preprocessing; returns the ONNX path. Replaces only this run's own earlier export."""
    run = resolve_run(run)
    out = Path(out) if out is not None else run / ONNX_FILE
    if out.is_dir():
        out = out / ONNX_FILE
    sidecar = sidecar_path(out)
    run_id = _run_id(run)
    for path in (out, sidecar):
        _refuse_unrelated(path, run, run_id)
    model, spec = load_model(run)
    description = describe(spec, opset)
    description["source"] = {
        "run": run.resolve().name,
        "run_id": run_id,
        "weights_sha256": _sha256(run / WEIGHTS_FILE),
    }
    example = torch.randint(0, 256, (2, spec.channels, spec.image_size, spec.image_size)).float()
    metadata = {
        "imgcls.run_id": run_id,
        "imgcls.classes": json.dumps(spec.classes),
        "imgcls.preprocessing": json.dumps(description),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    _export(ProbabilityModel(model, spec.output), example, out, [OUTPUT_NAME], opset, metadata, INPUT_NAME)
    _atomic_write_text(sidecar, json.dumps(description, indent=2) + "\n")
    return out


def sidecar_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


def describe(spec: ModelSpec, opset: int = 17) -> dict[str, Any]:
    """What a consumer of the exported model must know: input preparation and output meaning."""
    size = spec.image_size
    color = "RGB" if spec.channels == 3 else "L"
    resize = _RESIZE_DOCS.get(spec.resize, spec.resize).format(w=size, h=size, s=size)
    from imgcls import __version__

    return {
        "format": SIDECAR_FORMAT,
        "format_version": 1,
        "imgcls_version": __version__,
        "opset": opset,
        "architecture": spec.architecture,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", spec.channels, size, size],
            "layout": "NCHW",
            "channels": color,
            "value_range": [0, 255],
            "note": "raw pixel values as float32; mean/std normalisation is inside the model",
        },
        "preprocessing": {
            "resize": spec.resize,
            "size": [size, size],
            "steps": [
                "decode; apply the EXIF orientation; first frame of animations",
                "transparent pixels composited on white; 16-bit images scaled to 8 bits",
                f"convert to {color} ({'3 channels, R G B order' if color == 'RGB' else '1 channel, grayscale'})",
                resize,
                "HWC uint8 -> CHW float32 (no scaling: values stay 0..255), stack into a batch",
            ],
            "reference": "imgcls.data.decode.load_image (JPEGs are decoded with Pillow draft mode first)",
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(spec.classes)],
            "classes": list(spec.classes),
            "activation": spec.output,
            "flip_tta": spec.flip_tta,  # the graph already averages each image with its mirror image
            "note": "probabilities per class in this order; each row sums to 1"
            + ("; one-logit sigmoid model: [1 - p, p]" if spec.output == "sigmoid" else ""),
        },
    }


# --------------------------------------------------------------------------- run ONNX models


class OnnxModule:
    """An ONNX Runtime CPU session called like a module: tensor or array in, tensor out
    (a tuple of tensors when the graph has several outputs)."""

    def __init__(self, path: Path | str, threads: int | None = None, spin: bool = True):
        """`spin=False`: idle worker threads sleep instead of spinning for the next call, which a server
        wants (its decoding threads need those cores between calls; measured in benchmarks/bench_serve.py)."""
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for missing or bad files
            raise ImgclsError(f"{self.path}: cannot open this ONNX model ({error})") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_dtype = np.float32 if first.type == "tensor(float)" else None
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor | tuple[torch.Tensor, ...]:
        array = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
        array = np.ascontiguousarray(array, dtype=self.input_dtype or array.dtype)
        outputs = [torch.from_numpy(o) for o in self.session.run(self.output_names, {self.input_name: array})]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self) -> str:
        return f"OnnxModule({str(self.path)!r})"


def onnx_session_for(module: nn.Module, example: torch.Tensor, key: str, opset: int = 17) -> OnnxModule:
    """`module` through ONNX Runtime, exported once to `cache_dir()/onnx/<key>.onnx` and reused by
    later calls with the same key. The file records a fingerprint of the weights and input shape;
    if those changed, it is exported again. Dim 0 of the input and every output is dynamic."""
    from imgcls.data.download import cache_dir

    if not _KEY.match(key):
        raise ValueError(f"onnx cache key {key!r}: use letters, digits, '.', '_' and '-' only")
    path = cache_dir() / "onnx" / f"{key}.onnx"
    fingerprint = _fingerprint(module, example, opset)
    if path.is_file():
        try:
            session = OnnxModule(path)
            if session.metadata.get("imgcls.fingerprint") == fingerprint:
                return session
            log.info("%s: made from other weights or input shape; exporting again", path)
        except ImgclsError as error:
            log.warning("%s; exporting again", error)
    with torch.no_grad():
        outputs = _eval_forward(module, example)
    count = 1 if isinstance(outputs, torch.Tensor) else len(outputs)
    names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if example.shape[0] == 1:  # trace with a batch of 2 so that no shape gets specialised to 1
        example = torch.cat([example, example])
    _export(module, example, path, names, opset, {"imgcls.fingerprint": fingerprint}, "input")
    return OnnxModule(path)


def run_onnx_module(run: Path, spec: ModelSpec, engine: str = "auto") -> OnnxModule | None:
    """The ONNX session `Classifier.load(run, engine)` should use, or None for eager PyTorch.
    'onnx': RUN/model.onnx (an error if missing); 'auto': RUN/model.onnx, exported first when missing
    or older than the weights."""
    if engine not in ENGINES:
        raise ImgclsError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "torch":
        return None
    onnx_path, weights = run / ONNX_FILE, run / WEIGHTS_FILE
    stale = onnx_path.is_file() and weights.is_file() and onnx_path.stat().st_mtime_ns <= weights.stat().st_mtime_ns
    if engine == "auto" and (stale or not onnx_path.is_file()):
        try:  # export once, beside the weights: later predictions reuse it
            export_onnx(run)
            stale = False
        except Exception as error:  # a read-only run or an exporter gap: predict with PyTorch
            log.info("ONNX export of %s not possible (%s); predicting with PyTorch", run, error)
            return None
    if not onnx_path.is_file():
        raise ImgclsError(f"{onnx_path}: missing; run `imgcls export {run}` first (or use --engine torch)")
    try:
        session = OnnxModule(onnx_path)
    except ImgclsError:
        if engine == "onnx":
            raise
        log.warning("%s: unreadable, predicting with PyTorch instead", onnx_path)
        return None
    classes = session.metadata.get("imgcls.classes")
    if classes is not None and json.loads(classes) != spec.classes:
        if engine == "onnx":
            raise ImgclsError(f"{onnx_path}: its classes differ from {run / SPEC_FILE}; run `imgcls export {run}`")
        return None
    if stale:
        log.warning("%s is older than %s; run `imgcls export %s` to refresh it", onnx_path, weights, run)
    return session


# --------------------------------------------------------------------------- helpers


def _export(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    output_names: Sequence[str],
    opset: int,
    metadata: dict[str, str],
    input_name: str,
) -> None:
    """Export, add metadata, validate with onnx.checker, then move into place atomically."""
    import onnx

    dynamic = {name: {0: "batch"} for name in (input_name, *output_names)}
    with _temporary_path(path) as tmp, _eval_mode(module), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=False,  # TorchScript-based: onnxscript (needed by dynamo=True) is not a dependency
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
        proto = onnx.load(str(tmp))
        proto.producer_name = "imgcls"
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as error:
            raise ImgclsError(f"exported ONNX model failed onnx.checker: {error}") from None
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)


@contextlib.contextmanager
def _temporary_path(path: Path) -> Iterator[Path]:
    """A fresh file name next to `path` (same file system, so os.replace is atomic), removed on failure."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write_text(path: Path, text: str) -> None:
    with _temporary_path(path) as tmp:
        tmp.write_text(text)
        os.replace(tmp, path)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _eval_forward(module: nn.Module, example: torch.Tensor) -> Any:
    with _eval_mode(module):
        return module(example)


def _refuse_unrelated(path: Path, run: Path, run_id: str) -> None:
    """Only a missing file, the run's own model.onnx(.json), or an earlier export of this run may be replaced."""
    if not path.exists():
        return
    if path.is_dir():
        raise ImgclsError(f"{path}: is a folder; give a file path ending in .onnx")
    own = run.resolve() / ONNX_FILE
    if path.resolve() in (own, sidecar_path(own)) or _exported_from(path, run_id):
        return
    raise ImgclsError(f"{path}: exists and is not an earlier export of {run}; remove it or choose another --out")


def _exported_from(path: Path, run_id: str) -> bool:
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text()).get("source", {}).get("run_id") == run_id
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return any(p.key == "imgcls.run_id" and p.value == run_id for p in proto.metadata_props)
    except Exception:  # anything unreadable is, by definition, not ours
        return False


def _run_id(run: Path) -> str:
    return hashlib.sha256(str(run.resolve()).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(module: nn.Module, example: torch.Tensor, opset: int) -> str:
    """Weights, buffers, module type, input shape (without batch) and dtype, opset."""
    digest = hashlib.sha256(f"{type(module).__qualname__}|{tuple(example.shape[1:])}|{example.dtype}|{opset}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
