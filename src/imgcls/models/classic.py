"""The classic architectures of seed 001 (AlexNet, VGG, GoogLeNet, ResNet-18) and seed 003's Fashion-MNIST CNN.

Seed files: `shared/seeds/001_*.txt` ("图像分类: AlexNet、VGG、GoogLeNet、ResNet") and `003_*.txt`
(TensorFlow 2 Fashion-MNIST CNN). Each builder follows the seed's Keras code layer by layer (widths,
kernels, strides, padding, activations, dropout), so `imgcls summary NAME` shows the shapes and the
parameter counts of the seed's `model.summary()`. What differs, without changing a shape or a count:

- Keras 'same' padding puts an odd extra pixel at the bottom/right; here it is symmetric (k // 2),
  which gives the same output sizes.
- The final softmax is not part of the network: cross-entropy and `probabilities` apply it.
- Weights start as Keras starts them (Glorot-uniform kernels, zero biases: `keras_init`).
- Batch norm (ResNet) keeps Keras' epsilon 1e-3 but PyTorch's faster running-statistics update
  (Keras' momentum 0.99 would leave short CPU runs with unusable statistics). Keras counts the
  moving mean and variance as 2 non-trainable parameters per channel; PyTorch keeps them as buffers.

The extra keyword arguments (stem, widths, ...) keep each network's layout but adapt it to small
images for the `-fast` recipes; their defaults build the seed's network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.cnn import keras_init
from imgcls.models.registry import register_model


def conv_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1, same: bool = True) -> nn.Sequential:
    """Keras `Conv2D(out, kernel, strides, padding='same'|'valid', activation='relu')`."""
    padding = kernel // 2 if same else 0
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding), nn.ReLU(inplace=True))


def side_after(side: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Output side of a convolution or pooling window (PyTorch's floor rule)."""
    return (side + 2 * padding - kernel) // stride + 1


def check_side(model: str, side: int, image_size: int) -> int:
    """A Flatten head needs a feature map of at least 1x1: a clear error for too-small inputs."""
    if side < 1:
        raise ImgclsError(
            f"{model}: {image_size}x{image_size} inputs are too small for this network (its feature map "
            f"shrinks to nothing); use a larger image size or the recipe's -fast variant"
        )
    return side


# --------------------------------------------------------------------------- AlexNet

ALEXNET_WIDTHS = (96, 256, 384, 384, 256)


@register_model("alexnet", "Seed 001's AlexNet: Conv 96 11x11/4, 256 5x5, 384, 384, 256, Dense 4096 x2", 227, 67)
def alexnet(
    num_outputs: int = 10,
    in_channels: int = 1,
    image_size: int = 227,
    widths: Sequence[int] = ALEXNET_WIDTHS,
    hidden: int = 4096,
    dropout: float = 0.5,
    stem_kernel: int = 11,
    stem_stride: int = 4,
) -> nn.Module:
    """Seed 001, section 二 (`net = tf.keras.models.Sequential([...])`): Conv 96 11x11 stride 4 (valid),
    max-pool 3/2, Conv 256 5x5 same, max-pool 3/2, Conv 384, 384, 256 3x3 same, max-pool 3/2, Flatten,
    Dense 4096, Dropout 0.5, Dense 4096, Dropout 0.5, Dense classes. 227x227 inputs give the classic
    6x6x256 map. For 28-32 px images, `stem_kernel=3, stem_stride=1` keeps enough resolution."""
    w1, w2, w3, w4, w5 = widths
    features = nn.Sequential(
        conv_relu(in_channels, w1, stem_kernel, stem_stride, same=False),
        nn.MaxPool2d(3, 2),
        conv_relu(w1, w2, 5),
        nn.MaxPool2d(3, 2),
        conv_relu(w2, w3, 3),
        conv_relu(w3, w4, 3),
        conv_relu(w4, w5, 3),
        nn.MaxPool2d(3, 2),
    )
    side = side_after(image_size, stem_kernel, stem_stride)
    for _ in range(3):  # the three 3/2 max-pools
        side = side_after(side, 3, 2)
    side = check_side("alexnet", side, image_size)
    classifier = dense_head(w5 * side * side, hidden, dropout, num_outputs)
    return keras_init(nn.Sequential(features, classifier))


