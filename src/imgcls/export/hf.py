"""`imgcls export RUN --format hf`: a Hugging Face model folder, with a model card filled from the run.

The folder holds `model.safetensors`, `config.json` and `README.md` (the card), as timm writes and
reads them, plus imgcls's `model.json`, so both libraries load it:

- a transfer run on a timm backbone (the default EfficientNet-Lite0, `timm/<name>`) with a linear
  head is written in timm's own layout: `timm.create_model("local-dir:DIR", pretrained=True)` (or
  `"hf-hub:user/repo"` once pushed) builds it without imgcls, and timm's `resolve_data_config` +
  `create_transform` prepare photos as imgcls does (both written by timm's `save_for_hf`).
- other models (scratch networks, Keras or torchvision backbones, hidden layers) keep imgcls's
  layout; the card says to load them with `imgcls.load(DIR)`.

`--push REPO` uploads the folder with `huggingface_hub`. The folder is built beside its target
and moved into place, and replaces only an earlier export of the same run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError, first_line
from imgcls.export.card import figures, model_card
from imgcls.export.onnx import export_id
from imgcls.files import atomic_write_text, current_umask, display_path
from imgcls.modelfile import SPEC_FILE, WEIGHTS_FILE, sidecar_path
from imgcls.models.classifier import ImageClassifier, ModelSpec
from imgcls.models.timm_keys import HF_CONFIG, TIMM_LAYOUT, timm_classifier
from imgcls.run import Run

CARD_FILE = "README.md"


def export_hf(run: Run | Path | str, out: Path | None = None, license: str = "apache-2.0") -> Path:
    """Write the Hugging Face folder (default `RUN/hf`); returns it. See the module docstring."""
    run = Run.open(run)
    out = Path(out) if out is not None else run.hf_dir
    run_id = export_id(run)
    _refuse_unrelated(out, run, run_id)
    model, spec = run.load_model()
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    building.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the export is an ordinary folder
    try:
        layout = _write_model(building, model, spec, run_id)
        for figure in figures(run):
            shutil.copyfile(figure, building / figure.name)
        atomic_write_text(building / CARD_FILE, model_card(run, model, spec, layout, license))
        _move_into_place(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out


def folder_layout(folder: Path) -> str:
    """'timm' or 'imgcls': which library's layout an exported folder's weights are in."""
    return TIMM_LAYOUT if timm_classifier(folder) is not None else "imgcls"


# --------------------------------------------------------------------------- the files


def _write_model(folder: Path, model: ImageClassifier, spec: ModelSpec, run_id: str) -> str:
    """Weights + config.json + model.json; returns the layout written ('timm' or 'imgcls')."""
    from imgcls.models.timm_layout import timm_name

    if timm_name(spec) is not None:
        try:
            _write_timm(folder, model, spec, run_id)
            atomic_write_text(folder / SPEC_FILE, spec.to_json())
            return "timm"
        except Exception as error:  # an odd timm model (timm raises its own kinds): imgcls's layout then
            for leftover in folder.iterdir():
                leftover.unlink()
            note = f"timm layout not possible ({first_line(error)})"
            _write_imgcls(folder, model, spec, run_id, note)
            return "imgcls"
    _write_imgcls(folder, model, spec, run_id)
    return "imgcls"


def _write_timm(folder: Path, model: ImageClassifier, spec: ModelSpec, run_id: str) -> None:
    """timm's own `save_for_hf`: its key names in model.safetensors, config.json from its pretrained_cfg."""
    from timm.models import save_for_hf

    from imgcls.models.timm_layout import to_timm

    converted, classifier = to_timm(model, spec)
    fields = _imgcls_fields(spec, run_id, TIMM_LAYOUT) | {"classifier": classifier}
    model_config = {"label_names": list(spec.classes), "imgcls": fields}
    save_for_hf(
        converted, str(folder), model_config=model_config, safe_serialization=True, data_config=data_config(spec)
    )


def _write_imgcls(folder: Path, model: ImageClassifier, spec: ModelSpec, run_id: str, note: str = "") -> None:
    """imgcls's model file, and a config.json naming `imgcls/<architecture>` with timm's data config."""
    from imgcls.models.classifier import save_model

    save_model(folder, model, spec)
    fields = _imgcls_fields(spec, run_id, "imgcls") | ({"note": note} if note else {})
    config = {
        "architecture": f"imgcls/{spec.architecture}",
        "num_classes": len(spec.classes),
        "label_names": list(spec.classes),
        "pretrained_cfg": data_config(spec),
        "imgcls": fields,
    }
    atomic_write_text(folder / HF_CONFIG, json.dumps(config, indent=2) + "\n")


