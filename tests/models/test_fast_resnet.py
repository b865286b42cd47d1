"""fast-resnet: residual blocks that start as the identity, sizes whose halving is odd, its options."""

from __future__ import annotations

import pytest
import torch

from imgcls.models.cnn import FastBlock, fast_resnet


def test_a_block_starts_as_the_identity() -> None:
    torch.manual_seed(0)
    block = FastBlock(16, 16, stride=1, activation="relu").eval()
    x = torch.randn(2, 16, 9, 9).relu()
    assert torch.equal(block(x), x)


def test_a_downsampling_block_starts_as_its_shortcut() -> None:
    torch.manual_seed(0)
    block = FastBlock(8, 16, stride=2, activation="gelu").eval()
    x = torch.randn(1, 8, 7, 7)
    torch.testing.assert_close(block(x), torch.nn.functional.gelu(block.shortcut(x)))
    assert block(x).shape == (1, 16, 4, 4)  # 7 px: both paths round up


@pytest.mark.parametrize("size", [96, 112, 128, 150])
def test_sizes_whose_halving_is_odd(size: int) -> None:
    net = fast_resnet(num_outputs=2, widths=(8, 16, 24, 32), blocks=(1, 2, 1, 1)).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, size, size)).shape == (1, 2)


def test_one_number_of_blocks_per_stage() -> None:
    with pytest.raises(ValueError, match="one number of blocks per stage"):
        fast_resnet(widths=(8, 16), blocks=(1,))