def dense_head(features: int, hidden: int, dropout: float, num_outputs: int) -> nn.Sequential:
    """Flatten, Dense hidden + ReLU, Dropout, Dense hidden + ReLU, Dropout, Dense outputs (AlexNet, VGG)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_outputs),
    )


# --------------------------------------------------------------------------- VGG

VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))  # (num_convs, num_filters) per block


def vgg_block(in_channels: int, num_convs: int, num_filters: int, batch_norm: bool = False) -> nn.Sequential:
    """Seed 001's `vgg_block(num_convs, num_filters)`: num_convs x Conv 3x3 same + ReLU, then max-pool 2/2."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, num_filters, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(num_filters, eps=1e-3))
        layers.append(nn.ReLU(inplace=True))
        in_channels = num_filters
    layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


@register_model("vgg", "Seed 001's VGG: vgg_block(num_convs, num_filters) per conv_arch entry, Dense 4096 x2", 224, 32)
def vgg(
    num_outputs: int = 10,
    in_channels: int = 1,
    image_size: int = 224,
    conv_arch: Sequence[Sequence[int]] = VGG11,
    hidden: int = 4096,
    dropout: float = 0.5,
    batch_norm: bool = False,
) -> nn.Module:
    """Seed 001, section 三 (`vgg(conv_arch)`): one `vgg_block` per (num_convs, num_filters) of `conv_arch`
    (VGG-11 by default), then Flatten, Dense 4096, Dropout 0.5, Dense 4096, Dropout 0.5, Dense classes.
    Each block halves the size: 224 -> 7. Narrower `conv_arch`/`hidden` (and `batch_norm`, as in
    torchvision's vgg11_bn) make the small, fast variant."""
    blocks = []
    channels = in_channels
    for num_convs, num_filters in conv_arch:
        blocks.append(vgg_block(channels, num_convs, num_filters, batch_norm))
        channels = num_filters
    side = check_side("vgg", image_size // 2 ** len(conv_arch), image_size)
    return keras_init(nn.Sequential(*blocks, dense_head(channels * side * side, hidden, dropout, num_outputs)))


# --------------------------------------------------------------------------- GoogLeNet


class Inception(nn.Module):
    """Seed 001's `Inception(c1, c2, c3, c4)`: four parallel paths concatenated on channels:
    1x1 conv (c1) | 1x1 (c2[0]) -> 3x3 (c2[1]) | 1x1 (c3[0]) -> 5x5 (c3[1]) | 3x3 max-pool -> 1x1 (c4)."""

    def __init__(self, in_channels: int, c1: int, c2: Sequence[int], c3: Sequence[int], c4: int):
        super().__init__()
        self.p1 = conv_relu(in_channels, c1, 1)
        self.p2 = nn.Sequential(conv_relu(in_channels, c2[0], 1), conv_relu(c2[0], c2[1], 3))
        self.p3 = nn.Sequential(conv_relu(in_channels, c3[0], 1), conv_relu(c3[0], c3[1], 5))
        self.p4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), conv_relu(in_channels, c4, 1))
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.p1(x), self.p2(x), self.p3(x), self.p4(x)], dim=1)