def data_config(spec: ModelSpec) -> dict[str, Any]:
    """timm's data config for this model: timm's `create_transform` then prepares photos as imgcls does
    (bilinear resize; `crop`: short side to the size, centre crop; `squash`: the whole photo)."""
    from imgcls.models.classifier import channel_stats

    return {
        "input_size": (3, spec.image_size, spec.image_size),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": {"squash": "squash", "pad": "border"}.get(spec.resize, "center"),
        "mean": channel_stats(spec.mean, 3),
        "std": channel_stats(spec.std, 3),
    }


def _imgcls_fields(spec: ModelSpec, run_id: str, layout: str) -> dict[str, Any]:
    from imgcls.version import __version__

    return {
        "layout": layout,
        "imgcls_version": __version__,
        "run_id": run_id,
        "architecture": spec.architecture,
        "output": spec.output,
        "flip_tta": spec.flip_tta,
        "eval_crops": list(spec.eval_crops),
        "channels": spec.channels,
    }


# --------------------------------------------------------------------------- safety


def _refuse_unrelated(out: Path, run: Run, run_id: str) -> None:
    """Only a missing or empty folder, or an earlier export of this run holding nothing but what the
    export and imgcls's engines write there, may be replaced: a user's own files are never deleted."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ImgclsError(f"{display_path(out)}: is a file; give a folder for --out")
    if not any(out.iterdir()):
        return
    try:
        previous = json.loads((out / HF_CONFIG).read_text()).get("imgcls", {}).get("run_id")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != run_id:
        raise ImgclsError(
            f"{display_path(out)}: exists and is not an earlier export of this run; remove it or choose another --out"
        )
    onnx = (run.onnx_path, sidecar_path(run.onnx_path), run.int8_onnx_path, sidecar_path(run.int8_onnx_path))
    ours = {
        WEIGHTS_FILE,
        HF_CONFIG,
        SPEC_FILE,
        CARD_FILE,
        *(p.name for p in (*onnx, run.curves_path, run.confusion_path)),
    }
    others = sorted(path.name for path in out.iterdir() if path.name not in ours)
    if others:
        raise ImgclsError(
            f"{display_path(out)}: an earlier export that now also holds {', '.join(others[:5])}"
            f"{' ...' if len(others) > 5 else ''}; move those out first (the export replaces the whole folder)"
        )


def _move_into_place(building: Path, out: Path) -> None:
    """Swap the finished folder in: the old export is renamed aside first and removed last."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        out.rename(old)  # over the empty folder mkdtemp made
    try:
        building.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- the Hub


def check_repo_id(repo_id: str) -> None:
    """Said before anything is exported: `user/name`, as the Hub spells repository ids."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ImgclsError(f"--push {repo_id!r}: not a Hub repository id ({first_line(error)})") from None


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face Hub (`HF_ENDPOINT`, `HF_TOKEN` as huggingface_hub
    reads them); returns the commit URL. Offline or not logged in: an ImgclsError saying what to do."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    later = (
        f"the folder {display_path(folder)} is complete: upload it later with "
        f"`hf upload {repo_id} {display_path(folder)} .` or run this command again"
    )
    check_repo_id(repo_id)
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Upload imgcls model")
    except LocalTokenNotFoundError:
        raise ImgclsError(
            f"--push {repo_id}: not logged in to Hugging Face; run `hf auth login` or set HF_TOKEN; {later}"
        ) from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise ImgclsError(
                f"--push {repo_id}: the Hub refused the token (HTTP {status}); check `hf auth whoami` "
                f"and that the token may write to {repo_id}; {later}"
            ) from None
        raise ImgclsError(f"--push {repo_id}: the Hub answered {first_line(error)}; {later}") from None
    except (OSError, hub_errors.HTTPError) as error:  # no network: the HTTP client's connection errors
        raise ImgclsError(f"--push {repo_id}: cannot reach {_endpoint()} ({first_line(error)}); {later}") from None
    return str(info.commit_url)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT
