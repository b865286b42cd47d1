"""Ship a run's model in the formats other tools read.

- `onnx`: `RUN/model.onnx` for ONNX Runtime, the server and Ray (`imgcls.export.onnx`).
- `hf`: a Hugging Face folder in timm's layout with a model card (`imgcls.export.hf`).
"""

from __future__ import annotations

from pathlib import Path

from imgcls.errors import ImgclsError
from imgcls.export.onnx import INPUT_NAME, OUTPUT_NAME, SIDECAR_FORMAT, ProbabilityModel, describe, export_onnx
from imgcls.run import Run

SUPPORTED_FORMATS = ("onnx", "hf")

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "SIDECAR_FORMAT",
    "SUPPORTED_FORMATS",
    "ProbabilityModel",
    "describe",
    "export_model",
    "export_onnx",
]


def export_model(
    run: Run | Path | str,
    export_format: str = "onnx",
    out: Path | None = None,
    opset: int = 17,
    license: str = "apache-2.0",
) -> Path:
    """Export in `export_format` (see SUPPORTED_FORMATS); returns the file or folder written.
    `license`: the model card's (hf)."""
    chosen = export_format.lower()
    if chosen not in SUPPORTED_FORMATS:
        raise ImgclsError(
            f"export format {export_format!r} is not supported; supported: {', '.join(SUPPORTED_FORMATS)}"
        )
    if chosen == "hf":
        from imgcls.export.hf import export_hf

        return export_hf(run, out, license)
    return export_onnx(run, out, opset)
