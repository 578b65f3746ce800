from functools import cache

import pytest
import torch
import torchvision

from mobilenets import CostReport, FeatureExtractor, count_cost, create_model, list_models
from mobilenets.layers import InvertedResidual
from mobilenets.models.mobilenet_v2 import round_channels
from mobilenets.published import published_results

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only wait on each other

M = 1e6


def blocks(model: torch.nn.Module) -> list[InvertedResidual]:
    return [m for m in model.modules() if isinstance(m, InvertedResidual)]


@pytest.mark.parametrize(
    ("channels", "expected"),
    [(32, 32), (5.6, 8), (8.4, 8), (11.2, 16), (22.4, 24), (33.6, 32), (56.0, 56), (12.0, 16), (1792.0, 1792)],
)
def test_round_channels(channels: float, expected: int) -> None:
    assert round_channels(channels) == expected


def test_round_channels_rule() -> None:
    for tenths in range(1, 4000):
        value = tenths / 10
        rounded = round_channels(value)
        assert rounded % 8 == 0 and rounded >= 8 and rounded >= 0.9 * value
        assert rounded == 8 or abs(rounded - value) <= 8  # a nearest multiple, or the next one up


@pytest.mark.parametrize("width_mult", [1.4, 1.3, 1.0, 0.75, 0.6, 0.5, 0.35])
def test_channels_match_torchvision(width_mult: float) -> None:
    ours = create_model("mobilenet_v2_1.0_224", width_mult=width_mult)
    theirs = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult)
    assert [t.shape for t in ours.state_dict().values()] == [t.shape for t in theirs.state_dict().values()]


@pytest.mark.parametrize(("width_mult", "last"), [(0.35, 1280), (0.5, 1280), (0.75, 1280), (1.0, 1280), (1.4, 1792)])
def test_last_conv_kept_below_one(width_mult: float, last: int) -> None:
    model = create_model("mobilenet_v2_1.0_224", width_mult=width_mult, num_classes=0)
    assert model.num_features == last == model.features.conv18.conv.out_channels


def test_bottlenecks_follow_table_2() -> None:
    model = create_model("mobilenet_v2_1.0_224")
    layers = blocks(model)
    assert len(layers) == 17
    assert [b.dw.conv.stride[0] for b in layers] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert [b.project.conv.out_channels for b in layers] == [16, 24, 24] + [32] * 3 + [64] * 4 + [96] * 3 + [
        160
    ] * 3 + [320]
    # t = 1 for the first bottleneck: no expansion; t = 6 for the rest.
    assert not hasattr(layers[0], "expand")
    assert all(b.expand.conv.out_channels == 6 * b.expand.conv.in_channels for b in layers[1:])
    # Linear bottleneck: no activation after the projection; ReLU6 after expansion and depthwise.
    assert all(isinstance(b.project.act, torch.nn.Identity) for b in layers)
    assert all(isinstance(b.dw.act, torch.nn.ReLU6) for b in layers)


def test_residual_only_with_stride_1_and_equal_channels() -> None:
    model = create_model("mobilenet_v2_1.0_224").eval()
    layers = blocks(model)
    for b in layers:
        in_channels = b[0].conv.in_channels  # the expansion, or the depthwise conv for t = 1
        assert b.residual == (b.dw.conv.stride == (1, 1) and b.project.conv.out_channels == in_channels)
    assert sum(b.residual for b in layers) == 10
    # With the projection zeroed, a residual block is the identity and the others output zeros.
    for b in layers:
        torch.nn.init.zeros_(b.project.bn.weight)
        torch.nn.init.zeros_(b.project.bn.bias)
        x = torch.randn(1, b[0].conv.in_channels, 8, 8)
        with torch.no_grad():
            out = b(x)
        torch.testing.assert_close(out, x if b.residual else torch.zeros_like(out))