class AuxClassifier(nn.Module):
    """Seed 001's `aux_classifier(x, [128, 1024])`: average-pool 5/3 same, 1x1 conv 128 + ReLU, Flatten,
    Dense 1024 + ReLU, Dense classes. Keras' 'same' average ignores the padding: count_include_pad=False."""

    def __init__(self, in_channels: int, side: int, num_outputs: int, filters: int = 128, hidden: int = 1024):
        super().__init__()
        pooled = side_after(side, 5, 3, padding=2)
        self.body = nn.Sequential(
            nn.AvgPool2d(5, 3, padding=2, count_include_pad=False),
            conv_relu(in_channels, filters, 1, same=False),
            nn.Flatten(),
            nn.Linear(filters * pooled * pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# (c1, (c2 reduce, c2), (c3 reduce, c3), c4) of the seed's nine Inception blocks
B3 = ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64))
B4 = (
    (192, (96, 208), (16, 48), 64),
    (160, (112, 224), (24, 64), 64),
    (128, (128, 256), (24, 64), 64),
    (112, (144, 288), (32, 64), 64),
    (256, (160, 320), (32, 128), 128),
)
B5 = ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128))


class GoogLeNet(nn.Module):
    """Seed 001, section 四: b1 (Conv 64 7x7/2, max-pool 3/2), b2 (Conv 64 1x1, Conv 192 3x3, max-pool 3/2),
    b3 (2 Inception, max-pool), b4 (5 Inception, max-pool) with auxiliary classifiers after its first and
    fourth blocks, b5 (2 Inception, global average pool), Dense classes.

    In training mode `forward` returns `(main, aux1, aux2)` (the training loss adds 0.3 x each auxiliary
    loss); in eval mode only `main`, so evaluation, prediction and ONNX export see one output."""

    auxiliary_outputs = True  # `imgcls summary` shows the training graph, auxiliary heads included

    def __init__(
        self,
        num_outputs: int,
        in_channels: int,
        image_size: int,
        width: float = 1.0,
        stem_stride: int = 2,
        stem_pool: bool = True,
    ):
        super().__init__()

        def w(channels: int) -> int:
            return max(1, round(channels * width))

        def inceptions(plan, channels: int) -> tuple[list[Inception], int]:
            blocks = []
            for c1, c2, c3, c4 in plan:
                blocks.append(Inception(channels, w(c1), (w(c2[0]), w(c2[1])), (w(c3[0]), w(c3[1])), w(c4)))
                channels = blocks[-1].out_channels
            return blocks, channels

        pool = nn.MaxPool2d(3, 2, padding=1)  # Keras MaxPool2D(3, strides=2, padding='same')
        self.b1 = nn.Sequential(conv_relu(in_channels, w(64), 7, stem_stride), *([pool] if stem_pool else []))
        self.b2 = nn.Sequential(conv_relu(w(64), w(64), 1), conv_relu(w(64), w(192), 3), pool)
        b3, channels = inceptions(B3, w(192))
        self.b3 = nn.Sequential(*b3, pool)
        side = side_after(image_size, 7, stem_stride, 3)
        for _ in range(3 if stem_pool else 2):
            side = side_after(side, 3, 2, 1)
        b4, _ = inceptions(B4, channels)
        self.b4_1 = b4[0]
        self.aux1 = AuxClassifier(b4[0].out_channels, side, num_outputs)
        self.b4_2to4 = nn.Sequential(*b4[1:4])
        self.aux2 = AuxClassifier(b4[3].out_channels, side, num_outputs)
        self.b4_5 = nn.Sequential(b4[4], pool)
        b5, channels = inceptions(B5, b4[4].out_channels)
        self.b5 = nn.Sequential(*b5, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.b4_1(self.b3(self.b2(self.b1(x))))
        aux1 = self.aux1(x) if self.training else None
        x = self.b4_2to4(x)
        aux2 = self.aux2(x) if self.training else None
        main = self.fc(self.b5(self.b4_5(x)))
        return (main, aux1, aux2) if self.training else main


@register_model("googlenet", "Seed 001's GoogLeNet: Inception b1-b5, two auxiliary classifiers in training", 224, 1)
def googlenet(
    num_outputs: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    width: float = 1.0,
    stem_stride: int = 2,
    stem_pool: bool = True,
) -> nn.Module:
    """The seed's network at `width=1, stem_stride=2, stem_pool=True`; on 32 px images `stem_stride=1`
    starts the Inception blocks at 8x8 instead of 2x2, and `width` scales every channel count."""
    return keras_init(GoogLeNet(num_outputs, in_channels, image_size, width, stem_stride, stem_pool))


# --------------------------------------------------------------------------- ResNet-18


class Residual(nn.Module):
    """Seed 001's `Residual(num_channels, use_1x1conv, strides)`: Conv 3x3 (strides) -> BN -> ReLU ->
    Conv 3x3 -> BN, plus the input (through a 1x1 conv with the same stride when `use_1x1conv`), ReLU."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, num_channels, 3, strides, padding=1)
        self.conv2 = nn.Conv2d(num_channels, num_channels, 3, padding=1)
        self.conv3 = nn.Conv2d(in_channels, num_channels, 1, strides) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(num_channels, eps=1e-3)
        self.bn2 = nn.BatchNorm2d(num_channels, eps=1e-3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return self.relu(y + x)


def resnet_block(in_channels: int, num_channels: int, num_residuals: int, first_block: bool = False) -> nn.Sequential:
    """Seed 001's `ResnetBlock`: the first Residual of every block but the first halves the size and
    changes the width (1x1 conv shortcut, stride 2); the others keep both."""
    layers = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            layers.append(Residual(in_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            layers.append(Residual(in_channels, num_channels))
        in_channels = num_channels
    return nn.Sequential(*layers)


@register_model("resnet18", "Seed 001's ResNet([2,2,2,2]): Residual blocks, batch norm, global average pool", 224)
def resnet18(
    num_outputs: int = 10,
    in_channels: int = 1,
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: Sequence[int] = (2, 2, 2, 2),
    stem_kernel: int = 7,
    stem_stride: int = 2,
    stem_pool: bool = True,
) -> nn.Module:
    """Seed 001, section 五 (`ResNet([2,2,2,2])`): Conv 64 7x7/2 -> BN -> ReLU -> max-pool 3/2, four
    `ResnetBlock`s of 64/128/256/512 channels, global average pool, Dense classes.
    For 32 px images, `stem_kernel=3, stem_stride=1, stem_pool=False` keeps the full size in the first
    block, as CIFAR ResNets do; narrower `widths` (and fewer `blocks`) trade accuracy for speed."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], stem_kernel, stem_stride, padding=stem_kernel // 2),
        nn.BatchNorm2d(widths[0], eps=1e-3),
        nn.ReLU(inplace=True),
    ]
    if stem_pool:
        layers.append(nn.MaxPool2d(3, 2, padding=1))
    channels = widths[0]
    for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        layers.append(resnet_block(channels, width, count, first_block=index == 0))
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs)]
    return keras_init(nn.Sequential(*layers))


