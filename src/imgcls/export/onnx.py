"""Export a run's model to ONNX: the file every other runtime (ONNX Runtime, the server, Ray) reads.

`export_onnx(run)` writes `RUN/model.onnx`: input `pixels`, float32 (B, C, H, W) in [0, 255]
(the normalisation is inside the graph), output `probabilities` (B, n_classes) in the order of
`model.json` classes (the sigmoid of one-logit models already expanded to [1 - p, p]), so every
consumer gets the same thing as `imgcls predict`. `RUN/model.onnx.json` says how to prepare
images (resize policy and size, channel order, layout) and is also stored as ONNX metadata.
Running ONNX models is `imgcls.engine`'s job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgcls.engine import export_module
from imgcls.errors import ImgclsError
from imgcls.files import atomic_write_text
from imgcls.modelfile import WEIGHTS_FILE, sidecar_path
from imgcls.models.classifier import ImageClassifier, ModelSpec, probabilities
from imgcls.run import Run

SIDECAR_FORMAT = "imgcls-onnx"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
_RESIZE_DOCS = {
    "squash": "resize the whole image to {w}x{h} (width x height), aspect ratio not kept, bilinear",
    "crop": "resize so the short side is {s} px (aspect ratio kept), then cut the centre {w}x{h}, bilinear",
    "pad": "resize so the long side is {s} px (aspect ratio kept), bilinear, then centre it on a {w}x{h} "
    "canvas of grey 128 (letterbox)",
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


def export_onnx(run: Run | Path | str, out: Path | None = None, opset: int = 17) -> Path:
    """Write the run's model as ONNX (default `RUN/model.onnx`) plus `<out>.json` describing the
    preprocessing; returns the ONNX path. Replaces only this run's own earlier export."""
    run = Run.open(run)
    out = Path(out) if out is not None else run.onnx_path
    if out.is_dir():
        out = out / run.onnx_path.name
    sidecar = sidecar_path(out)
    run_id = export_id(run)
    for path in (out, sidecar):
        _refuse_unrelated(path, run, run_id)
    model, spec = run.load_model()
    description = describe(spec, opset)
    description["source"] = {
        "run": run.path.resolve().name,
        "run_id": run_id,
        "weights_sha256": _sha256(run.path / WEIGHTS_FILE),
    }
    example = torch.randint(0, 256, (2, spec.channels, spec.image_size, spec.image_size)).float()
    metadata = {
        "imgcls.run_id": run_id,
        "imgcls.classes": json.dumps(spec.classes),
        "imgcls.preprocessing": json.dumps(description),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    export_module(ProbabilityModel(model, spec.output), example, out, [OUTPUT_NAME], opset, metadata, INPUT_NAME)
    atomic_write_text(sidecar, json.dumps(description, indent=2) + "\n")
    return out


def describe(spec: ModelSpec, opset: int = 17) -> dict[str, Any]:
    """What a consumer of the exported model must know: input preparation and output meaning."""
    size = spec.image_size
    color = "RGB" if spec.channels == 3 else "L"
    resize = _RESIZE_DOCS.get(spec.resize, spec.resize).format(w=size, h=size, s=size)
    from imgcls.version import __version__

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
            "eval_crops": list(spec.eval_crops),  # the graph already zooms into the centre: feed the whole image
            "note": "probabilities per class in this order; each row sums to 1"
            + ("; one-logit sigmoid model: [1 - p, p]" if spec.output == "sigmoid" else ""),
        },
    }


# --------------------------------------------------------------------------- helpers


def _refuse_unrelated(path: Path, run: Run, run_id: str) -> None:
    """Only a missing file, the run's own model.onnx(.json), or an earlier export of this run may be replaced."""
    if not path.exists():
        return
    if path.is_dir():
        raise ImgclsError(f"{path}: is a folder; give a file path ending in .onnx")
    own = run.onnx_path.resolve()
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


def export_id(run: Run) -> str:
    return hashlib.sha256(str(run.path.resolve()).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
