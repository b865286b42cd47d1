"""The three Keras Applications, include_top=False: `VGG16`, `ResNet50`, `InceptionV3`, each written
as the same calls, in the same order, as `keras.applications` makes them, so that the auto-named layers
get the same tf.keras names and the graph is Keras' layer for layer.

Its own module because these definitions are the facts (widths, strides, epsilons, names, blocks,
preprocessing) that the rest of the package only reads, through `get_architecture`:
- BatchNormalization: epsilon 1.001e-5 in ResNet50, Keras' default 1e-3 in InceptionV3, where it
  also has `scale=False`.
- ResNet50 is Keras' ResNet v1: convs have biases, stride 2 on the first 1x1 conv of a
  downsampling block (and on the 1x1 shortcut), not on the 3x3 as in torchvision's v1.5.
- Input: VGG16/ResNet50 were trained on Keras 'caffe' input (BGR, minus the ImageNet BGR mean,
  0..255 scale): on [0, 1] RGB that is mean `CAFFE_MEAN` and std `CAFFE_STD` after an RGB->BGR
  flip (which the module does). InceptionV3: 'tf' input scaled to [-1, 1] (mean = std = 0.5), no flip.
"""

from __future__ import annotations

from imgcls.errors import ImgclsError
from imgcls.models.keras.graph import Architecture, Graph

CAFFE_MEAN = (123.68 / 255, 116.779 / 255, 103.939 / 255)  # RGB order, on [0, 1] pixels
CAFFE_STD = (1 / 255, 1 / 255, 1 / 255)


def _vgg16() -> Architecture:
    g = Graph()
    x = g.input()
    blocks = []
    for b, (convs, filters) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        for i in range(1, convs + 1):
            x = g.conv(x, filters, 3, padding="same", activation="relu", name=f"block{b}_conv{i}")
        x = g.maxpool(x, 2, 2, name=f"block{b}_pool")
        blocks.append((f"block{b}", x))
    pools = {"avg": "global_average_pooling2d", "max": "global_max_pooling2d"}
    return Architecture("vgg16", g, x, tuple(blocks), {}, "caffe", 224, pools)