# --------------------------------------------------------------------------- Fashion-MNIST CNN


@register_model("fashion-cnn", "Seed 003's Fashion-MNIST CNN: Conv 64 3x3, pool, Conv 64 3x3, pool, Dense 128", 28, 10)
def fashion_cnn(
    num_outputs: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    widths: Sequence[int] = (64, 64),
    hidden: int = 128,
) -> nn.Module:
    """Seed 003 (`tf.keras.datasets.fashion_mnist`): Conv 64 3x3 valid + ReLU, max-pool 2, Conv 64 3x3
    valid + ReLU, max-pool 2, Flatten, Dense 128 + ReLU, Dense classes (softmax in the loss). 28 -> 26 ->
    13 -> 11 -> 5: a 5x5x64 map, 243,786 parameters for 10 classes."""
    side = image_size
    layers: list[nn.Module] = []
    channels = in_channels
    for width in widths:
        # max-pool before ReLU equals ReLU before max-pool (both monotone) and touches 4x fewer values
        layers += [nn.Conv2d(channels, width, 3), nn.MaxPool2d(2), nn.ReLU(inplace=True)]
        side = side_after(side, 3, 1) // 2
        channels = width
    side = check_side("fashion-cnn", side, image_size)
    layers += [
        nn.Flatten(),
        nn.Linear(channels * side * side, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_outputs),
    ]
    return keras_init(nn.Sequential(*layers))
