import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.layers import (
    Conv2dSame,
    ConvBNAct,
    DepthwiseSeparable,
    conv2d,
    fast_training_paths,
    make_activation,
    same_padding,
)


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


def _train_step(block: nn.Module, x: torch.Tensor, fast: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Output, input gradient and every parameter's gradient and buffer after one forward and backward."""
    x = x.clone().requires_grad_()
    with fast_training_paths(fast):
        out = block(x)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    state = {f"grad.{name}": p.grad.clone() for name, p in block.named_parameters()}
    state.update({f"buffer.{name}": b.clone() for name, b in block.named_buffers()})
    return out, x.grad, state


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "kernel", "stride", "groups", "size", "activation"),
    [
        (16, 24, 1, 1, 1, 1, "relu6"),  # pointwise over 1×1 maps: one image of N rows
        (16, 24, 1, 1, 1, 2, "relu6"),
        (16, 24, 1, 1, 1, 3, None),
        (16, 24, 1, 1, 4, 2, "relu"),  # grouped pointwise (ShuffleNet)
        (16, 24, 1, 1, 1, 5, "relu6"),  # too large a map: the module's own kernel
        (16, 16, 3, 1, 16, 1, "relu6"),  # depthwise over a 1×1 map: the centre tap
        (16, 16, 3, 2, 16, 1, None),
        (16, 16, 3, 2, 16, 4, "relu"),
    ],
)
@pytest.mark.parametrize("channels_last", [True, False])
def test_training_fast_paths_compute_what_the_modules_do(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int,
    groups: int,
    size: int,
    activation: str | None,
    channels_last: bool,
) -> None:
    torch.manual_seed(0)
    reference = ConvBNAct(in_ch, out_ch, kernel_size=kernel, stride=stride, groups=groups, activation=activation)
    with torch.no_grad():  # a wide output, so that ReLU6 clips at both ends
        reference.bn.weight.uniform_(2, 5)
    fast = ConvBNAct(in_ch, out_ch, kernel_size=kernel, stride=stride, groups=groups, activation=activation)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(6, in_ch, size, size) * 3
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    out_ref, grad_ref, state_ref = _train_step(reference, x, fast=False)
    out_fast, grad_fast, state_fast = _train_step(fast, x, fast=True)
    assert out_fast.shape == out_ref.shape
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-4, atol=1e-5)
    assert state_fast.keys() == state_ref.keys()
    for key in state_ref:
        torch.testing.assert_close(state_fast[key], state_ref[key], rtol=1e-4, atol=1e-5, msg=key)
    assert state_fast["buffer.bn.num_batches_tracked"].item() == 1
    if activation == "relu6":  # the clip is applied: some outputs sit at 0 and at 6
        assert (out_fast == 6).any() and (out_fast == 0).any()


def test_fast_paths_leave_eval_frozen_norm_and_traced_models_to_the_modules() -> None:
    block = ConvBNAct(8, 8, kernel_size=1)
    x = torch.randn(4, 8, 2, 2)
    block.eval()
    torch.testing.assert_close(block(x), nn.Sequential.forward(block, x))
    block.train()
    block.bn.eval()  # frozen BatchNorm: its running statistics are used and stay as they are
    before = block.bn.running_mean.clone()
    torch.testing.assert_close(block(x), nn.Sequential.forward(block, x))
    torch.testing.assert_close(block.bn.running_mean, before)
    block.bn.train()
    program = torch.export.export(block, (x,))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("batch_norm" in op for op in ops) and not any("autograd" in op for op in ops)


def test_fast_batch_norm_act_refuses_double_backward() -> None:
    block = ConvBNAct(4, 4, kernel_size=1)
    x = torch.randn(3, 4, 2, 2, requires_grad=True)
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(block(x).sum(), x, create_graph=True)
    with fast_training_paths(False):
        (grad,) = torch.autograd.grad(block(x).sum(), x, create_graph=True)
    grad.pow(2).sum().backward()
    assert block.bn.weight.grad is not None


def test_a_model_trains_alike_with_and_without_the_fast_paths() -> None:
    from mobilenets import create_model

    torch.manual_seed(0)
    model = create_model("mobilenet_v1_0.5_224", num_classes=10, in_chans=1, resolution=32, dropout=0.0)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(8, 1, 32, 32).to(memory_format=torch.channels_last)
    grads = []
    for fast in (False, True):
        model.zero_grad()
        with fast_training_paths(fast):
            loss = F.cross_entropy(model(x), torch.arange(8))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    # Summation orders differ (one image of N rows against N images): rounding, no more.
    assert (grads[1] - grads[0]).norm() < 1e-4 * grads[0].norm()
