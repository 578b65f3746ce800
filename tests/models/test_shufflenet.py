from functools import cache

import onnx
import onnxruntime as ort
import pytest
import torch

from mobilenets import CostReport, FeatureExtractor, count_cost, create_model, list_models
from mobilenets.layers import ChannelShuffle, ShuffleUnit, channel_shuffle
from mobilenets.models.shufflenet import GROUPS
from mobilenets.published import published_results

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only wait on each other

M = 1e6


@cache
def cost(name: str) -> CostReport:
    return count_cost(create_model(name))


def body_mult_adds(report: CostReport) -> int:
    """Mult-adds without the fully connected classifier."""
    return report.mult_adds - report.by_type["Fully Connected"]["mult_adds"]


def units(model: torch.nn.Module) -> list[ShuffleUnit]:
    return [m for m in model.modules() if isinstance(m, ShuffleUnit)]


def test_channel_shuffle_interleaves_groups() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1, 1).expand(2, 6, 3, 4)
    out = channel_shuffle(x, 3)
    assert out[0, :, 0, 0].tolist() == [0, 2, 4, 1, 3, 5]
    assert out.shape == x.shape
    torch.testing.assert_close(channel_shuffle(out, 2), x)  # shuffling by c / g undoes it


def test_channel_shuffle_exports_to_onnx_with_standard_ops(tmp_path) -> None:
    module = ChannelShuffle(3).eval()
    x = torch.randn(2, 12, 5, 7)
    path = tmp_path / "shuffle.onnx"
    torch.onnx.export(module, (x,), path)
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert ops <= {"Reshape", "Transpose", "Constant"} and "Transpose" in ops
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), module(x))


@pytest.mark.parametrize("groups", GROUPS)
def test_units_follow_the_paper(groups: int) -> None:
    model = create_model("shufflenet_g1_1.0", groups=groups)
    layers = units(model)
    assert len(layers) == 4 + 8 + 4
    first, rest = layers[0], layers[1:]
    # The first 1×1 of stage 2 is not grouped; every other 1×1 is, and is followed by the shuffle.
    assert first.gconv1.conv.groups == 1 and first.gconv2.conv.groups == groups
    assert isinstance(first.shuffle, torch.nn.Identity)
    assert all(u.gconv1.conv.groups == u.gconv2.conv.groups == u.shuffle.groups == groups for u in rest)
    for u in layers:
        assert isinstance(u.dw.act, torch.nn.Identity) and u.dw.conv.groups == u.dw.conv.in_channels
        assert isinstance(u.gconv2.act, torch.nn.Identity) and isinstance(u.act, torch.nn.ReLU)
        assert u.gconv1.conv.out_channels * 4 == u.gconv2.conv.out_channels + (
            u.gconv1.conv.in_channels if u.shortcut is not None else 0
        )
    downsampling = [u for u in layers if u.shortcut is not None]
    assert len(downsampling) == 3 and all(u.dw.conv.stride == (2, 2) for u in downsampling)
    assert all(isinstance(u.shortcut, torch.nn.AvgPool2d) for u in downsampling)


