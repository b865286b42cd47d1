"""`Classifier`: a trained model loaded from its run folder, predicting on files, PIL images or arrays."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from imgcls.data.decode import load_image
from imgcls.engine import OnnxModule
from imgcls.errors import ImgclsError
from imgcls.export import export_onnx
from imgcls.models.classifier import ModelSpec, predict_probabilities
from imgcls.predict import Prediction, iter_files, predict_stream
from imgcls.run import Run

if TYPE_CHECKING:
    from imgcls.explain import Explanation

ImageInput = str | Path | Image.Image | np.ndarray
ENGINES = ("auto", "torch", "onnx", "int8")
log = logging.getLogger("imgcls")


class Classifier:
    """Everything that predicts goes through here, so preprocessing matches training exactly."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, onnx: OnnxModule | None = None):
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.spec = spec
        self.onnx = onnx  # engine: when set, the forward runs RUN/model.onnx in ONNX Runtime

    @classmethod
    def load(cls, run: Path | str, engine: str = "auto") -> Classifier:
        """engine 'torch': eager PyTorch; 'onnx': RUN/model.onnx (from `imgcls export RUN`); 'int8':
        RUN/model.int8.onnx (`imgcls export RUN --quantize int8`); 'auto': RUN/model.onnx, exported
        first when missing or older than the weights; PyTorch if that fails."""
        folder = Run.open(run)
        model, spec = folder.load_model()
        return cls(model, spec, run_onnx_module(folder, spec, engine))

    @property
    def engine(self) -> str:
        if self.onnx is None:
            return "torch"
        return "int8" if self.onnx.path.name.endswith(".int8.onnx") else "onnx"

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    def pixels(self, item: ImageInput) -> np.ndarray:
        """(H, W, C) uint8 at the model's size, decoded and resized exactly as in training."""
        size = (self.spec.image_size, self.spec.image_size)
        if isinstance(item, np.ndarray):
            item = Image.fromarray(item if item.dtype == np.uint8 else np.clip(item, 0, 255).astype(np.uint8))
        return load_image(item, size, self.spec.channels, self.spec.resize)

    def predict(self, items: ImageInput | Sequence[ImageInput], batch_size: int = 16) -> list[Prediction]:
        """One `Prediction` per input; unreadable files get `error` set instead of raising."""
        items = [items] if isinstance(items, (str, Path, Image.Image, np.ndarray)) else list(items)
        return list(predict_stream(self, items, batch_size))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 from `pixels` -> (N, n_classes), for callers that decode and batch
        themselves (the server decodes each upload on its own, then batches concurrent requests)."""
        pixels = np.require(pixels, requirements=["C_CONTIGUOUS", "WRITEABLE"])  # torch wants writable memory
        return self._probabilities(torch.from_numpy(pixels).permute(0, 3, 1, 2))

    def explain(self, item: ImageInput, class_index: int | None = None) -> Explanation:
        """Grad-CAM for one image (always on the PyTorch model); see `imgcls.explain`."""
        from imgcls.explain import explain

        return explain(self, item, class_index)

    def _probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, n_classes): the only step that differs between the engines."""
        if self.onnx is not None:
            return self.onnx(batch).numpy()
        return predict_probabilities(self.model, self.spec.output, batch)


def expand_paths(patterns: Iterable[str | Path]) -> list[Path]:
    """Files, folders (recursively, images only) and glob patterns, in a stable order."""
    return list(iter_files(patterns))


def _int8_module(run: Run) -> OnnxModule:
    path = run.int8_onnx_path
    make = f"run `imgcls export {run} --quantize int8` first (or use --engine onnx)"
    if not path.is_file():
        raise ImgclsError(f"{path}: missing; {make}")
    if run.is_stale(path):
        raise ImgclsError(f"{path}: older than the weights (trained again since); {make}")
    module = OnnxModule(path)
    if _other_classes(module, run.spec):
        raise ImgclsError(f"{path}: its classes differ from the run's model; {make}")
    return module


def _other_classes(session: OnnxModule, spec: ModelSpec) -> bool:
    """The exported graph records classes (its metadata) other than the model's."""
    classes = session.metadata.get("imgcls.classes")
    return classes is not None and json.loads(classes) != spec.classes


def run_onnx_module(run: Run, spec: ModelSpec, engine: str = "auto") -> OnnxModule | None:
    """The ONNX session `Classifier.load(run, engine)` should use, or None for eager PyTorch.
    'onnx': RUN/model.onnx (an error if missing); 'auto': RUN/model.onnx, exported first when missing
    or older than the weights."""
    if engine not in ENGINES:
        raise ImgclsError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "torch":
        return None
    if engine == "int8":
        return _int8_module(run)
    onnx_path, weights, stale = run.onnx_path, run.weights_path, run.onnx_is_stale
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
    if _other_classes(session, spec):
        if engine == "onnx":
            raise ImgclsError(f"{onnx_path}: its classes differ from the run's model; run `imgcls export {run}`")
        return None
    if stale:
        log.warning("%s is older than %s; run `imgcls export %s` to refresh it", onnx_path, weights, run)
    return session