def _resnet50() -> Architecture:
    g = Graph()
    eps = 1.001e-5
    x = g.input()
    x = g.zeropad(x, 3, "conv1_pad")
    x = g.conv(x, 64, 7, stride=2, name="conv1_conv")
    x = g.bn(x, eps, name="conv1_bn")
    x = g.relu(x, name="conv1_relu")
    x = g.zeropad(x, 1, "pool1_pad")
    x = g.maxpool(x, 3, 2, name="pool1_pool")
    blocks = [("conv1", x)]
    aliases = {}

    def block1(x: str, filters: int, stride: int, conv_shortcut: bool, name: str) -> str:
        if conv_shortcut:
            shortcut = g.conv(x, 4 * filters, 1, stride=stride, name=name + "_0_conv")
            shortcut = g.bn(shortcut, eps, name=name + "_0_bn")
        else:
            shortcut = x
        x = g.conv(x, filters, 1, stride=stride, name=name + "_1_conv")  # ResNet v1: stride on the 1x1
        x = g.bn(x, eps, name=name + "_1_bn")
        x = g.relu(x, name=name + "_1_relu")
        x = g.conv(x, filters, 3, padding="same", name=name + "_2_conv")
        x = g.bn(x, eps, name=name + "_2_bn")
        x = g.relu(x, name=name + "_2_relu")
        x = g.conv(x, 4 * filters, 1, name=name + "_3_conv")
        x = g.bn(x, eps, name=name + "_3_bn")
        x = g.add([shortcut, x], name=name + "_add")
        return g.relu(x, name=name + "_out")

    stages = [("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2)]
    for stage, filters, count, stride in stages:
        for i in range(1, count + 1):
            name = f"{stage}_block{i}"
            x = block1(x, filters, stride if i == 1 else 1, i == 1, name)
            blocks.append((name, x))
        aliases[stage] = x
    pools = {"avg": "avg_pool", "max": "max_pool"}
    return Architecture("resnet50", g, x, tuple(blocks), aliases, "caffe", 224, pools)


def _inception_v3() -> Architecture:
    g = Graph()

    def conv2d_bn(x: str, filters: int, rows: int, cols: int, padding: str = "same", stride: int = 1) -> str:
        x = g.conv(x, filters, (rows, cols), stride=stride, padding=padding, use_bias=False)
        x = g.bn(x, 1e-3, scale=False)
        return g.relu(x)

    x = g.input()
    x = conv2d_bn(x, 32, 3, 3, stride=2, padding="valid")
    x = conv2d_bn(x, 32, 3, 3, padding="valid")
    x = conv2d_bn(x, 64, 3, 3)
    x = g.maxpool(x, 3, 2)
    x = conv2d_bn(x, 80, 1, 1, padding="valid")
    x = conv2d_bn(x, 192, 3, 3, padding="valid")
    x = g.maxpool(x, 3, 2)
    blocks = [("stem", x)]

    for i, pool_filters in enumerate([32, 64, 64]):  # mixed 0, 1, 2: 35 x 35 x 256
        b1 = conv2d_bn(x, 64, 1, 1)
        b5 = conv2d_bn(x, 48, 1, 1)
        b5 = conv2d_bn(b5, 64, 5, 5)
        b3 = conv2d_bn(x, 64, 1, 1)
        b3 = conv2d_bn(b3, 96, 3, 3)
        b3 = conv2d_bn(b3, 96, 3, 3)
        bp = g.avgpool_same(x, 3)
        bp = conv2d_bn(bp, pool_filters, 1, 1)
        x = g.concat([b1, b5, b3, bp], name=f"mixed{i}")
        blocks.append((x, x))

    b3 = conv2d_bn(x, 384, 3, 3, stride=2, padding="valid")  # mixed 3: 17 x 17 x 768
    bd = conv2d_bn(x, 64, 1, 1)
    bd = conv2d_bn(bd, 96, 3, 3)
    bd = conv2d_bn(bd, 96, 3, 3, stride=2, padding="valid")
    bp = g.maxpool(x, 3, 2)
    x = g.concat([b3, bd, bp], name="mixed3")
    blocks.append((x, x))

    for i, c in [(4, 128), (5, 160), (6, 160), (7, 192)]:  # mixed 4..7: 17 x 17 x 768
        b1 = conv2d_bn(x, 192, 1, 1)
        b7 = conv2d_bn(x, c, 1, 1)
        b7 = conv2d_bn(b7, c, 1, 7)
        b7 = conv2d_bn(b7, 192, 7, 1)
        bd = conv2d_bn(x, c, 1, 1)
        bd = conv2d_bn(bd, c, 7, 1)
        bd = conv2d_bn(bd, c, 1, 7)
        bd = conv2d_bn(bd, c, 7, 1)
        bd = conv2d_bn(bd, 192, 1, 7)
        bp = g.avgpool_same(x, 3)
        bp = conv2d_bn(bp, 192, 1, 1)
        x = g.concat([b1, b7, bd, bp], name=f"mixed{i}")
        blocks.append((x, x))

    b3 = conv2d_bn(x, 192, 1, 1)  # mixed 8: 8 x 8 x 1280
    b3 = conv2d_bn(b3, 320, 3, 3, stride=2, padding="valid")
    b7 = conv2d_bn(x, 192, 1, 1)
    b7 = conv2d_bn(b7, 192, 1, 7)
    b7 = conv2d_bn(b7, 192, 7, 1)
    b7 = conv2d_bn(b7, 192, 3, 3, stride=2, padding="valid")
    bp = g.maxpool(x, 3, 2)
    x = g.concat([b3, b7, bp], name="mixed8")
    blocks.append((x, x))

    for i in range(2):  # mixed 9, 10: 8 x 8 x 2048
        b1 = conv2d_bn(x, 320, 1, 1)
        b3 = conv2d_bn(x, 384, 1, 1)
        b3_1 = conv2d_bn(b3, 384, 1, 3)
        b3_2 = conv2d_bn(b3, 384, 3, 1)
        b3 = g.concat([b3_1, b3_2], name=f"mixed9_{i}")
        bd = conv2d_bn(x, 448, 1, 1)
        bd = conv2d_bn(bd, 384, 3, 3)
        bd_1 = conv2d_bn(bd, 384, 1, 3)
        bd_2 = conv2d_bn(bd, 384, 3, 1)
        bd = g.concat([bd_1, bd_2])
        bp = g.avgpool_same(x, 3)
        bp = conv2d_bn(bp, 192, 1, 1)
        x = g.concat([b1, b3, bd, bp], name=f"mixed{9 + i}")
        blocks.append((x, x))
    pools = {"avg": "global_average_pooling2d", "max": "global_max_pooling2d"}
    return Architecture("inception_v3", g, x, tuple(blocks), {}, "tf", 299, pools)


_BUILDERS = {"vgg16": _vgg16, "resnet50": _resnet50, "inception_v3": _inception_v3}
KERAS_MODELS = tuple(_BUILDERS)
_ARCH_CACHE: dict[str, Architecture] = {}


def get_architecture(name: str) -> Architecture:
    """The description of Keras application `name` (vgg16, resnet50, inception_v3; `keras/` prefix allowed),
    built once."""
    key = name.lower().removeprefix("keras/")
    if key not in _BUILDERS:
        raise ImgclsError(f"unknown Keras application {name!r}; choose one of {', '.join(KERAS_MODELS)}")
    if key not in _ARCH_CACHE:
        _ARCH_CACHE[key] = _BUILDERS[key]()
    return _ARCH_CACHE[key]
