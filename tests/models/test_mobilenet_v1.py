import pytest
import torch

from mobilenets import FeatureExtractor, create_model
from mobilenets.models.mobilenet_v1 import (
    CONV_MOBILENET,
    MOBILENET_V1,
    SHALLOW_MOBILENET,
    MobileNetV1,
    scale_channels,
)


def test_table_reads_like_the_paper() -> None:
    # 1 full conv + 13 depthwise separable layers = 28 layers counting dw and pw separately.
    assert [row.kind for row in MOBILENET_V1].count("ds") == 13
    assert 1 + 2 * 13 + 1 == 28  # + the FC layer
    assert [row.stride for row in MOBILENET_V1] == [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert [row.out_channels for row in MOBILENET_V1] == [32, 64, 128, 128, 256, 256, 512] + [512] * 5 + [1024, 1024]
    assert all(row.kind == "conv" for row in CONV_MOBILENET)
    assert len(SHALLOW_MOBILENET) == len(MOBILENET_V1) - 5


@pytest.mark.parametrize(
    ("width_mult", "expected"),
    [
        (1.0, [32, 64, 128, 256, 512, 1024]),
        (0.75, [24, 48, 96, 192, 384, 768]),
        (0.5, [16, 32, 64, 128, 256, 512]),
        (0.25, [8, 16, 32, 64, 128, 256]),
        (0.1, [8, 8, 12, 25, 51, 102]),
    ],
)
def test_channel_rounding_matches_released_models(width_mult: float, expected: list[int]) -> None:
    assert [scale_channels(c, width_mult) for c in (32, 64, 128, 256, 512, 1024)] == expected


def test_last_depthwise_layer_has_stride_1() -> None:
    model = MobileNetV1()
    assert model.features.block13.dw.conv.stride == (1, 1)
    assert model.features.block12.dw.conv.stride == (2, 2)


@pytest.mark.parametrize("width_mult", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("resolution", [224, 160, 123, 150, 32])
@pytest.mark.parametrize("padding", ["symmetric", "same"])
def test_shapes_at_every_stride(width_mult: float, resolution: int, padding: str) -> None:
    model = create_model("mobilenet_v1_1.0_224", width_mult=width_mult, padding=padding, num_classes=7).eval()
    extractor = FeatureExtractor(model)
    assert extractor.reductions == [2, 4, 8, 16, 32]
    x = torch.randn(2, 3, resolution, resolution)
    maps = extractor(x)
    for info, (name, fmap) in zip(extractor.info, maps.items(), strict=True):
        assert name == info.name
        size = reduced(resolution, info.reduction)
        assert fmap.shape == (2, info.channels, size, size)
    assert model(x).shape == (2, 7)


def reduced(size: int, reduction: int) -> int:
    """Map size after log2(reduction) stride-2 layers, each giving ceil(n / 2)."""
    while reduction > 1:
        size, reduction = -(-size // 2), reduction // 2
    return size


def test_feature_channels_scale_with_width() -> None:
    model = create_model("mobilenet_v1_0.5_160")
    assert [(f.name, f.channels, f.reduction) for f in model.feature_info] == [
        ("block1", 32, 2),
        ("block3", 64, 4),
        ("block5", 128, 8),
        ("block11", 256, 16),
        ("block13", 512, 32),
    ]
    assert model.num_features == 512


@pytest.mark.parametrize(("output_stride", "final"), [(32, 7), (16, 14), (8, 28)])
def test_output_stride_by_dilation(output_stride: int, final: int) -> None:
    model = create_model("mobilenet_v1_0.25_224", output_stride=output_stride).eval()
    fmap = model.forward_features(torch.randn(1, 3, 224, 224))
    assert fmap.shape[-1] == final
    assert max(f.reduction for f in model.feature_info) == output_stride
    dilations = [m.dilation[0] for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert max(dilations) == 32 // output_stride
    extractor = FeatureExtractor(model)
    assert [t.shape[-1] for t in extractor(torch.randn(1, 3, 224, 224)).values()] == [
        224 // r for r in extractor.reductions
    ]


def test_dilated_model_keeps_weights_shape() -> None:
    base = create_model("mobilenet_v1_0.25_224")
    dilated = create_model("mobilenet_v1_0.25_224", output_stride=8)
    dilated.load_state_dict(base.state_dict())  # same parameters, only strides/dilations differ


def test_num_classes_zero_gives_pooled_features() -> None:
    model = create_model("mobilenet_v1_0.75_192", num_classes=0).eval()
    assert model(torch.randn(3, 3, 192, 192)).shape == (3, 768)


def test_in_chans_and_activation() -> None:
    model = create_model("mobilenet_v1_0.25_128", in_chans=1, activation="relu", num_classes=10).eval()
    assert model.features.conv0.conv.in_channels == 1
    assert isinstance(model.features.block1.pw.act, torch.nn.ReLU)
    assert model(torch.randn(1, 1, 28 * 2, 28 * 2)).shape == (1, 10)


def test_baselines_structure() -> None:
    conv = create_model("mobilenet_v1_conv_1.0_224")
    assert all(m.groups == 1 for m in conv.modules() if isinstance(m, torch.nn.Conv2d))
    shallow = create_model("mobilenet_v1_shallow_1.0_224")
    assert len(shallow.features) == 9
    assert shallow(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_extractor_subset_and_bad_reduction() -> None:
    model = create_model("mobilenet_v1_0.25_224")
    extractor = FeatureExtractor(model, reductions=(8, 32))
    assert list(extractor(torch.randn(1, 3, 96, 96))) == ["block5", "block13"]
    assert extractor.channels == [64, 256]
    with pytest.raises(ValueError, match="reductions"):
        FeatureExtractor(model, reductions=(64,))