def test_downsampling_unit_concatenates_the_pooled_input() -> None:
    unit = ShuffleUnit(24, 240, groups=3, stride=2, downsample=True, group_first=False).eval()
    torch.nn.init.zeros_(unit.gconv2.bn.weight)
    torch.nn.init.zeros_(unit.gconv2.bn.bias)
    x = torch.rand(1, 24, 9, 9)  # non-negative: the final ReLU keeps the pooled input as is
    with torch.no_grad():
        out = unit(x)
    assert out.shape == (1, 240, 5, 5)
    torch.testing.assert_close(out[:, :24], torch.nn.functional.avg_pool2d(x, 3, 2, 1))
    assert not out[:, 24:].any()


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("scale", [0.25, 0.5, 0.3, 1.5, 2.0])
def test_scaled_channels_divide_into_groups(groups: int, scale: float) -> None:
    model = create_model("shufflenet_g1_1.0", groups=groups, width_mult=scale, num_classes=0)
    for u in units(model):
        assert u.gconv1.conv.out_channels % groups == 0 and u.gconv2.conv.out_channels % groups == 0
    stages = [info.channels for info in model.feature_info if info.name.startswith("stage")]
    assert all(c % (4 * groups) == 0 for c in stages)
    assert model.features.conv1.conv.out_channels % groups == 0


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("shufflenet_g3_0.5", [12, 120, 240, 480]),
        ("shufflenet_g3_1.5", [24, 360, 720, 1440]),
        ("shufflenet_g3_2.0", [48, 480, 960, 1920]),
        ("shufflenet_g8_0.25", [8, 96, 192, 384]),
        ("shufflenet_g2_1.0", [24, 200, 400, 800]),
    ],
)
def test_scale_rule(name: str, channels: list[int]) -> None:
    model = create_model(name)
    assert [info.channels for info in model.feature_info if info.name != "maxpool"] == channels


@pytest.mark.parametrize("resolution", [123, 32])
@pytest.mark.parametrize("output_stride", [32, 8])
def test_shapes_and_features(resolution: int, output_stride: int) -> None:
    model = create_model("shufflenet_g8_0.25", output_stride=output_stride, num_classes=5).eval()
    extractor = FeatureExtractor(model)
    # Dilated stages stay at reduction 8: the last of them is that reduction's end point.
    expected = {32: ["conv1", "maxpool", "stage2", "stage3", "stage4"], 8: ["conv1", "maxpool", "stage4"]}
    assert [i.name for i in extractor.info] == expected[output_stride]
    x = torch.randn(1, 3, resolution, resolution)
    for info, fmap in zip(extractor.info, extractor(x).values(), strict=True):
        size = -(-resolution // info.reduction)
        assert fmap.shape == (1, info.channels, size, size)
    assert model(x).shape == (1, 5)


def test_names_and_bad_groups() -> None:
    assert {f"shufflenet_g{g}_1.0" for g in GROUPS} <= set(list_models("shufflenet_g*"))
    assert len(list_models("shufflenet_g*")) == 13
    assert create_model("shufflenet_g8_1.5").groups == 8
    with pytest.raises(ValueError, match=r"groups must be one of \[1, 2, 3, 4, 8\]"):
        create_model("shufflenet_g3_1.0", groups=5)


# --- Counted costs against the paper (tables.md section 3) -----------------------------------------


@pytest.mark.parametrize("groups", GROUPS)
def test_table_1_complexity_excludes_the_classifier(groups: int) -> None:
    # Table 1's 143 / 140 / 137 / 133 / 137 M are the body without the FC layer: with it, g = 2, 4 and
    # 8 would round to 141 / 134 / 138.
    name = f"shufflenet_g{groups}_1.0"
    published = published_results()[name].mult_adds_m
    report = cost(name)
    assert round(body_mult_adds(report) / M) == published
    assert (round(report.mult_adds / M) == published) == (groups in (1, 3))


@pytest.mark.parametrize(
    "name", ["shufflenet_g3_0.5", "shufflenet_g3_1.5", "shufflenet_g3_2.0", "shufflenet_g8_1.5", "shufflenet_g8_2.0"]
)
def test_scaled_models_complexity_includes_the_classifier(name: str) -> None:
    # Tables 5 and 8 (and the released g = 8 models) count the FC layer: 38 / 292 / 524 / 290 / 522 M.
    assert round(cost(name).mult_adds / M) == published_results()[name].mult_adds_m


@pytest.mark.parametrize("name", ["shufflenet_g3_0.25", "shufflenet_g8_0.25", "shufflenet_g8_0.5"])
def test_table_2_complexity_levels(name: str) -> None:
    # Table 2 prints one complexity level per row (13 M at 0.25×, 38 M at 0.5×) for all five g;
    # the models lie within 20 % of it.
    published = published_results()[name].mult_adds_m
    assert abs(cost(name).mult_adds / M - published) < 0.2 * published
