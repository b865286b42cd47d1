"""The model file's names and format version: a leaf, so that code which only reads or serves a
model (ONNX Runtime, the run folder) can name them without importing torch."""

from pathlib import Path

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"  # tensors only
SPEC_FILE = "model.json"  # everything else: architecture, classes, preprocessing (models.classifier.ModelSpec)


def sidecar_path(onnx_path: Path) -> Path:
    """`model.onnx.json` beside `model.onnx`: how to feed the exported graph and what it returns."""
    return onnx_path.with_name(onnx_path.name + ".json")
