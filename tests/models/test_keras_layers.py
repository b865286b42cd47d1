"""Keras layer semantics in PyTorch: TF 'same' conv padding and the HWIO kernel layout against a numpy
reference of tf.nn.conv2d, 'same' average pooling over valid pixels only, and Keras BatchNormalization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgcls.models.keras import (
    KerasBatchNorm2d,
    KerasConv2d,
    create_keras_backbone,
    hwio_to_oihw,
    tf_same_padding,
)

# ----------------------------------------------------------------------------- numpy references


def tf_conv2d_reference(x: np.ndarray, kernel: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """tf.nn.conv2d by loops: x (H, W, Cin), kernel HWIO (kh, kw, Cin, Cout), TF 'same'/'valid' padding."""
    h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    if padding == "same":
        out_h, out_w = -(-h // stride), -(-w // stride)
        pad_h = max((out_h - 1) * stride + kh - h, 0)
        pad_w = max((out_w - 1) * stride + kw - w, 0)
        top, left = pad_h // 2, pad_w // 2  # the odd pixel goes to the bottom / right
    else:
        out_h, out_w = (h - kh) // stride + 1, (w - kw) // stride + 1
        top = left = 0
    out = np.zeros((out_h, out_w, cout))
    for i in range(out_h):
        for j in range(out_w):
            for di in range(kh):
                for dj in range(kw):
                    r, c = i * stride + di - top, j * stride + dj - left
                    if 0 <= r < h and 0 <= c < w:
                        out[i, j] += x[r, c] @ kernel[di, dj]
    return out


def to_nchw(x_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x_hwc.transpose(2, 0, 1)))[None].float()


@pytest.mark.parametrize(("size", "stride"), [(5, 1), (5, 2), (6, 2), (6, 1)])
def test_conv_hwio_kernel_and_tf_same_padding_match_numpy(size: int, stride: int) -> None:
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((size, size, 2))
    kernel = rng.standard_normal((3, 3, 2, 1))  # HWIO, as in a Keras .h5
    conv = KerasConv2d(2, 1, 3, stride=stride, padding="same", bias=False)
    with torch.no_grad():
        conv.weight.copy_(hwio_to_oihw(kernel.astype(np.float32)))
        out = conv(to_nchw(x))[0, 0].double().numpy()
    expected = tf_conv2d_reference(x, kernel, stride, "same")[..., 0]
    assert out.shape == expected.shape == (-(-size // stride),) * 2
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if size == 6 and stride == 2:  # even input, stride 2: TF pads 0 top/left, 1 bottom/right
        assert tf_same_padding((6, 6), (3, 3), (2, 2)) == (0, 1, 0, 1)
        symmetric = (
            torch.nn.functional.conv2d(to_nchw(x), conv.weight, stride=2, padding=1)[0, 0].detach().double().numpy()
        )
        assert not np.allclose(symmetric, expected, atol=1e-3)  # PyTorch's own padding would be wrong here


def test_conv_multi_channel_kernel_layout() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4, 2))
    kernel = rng.standard_normal((3, 2, 2, 3))  # non-square kernel, 2 in, 3 out
    conv = KerasConv2d(2, 3, (3, 2), padding="valid", bias=False)
    with torch.no_grad():
        conv.weight.copy_(hwio_to_oihw(kernel.astype(np.float32)))
        out = conv(to_nchw(x))[0].double().numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(out, tf_conv2d_reference(x, kernel, 1, "valid"), rtol=1e-5, atol=1e-5)


def test_inception_average_pool_same_excludes_padding() -> None:
    model, _ = create_keras_backbone("inception_v3", cut="mixed0")
    pool = model.get_layer("average_pooling2d")  # mixed0's branch_pool: AveragePooling2D(3, 1, 'same')
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    out = pool(x)[0].numpy()
    xn = x[0].numpy()
    reference = np.zeros_like(xn)
    for i in range(5):
        for j in range(5):
            reference[:, i, j] = xn[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(out, reference, rtol=1e-12)
    # corner: mean of the 4 real pixels, not their sum / 9
    np.testing.assert_allclose(out[:, 0, 0], xn[:, :2, :2].mean(axis=(1, 2)))
    assert not np.allclose(out[:, 0, 0], xn[:, :2, :2].sum(axis=(1, 2)) / 9)


def test_batchnorm_keras_semantics() -> None:
    bn = KerasBatchNorm2d(3, eps=1e-3, scale=False).eval()
    assert bn.weight is None and [n for n, _ in bn.named_parameters()] == ["bias"]
    assert bn.momentum == pytest.approx(0.01)  # Keras momentum 0.99
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([0.0, 4.0, 0.25]))
    x = torch.randn(2, 3, 2, 2, dtype=torch.float32)
    mean, var, beta = (t.view(1, 3, 1, 1) for t in (bn.running_mean, bn.running_var, bn.bias))
    torch.testing.assert_close(bn(x), (x - mean) / torch.sqrt(var + 1e-3) + beta)
