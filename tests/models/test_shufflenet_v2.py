import pytest
import torch

from mobilenets import FeatureExtractor, count_cost, create_model, list_models
from mobilenets.layers import ShuffleV2Unit
from mobilenets.models.shufflenet_v2 import SHUFFLENET_V2, WIDTHS
from mobilenets.published import published_results

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only wait on each other

M = 1e6

# tables.md section 4: parameters with BN γ and β, exactly torchvision's num_params, and the FLOPs
# that counting gives (torchvision's _ops: 0.04 / 0.145 / 0.296 / 0.583 G).
TORCHVISION_PARAMS = {"0.5": 1_366_792, "1.0": 2_278_604, "1.5": 3_503_624, "2.0": 7_393_996}
COUNTED_MFLOPS = {"0.5": 40.5, "1.0": 144.9, "1.5": 295.8, "2.0": 583.3}


def units(model: torch.nn.Module) -> list[ShuffleV2Unit]:
    return [m for m in model.modules() if isinstance(m, ShuffleV2Unit)]


@pytest.mark.parametrize("width", ["0.5", "1.0", "1.5", "2.0"])
def test_params_and_flops(width: str) -> None:
    name = f"shufflenet_v2_{width}"
    report = count_cost(create_model(name))
    assert report.trainable_params == TORCHVISION_PARAMS[width]
    assert round(report.mult_adds / M, 1) == COUNTED_MFLOPS[width]
    # The paper's Tables 5 and 8 print 41 / 146 / 299 / 591 M: 0.5 to 8 M above any count (with the
    # FC layer or without); we match the count, which is also torchvision's. Its weights, 1.4 / 2.3 /
    # 3.5 / 7.4 M, are the parameters with BN to one decimal.
    published = published_results()[name]
    assert 0.4 < published.mult_adds_m - report.mult_adds / M < 8
    assert round(report.trainable_params / M, 1) == published.params_m


def test_table_5_channels() -> None:
    for column, width in enumerate(WIDTHS):
        model = create_model("shufflenet_v2_1.0", width_mult=width, num_classes=0)
        # Stage 4 and conv5 share reduction 32; conv5, the last, is its end point.
        expected = [(row.layer, row.channels[column]) for row in SHUFFLENET_V2 if row.layer != "stage4"]
        assert [(i.name, i.channels) for i in model.feature_info] == expected
        assert model.num_features == (2048 if width == 2.0 else 1024)


def test_basic_unit_keeps_half_and_shuffles() -> None:
    unit = ShuffleV2Unit(116, 116).eval()
    x = torch.randn(2, 116, 7, 7)
    with torch.no_grad():
        out = unit(x)
    assert out.shape == x.shape
    # Concatenate (kept half, branch) then shuffle with 2 groups: the kept half lands on even channels.
    torch.testing.assert_close(out[:, 0::2], x[:, :58])
    assert not torch.allclose(out[:, 1::2], x[:, 58:])


def test_downsampling_unit_strides_both_branches() -> None:
    model = create_model("shufflenet_v2_1.0")
    layers = units(model)
    assert len(layers) == 16
    down = [u for u in layers if u.shortcut is not None]
    assert len(down) == 3
    for u in down:
        assert u.shortcut.dw.conv.stride == u.branch.dw.conv.stride == (2, 2)
        assert u.shortcut.pw.conv.out_channels == u.branch.pw2.conv.out_channels == u.branch.pw1.conv.out_channels
    # No group convolution but the depthwise ones; no activation after a depthwise conv.
    for u in layers:
        assert u.branch.pw1.conv.groups == u.branch.pw2.conv.groups == 1
        assert isinstance(u.branch.dw.act, torch.nn.Identity)
    x = torch.randn(1, 24, 15, 15)
    assert down[0](x).shape == (1, 116, 8, 8)


@pytest.mark.parametrize("resolution", [123, 32])
@pytest.mark.parametrize("output_stride", [32, 16])
def test_shapes_and_features(resolution: int, output_stride: int) -> None:
    model = create_model("shufflenet_v2_0.5", output_stride=output_stride, num_classes=3).eval()
    extractor = FeatureExtractor(model)
    assert extractor.reductions == [2, 4, 8, 16, 32][: {32: 5, 16: 4}[output_stride]]
    assert extractor.info[-1].name == "conv5"
    x = torch.randn(1, 3, resolution, resolution)
    for info, fmap in zip(extractor.info, extractor(x).values(), strict=True):
        size = -(-resolution // info.reduction)
        assert fmap.shape == (1, info.channels, size, size)
    assert model(x).shape == (1, 3)


def test_names_and_bad_width() -> None:
    assert list_models("shufflenet_v2_*") == [f"shufflenet_v2_{w}" for w in ("0.5", "1.0", "1.5", "2.0")]
    with pytest.raises(ValueError, match=r"width_mult must be one of \[0.5, 1.0, 1.5, 2.0\]"):
        create_model("shufflenet_v2_1.0", width_mult=0.75)