@pytest.mark.parametrize("resolution", [123, 96, 32])
@pytest.mark.parametrize("padding", ["symmetric", "same"])
def test_shapes_at_every_stride(resolution: int, padding: str) -> None:
    model = create_model("mobilenet_v2_0.35_224", padding=padding, num_classes=7).eval()
    extractor = FeatureExtractor(model)
    x = torch.randn(1, 3, resolution, resolution + 1)
    maps = extractor(x)
    assert extractor.reductions == [2, 4, 8, 16, 32]
    for info, fmap in zip(extractor.info, maps.values(), strict=True):
        r = info.reduction
        assert fmap.shape == (1, info.channels, -(-resolution // r), -(-(resolution + 1) // r))
    assert model(x).shape == (1, 7)


def test_feature_info() -> None:
    model = create_model("mobilenet_v2_1.0_224")
    assert [(f.name, f.channels, f.reduction) for f in model.feature_info] == [
        ("block1", 16, 2),
        ("block3", 24, 4),
        ("block6", 32, 8),
        ("block13", 96, 16),
        ("conv18", 1280, 32),
    ]


@pytest.mark.parametrize(("output_stride", "final"), [(16, 14), (8, 28)])
def test_output_stride_by_dilation(output_stride: int, final: int) -> None:
    model = create_model("mobilenet_v2_0.35_224", output_stride=output_stride, num_classes=0).eval()
    assert model.forward_features(torch.randn(1, 3, 224, 224)).shape[-1] == final
    assert max(f.reduction for f in model.feature_info) == output_stride
    dilations = [m.dilation[0] for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(dilations) == 32 // output_stride
    model.load_state_dict(create_model("mobilenet_v2_0.35_224", num_classes=0).state_dict())


def test_names_and_arguments() -> None:
    assert len(list_models("mobilenet_v2_*")) == 22
    model = create_model("mobilenet_v2_0.75_160", in_chans=1, activation="relu", num_classes=10).eval()
    assert model.width_mult == 0.75 and model.meta.resolution == 160
    assert isinstance(blocks(model)[0].dw.act, torch.nn.ReLU)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="width_mult"):
        create_model("mobilenet_v2_1.0_224", width_mult=0)


# --- Counted costs against slim's checkpoint table (tables.md section 2) ---------------------------


@cache
def cost(name: str) -> CostReport:
    return count_cost(create_model(name))


def slim_grid() -> list[str]:
    return [name for name in published_results() if name.startswith("mobilenet_v2_")]


def test_slim_grid_is_complete() -> None:
    assert sorted(slim_grid()) == list_models("mobilenet_v2_*")


@pytest.mark.parametrize("name", slim_grid())
def test_slim_grid(name: str) -> None:
    published = published_results()[name]
    report = cost(name)
    # Slim prints mult-adds truncated to whole millions (300.77 M is printed 300, 153.94 M is 153),
    # and parameters without BN (weights and FC bias) to two decimals.
    assert int(report.mult_adds / M) == published.mult_adds_m
    assert round(report.params / M, 2) == published.params_m


def test_slim_listing_details() -> None:
    # tables.md: 1.0/224 is 300.77 M mult-adds and 3,470,760 params without BN, 3,504,872 with
    # BN γ and β (torchvision's num_params); 1.0 at 160 and 96: 154.1 M and 56.3 M.
    report = cost("mobilenet_v2_1.0_224")
    assert round(report.mult_adds / M, 2) == 300.77
    assert report.params == 3_470_760 and report.trainable_params == 3_504_872
    for name, mult_adds in (("1.0_160", 154.1), ("1.0_96", 56.3), ("0.75_224", 209.1), ("0.5_224", 97.1)):
        assert round(cost(f"mobilenet_v2_{name}").mult_adds / M, 1) == mult_adds
    assert round(cost("mobilenet_v2_0.35_224").mult_adds / M, 1) == 59.3


def test_paper_table_4_disagrees_for_1_4() -> None:
    # The paper's Table 4 prints 6.9 M params and 585 M MAdds for MobileNetV2 (1.4); counting (and
    # slim's 6.06 M / 582 M) give 6.06 M and 582.2 M. For 1.0 its 3.4 M / 300 M agree.
    report = cost("mobilenet_v2_1.4_224")
    assert abs(report.params / M - 6.9) > 0.8 and abs(report.mult_adds / M - 585) > 2
    report = cost("mobilenet_v2_1.0_224")
    assert int(report.params / 1e5) / 10 == 3.4 and round(report.mult_adds / M) in (300, 301)
