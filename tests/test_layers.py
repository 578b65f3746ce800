import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.layers import Conv2dSame, ConvBNAct, DepthwiseSeparable, conv2d, make_activation, same_padding


# TF "SAME": output ceil(n / s); total padding (out - 1) * s + k - n, the odd pixel after.
@pytest.mark.parametrize(
    ("size", "stride", "expected"),
    [(224, 2, (0, 1)), (112, 2, (0, 1)), (123, 2, (1, 1)), (7, 2, (1, 1)), (14, 1, (1, 1)), (150, 2, (0, 1))],
)
def test_same_padding_amounts(size: int, stride: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, 3, stride=stride) == expected


@pytest.mark.parametrize("size", [224, 123, 150, 32, 33])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [1, 8])
def test_same_conv_matches_explicit_pad_then_valid_conv(size: int, stride: int, groups: int) -> None:
    conv = conv2d(8, 16, kernel_size=3, stride=stride, groups=groups, padding="same")
    x = torch.randn(2, 8, size, size + 1)

    # Independent reference: TF's rule written out for a 3×3 kernel, then a valid convolution.
    def pads(n: int) -> tuple[int, int]:
        if stride == 1:
            return 1, 1
        return (0, 1) if n % 2 == 0 else (1, 1)

    top, bottom = pads(size)
    left, right = pads(size + 1)
    ref = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, None, stride, 0, 1, groups)
    out = conv(x)
    assert out.shape[-2:] == (-(-size // stride), -(-(size + 1) // stride))
    torch.testing.assert_close(out, ref)


def test_same_and_symmetric_differ_only_on_even_stride2_inputs() -> None:
    same = conv2d(3, 4, kernel_size=3, stride=2, padding="same")
    sym = conv2d(3, 4, kernel_size=3, stride=2, padding="symmetric")
    sym.weight.data.copy_(same.weight.data)
    assert isinstance(same, Conv2dSame) and not isinstance(sym, Conv2dSame)
    odd = torch.randn(1, 3, 33, 33)
    even = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(same(odd), sym(odd))
    assert not torch.allclose(same(even), sym(even))


def test_same_padding_with_dilation() -> None:
    conv = conv2d(4, 4, kernel_size=3, stride=2, dilation=2, padding="same")
    x = torch.randn(1, 4, 20, 20)
    ref = F.conv2d(F.pad(x, (1, 2, 1, 2)), conv.weight, None, 2, 0, 2)
    torch.testing.assert_close(conv(x), ref)


def test_bad_padding_and_activation_raise() -> None:
    with pytest.raises(ValueError, match="padding"):
        conv2d(3, 3, kernel_size=3, padding="valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="activation"):
        make_activation("gelu")


def test_conv_bn_act_structure() -> None:
    block = ConvBNAct(3, 8, kernel_size=3, stride=2, activation="relu")
    assert isinstance(block.act, nn.ReLU)
    assert block.conv.bias is None
    linear = ConvBNAct(8, 8, kernel_size=1, activation=None)
    assert isinstance(linear.act, nn.Identity)
    assert block(torch.randn(1, 3, 15, 15)).shape == (1, 8, 8, 8)


def test_depthwise_separable_structure() -> None:
    block = DepthwiseSeparable(16, 32, stride=2)
    assert block.dw.conv.groups == 16 and block.dw.conv.kernel_size == (3, 3)
    assert block.pw.conv.kernel_size == (1, 1) and block.pw.conv.out_channels == 32
    assert isinstance(block.dw.act, nn.ReLU6) and isinstance(block.pw.act, nn.ReLU6)
    assert block(torch.randn(2, 16, 28, 28)).shape == (2, 32, 14, 14)
