"""Counted costs against the published numbers of ``shared/paper/tables.md``.

Printed precision: a figure printed as an integer number of millions must lie within one
million of our count, one printed with one decimal within 0.1 M, and so on.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mobilenets import count_cost, create_model, profile
from mobilenets.cost import (
    depthwise_separable_cost,
    modification_table,
    reduction_ratio,
    standard_conv_cost,
)
from mobilenets.layers import DepthwiseSeparable
from mobilenets.published import published_results

M = 1e6


def body_mult_adds(report) -> int:
    """Mult-adds without the fully connected classifier."""
    return report.mult_adds - report.by_type["Fully Connected"]["mult_adds"]


def test_headline_figures() -> None:
    report = profile("mobilenet_v1_1.0_224")
    assert round(report.mult_adds / M) == 569
    assert round(report.params / M, 1) == 4.2
    # The slim per-layer listing: body without FC, and its first layer.
    assert body_mult_adds(report) == 567_716_352
    assert report.params - report.by_type["Fully Connected"]["params"] == 3_185_088
    first = report.layers[0]
    assert (first.type, first.params, first.mult_adds) == ("Conv 3×3", 864, 10_838_016)


def test_counter_agrees_with_torch_flop_counter() -> None:
    model = create_model("mobilenet_v1_0.5_160").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 160, 160))
    assert counter.get_total_flops() == 2 * count_cost(model).mult_adds


# The paper's Tables 4-7 and 9 (V1p). Some of its rows count the classifier and some do not
# (Table 7 prints 290 for 1.0-160: 290.7 with the FC layer, 289.7 without; Table 6 prints 569 for
# 1.0-224: 568.7 with it), so each figure must match our count with or without the FC layer.
PAPER = [
    ("mobilenet_v1_conv_1.0_224", {}, 4866, 29.3),
    ("mobilenet_v1_1.0_224", {}, 569, 4.2),
    ("mobilenet_v1_shallow_1.0_224", {}, 307, 2.9),
    ("mobilenet_v1_0.75_224", {}, 325, 2.6),
    ("mobilenet_v1_0.5_224", {}, 149, 1.3),
    ("mobilenet_v1_0.25_224", {}, 41, 0.5),
    ("mobilenet_v1_1.0_192", {}, 418, 4.2),
    ("mobilenet_v1_1.0_160", {}, 290, 4.2),
    ("mobilenet_v1_1.0_128", {}, 186, 4.2),
    ("mobilenet_v1_0.5_160", {}, 76, 1.32),
    ("mobilenet_v1_0.75_192", {}, 239, None),  # Table 10
]


@pytest.mark.parametrize(("name", "overrides", "mmadds", "mparams"), PAPER)
def test_paper_tables(name: str, overrides: dict, mmadds: int, mparams: float | None) -> None:
    report = profile(name, **overrides)
    assert mmadds in (round(report.mult_adds / M), round(body_mult_adds(report) / M))
    if mparams is not None:
        decimals = len(str(mparams).split(".")[1])
        assert round(report.params / M, decimals) == mparams


# Where slim's grid (S18) disagrees with the paper and with counting, we follow the paper:
# slim's α = 0.75 mult-adds (317/233/162/104) are ~2.5 % below both the paper's Tables 5, 6 and 10
# (325 at 224, 239 at 192) and our count, and slim's 34 M for 0.25-192 is 12 % above the 30.2 M
# that both counting and the α² ρ² scaling of its own 41 M give.
SLIM_DISAGREES = {
    "mobilenet_v1_0.75_224",
    "mobilenet_v1_0.75_192",
    "mobilenet_v1_0.75_160",
    "mobilenet_v1_0.75_128",
    "mobilenet_v1_0.25_192",
}


def slim_grid() -> list[str]:
    return [n for n in published_results() if n.startswith("mobilenet_v1_") and "slim" in published_results()[n].source]


def test_slim_grid_is_complete() -> None:
    assert len(slim_grid()) == 16


@pytest.mark.parametrize("name", slim_grid())
def test_slim_grid(name: str) -> None:
    published = published_results()[name]
    model = create_model(name)
    report = count_cost(model)
    if name in SLIM_DISAGREES:
        assert abs(report.mult_adds / M - published.mult_adds_m) > 1
    else:
        assert abs(report.mult_adds / M - published.mult_adds_m) < 1
    # Slim counts checkpoint variables: weights, FC bias, and BN β, moving mean and variance.
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert round((report.params + 3 * bn_channels) / M, 2) == published.params_m


def test_table2_shares() -> None:
    report = profile("mobilenet_v1_1.0_224")
    by_type = report.by_type
    mult_adds = {k: 100 * v["mult_adds"] / report.mult_adds for k, v in by_type.items()}
    # Table 2's parameter shares are of weights only (24.33 % FC; with the FC bias it would be 24.35 %).
    biases = {k: sum(layer.bias for layer in report.layers if layer.type == k) for k in by_type}
    weights = {k: v["params"] - biases[k] for k, v in by_type.items()}
    total_weights = sum(weights.values())
    params = {k: 100 * v / total_weights for k, v in weights.items()}
    assert list(by_type) == ["Conv 1×1", "Conv DW 3×3", "Conv 3×3", "Fully Connected"]
    assert round(mult_adds["Conv 1×1"], 2) == 94.86
    assert round(mult_adds["Conv DW 3×3"], 2) == 3.06
    # The paper prints 1.19 %, a transposition of the 1.91 % counted: with 1.91 the column sums to
    # 100.01 %, with 1.19 to 99.29 %.
    assert round(mult_adds["Conv 3×3"], 2) == 1.91
    assert round(mult_adds["Fully Connected"], 2) == 0.18
    assert round(params["Conv 1×1"], 2) == 74.59
    assert round(params["Conv DW 3×3"], 2) == 1.06
    assert round(params["Conv 3×3"], 2) == 0.02
    assert round(params["Fully Connected"], 2) == 24.33


def test_table3_analytic() -> None:
    rows = modification_table()
    assert [round(ma / M, 1) for _, ma, _ in rows] == [462.4, 52.3, 29.6, 15.1]
    assert [round(p / M, 2) for _, _, p in rows] == [2.36, 0.27, 0.15, 0.15]
    assert reduction_ratio(512, 3) == pytest.approx(rows[1][1] / rows[0][1])


def test_table3_formulas_agree_with_counting_a_real_layer() -> None:
    block = DepthwiseSeparable(512, 512)
    report = count_cost(block, resolution=14, name="layer")
    assert (report.mult_adds, report.params) == depthwise_separable_cost(
        3, in_channels=512, out_channels=512, feature=14
    )
    full = torch.nn.Conv2d(512, 512, 3, padding=1, bias=False)
    report = count_cost(full, resolution=14, name="layer")
    assert (report.mult_adds, report.params) == standard_conv_cost(3, in_channels=512, out_channels=512, feature=14)


def test_resolution_scales_cost_quadratically_and_not_params() -> None:
    base = profile("mobilenet_v1_1.0_224")
    double = profile("mobilenet_v1_1.0_224", resolution=448)
    assert double.params == base.params
    assert body_mult_adds(double) == 4 * body_mult_adds(base)


def test_report_outputs() -> None:
    report = profile("mobilenet_v1_0.25_128")
    d = report.to_dict(per_layer=True)
    assert {"model", "resolution", "mult_adds", "params", "trainable_params", "by_type"} <= set(d)
    assert all(isinstance(v, int) for t in d["by_type"].values() for v in t.values())
    assert sum(layer["mult_adds"] for layer in d["layers"]) == d["mult_adds"]
    assert d["trainable_params"] > d["params"]
    text = report.format(per_layer=True)
    assert "block13.pw.conv" in text and "Conv DW 3×3" in text and "%" in text


def test_count_cost_restores_training_mode() -> None:
    model = create_model("mobilenet_v1_0.25_128").train()
    count_cost(model)
    assert model.training


def test_profile_names_the_model_it_profiled() -> None:
    report = profile("mobilenet_v1_1.0_224", width_mult=0.6)
    assert report.model == "mobilenet_v1_0.6_224"
    assert report.mult_adds == count_cost(create_model("mobilenet_v1_1.0_224", width_mult=0.6)).mult_adds
    assert profile("mobilenet_v2_1.0_224", resolution=160).model == "mobilenet_v2_1.0_160"
