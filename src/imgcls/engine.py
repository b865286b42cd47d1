"""The ONNX Runtime engine: run ONNX models, or any frozen `nn.Module`, on the CPU.

`OnnxModule(path)`: a CPU `InferenceSession` called like a module. `onnx_session_for(module,
example, key)` exports an eval-mode module once to `cache_dir()/onnx/<key>.onnx` and reuses it
(a frozen backbone's features run here). `export_module` is the one exporter both use, and
`imgcls.export` writes a run's model with it: the TorchScript-based exporter (`dynamo=False`),
which needs no `onnxscript`; the graph is checked by onnx.checker and moved into place atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.files import atomic_path

log = logging.getLogger(__name__)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


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


def images_per_second(models: dict[str, Any], batch: np.ndarray, rounds: int) -> dict[str, float]:
    """Median images/s of each callable on `batch` over `rounds`, the models alternating so all see the
    same machine load (after one warm-up call each): how `export` compares and describes models."""
    timings: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model(batch)
    for _ in range(rounds):
        for name, model in models.items():
            started = time.perf_counter()
            model(batch)
            timings[name].append(len(batch) / (time.perf_counter() - started))
    return {name: float(np.median(values)) for name, values in timings.items()}


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
    export_module(module, example, path, names, opset, {"imgcls.fingerprint": fingerprint}, "input")
    return OnnxModule(path)


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    output_names: Sequence[str],
    opset: int,
    metadata: dict[str, str],
    input_name: str,
) -> None:
    """Export `module` to `path`: add metadata, validate with onnx.checker, move into place atomically."""
    import onnx

    dynamic = {name: {0: "batch"} for name in (input_name, *output_names)}
    with atomic_path(path) as tmp, _eval_mode(module), torch.no_grad(), warnings.catch_warnings():
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


def _fingerprint(module: nn.Module, example: torch.Tensor, opset: int) -> str:
    """Weights, buffers, module type, input shape (without batch) and dtype, opset."""
    digest = hashlib.sha256(f"{type(module).__qualname__}|{tuple(example.shape[1:])}|{example.dtype}|{opset}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
