"""timm's MobileNet V1 / V2 state dicts load into ours and compute what timm computes.

The fixtures (tests/fixtures/make_timm.py, run once with timm) hold timm's state dicts with random
weights and BatchNorm statistics, timm's outputs for a fixed image, and the tensor names and shapes of
timm's full-size models; timm itself is not needed here.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilenets import FeatureExtractor, create_model, load_model
from mobilenets.weights import fit_state_dict, foreign_names, init_from

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"
OUTPUTS = np.load(FIXTURES / "timm_outputs.npz")
ODD = (97, 131)  # the crop make_timm.py fed timm
# Our name of each fixture's architecture (timm's V1 at α = 0.25 has no timm name).
SMALL = {"mobilenetv1_025": "mobilenet_v1_0.25_224", "mobilenetv2_035": "mobilenetv2_035"}


def normalised(image: np.ndarray) -> torch.Tensor:
    """As make_timm.py: uint8 (3, H, W) -> float (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(image).float().div(255).sub(0.5).div(0.5).unsqueeze(0)


def outputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s logits for the fixture's image at 224 × 224 and at the odd size."""
    image = OUTPUTS["image"]
    with torch.no_grad():
        return model(normalised(image)), model(normalised(image[:, : ODD[0], : ODD[1]]))


@pytest.mark.parametrize("fixture", SMALL)
def test_same_outputs_as_timm(fixture: str) -> None:
    model = load_model(FIXTURES / f"timm_{fixture}.safetensors", SMALL[fixture]).eval()
    assert model.meta.num_classes == 10  # read from timm's classifier
    full, odd = outputs(model)
    torch.testing.assert_close(full, torch.from_numpy(OUTPUTS[f"{fixture}_224"]), rtol=0, atol=1e-4)
    torch.testing.assert_close(odd, torch.from_numpy(OUTPUTS[f"{fixture}_odd"]), rtol=0, atol=1e-4)


# Our end point -> timm's module whose output it is, with its reduction of the input.
ENDPOINTS = {
    "mobilenetv1_025": [
        ("block1", "blocks.0.0", 2),
        ("block3", "blocks.1.1", 4),
        ("block5", "blocks.2.1", 8),
        ("block11", "blocks.3.5", 16),
        ("block13", "blocks.4.1", 32),
    ],
    "mobilenetv2_035": [
        ("block1", "blocks.0.0", 2),
        ("block3", "blocks.1.1", 4),
        ("block6", "blocks.2.2", 8),
        ("block13", "blocks.4.2", 16),
        ("conv18", "bn2", 32),  # timm's conv_head, then bn2 with its ReLU6
    ],
}


@pytest.mark.parametrize("fixture", SMALL)
def test_end_points_equal_timm_at_every_size(fixture: str) -> None:
    model = load_model(FIXTURES / f"timm_{fixture}.safetensors", SMALL[fixture]).eval()
    extractor = FeatureExtractor(model)
    assert [(info.name, info.reduction) for info in extractor.info] == [(ours, r) for ours, _, r in ENDPOINTS[fixture]]
    image = OUTPUTS["image"]
    for size, crop in (("224", image), ("odd", image[:, : ODD[0], : ODD[1]])):
        with torch.no_grad():
            maps = extractor.double()(normalised(crop).double())  # as make_timm.py computed them
        for ours, theirs, _ in ENDPOINTS[fixture]:
            key = f"{fixture}_{theirs}_{size}"  # two of the map's channels, as make_timm.py stored them
            expected = torch.from_numpy(OUTPUTS[key])
            assert expected.std() > 0.1  # the weights do shape the map
            torch.testing.assert_close(maps[ours][:, OUTPUTS[f"{key}_channels"]].float(), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("fixture", SMALL)
@pytest.mark.parametrize("argument", [{"activation": "relu"}, {"padding": "same"}, {"batchnorm": "tf"}])
def test_the_fixtures_tell_activation_padding_and_batchnorm_apart(fixture: str, argument: dict) -> None:
    """timm's models are ours with their defaults (ReLU6, PyTorch's padding, BatchNorm epsilon 1e-5):
    any other choice gives other outputs, so the comparison above checks each of them."""
    model = load_model(FIXTURES / f"timm_{fixture}.safetensors", SMALL[fixture], **argument).eval()
    full, odd = outputs(model)
    expected = torch.from_numpy(OUTPUTS[f"{fixture}_224"]), torch.from_numpy(OUTPUTS[f"{fixture}_odd"])
    assert max((full - expected[0]).abs().max(), (odd - expected[1]).abs().max()) > 1e-3


SHAPES = json.loads((FIXTURES / "timm_shapes.json").read_text())
# timm's full-size models of our architectures: (our name, arguments).
SAME_ARCHITECTURE = {
    "mobilenetv1_100": ("mobilenetv1_100", {}),
    "mobilenetv1_125": ("mobilenetv1_100", {"width_mult": 1.25}),
    **{f"mobilenetv2_{w}": (f"mobilenetv2_{w}", {}) for w in ("035", "050", "075", "100", "140")},
}


def meta_state(timm_name: str) -> dict[str, torch.Tensor]:
    """A state dict with the names and shapes of timm's model, on the meta device (no memory)."""
    return {key: torch.empty(shape, device="meta") for key, shape in SHAPES[timm_name].items()}


@pytest.mark.parametrize("timm_name", SAME_ARCHITECTURE)
def test_every_timm_model_of_our_architectures_fits(timm_name: str) -> None:
    name, arguments = SAME_ARCHITECTURE[timm_name]
    with torch.device("meta"):
        model = create_model(name, **arguments)
    fitted, head = fit_state_dict(model, meta_state(timm_name))
    assert head and set(fitted) == set(model.state_dict())
    assert all(fitted[key].shape == value.shape for key, value in model.state_dict().items())


@pytest.mark.parametrize(
    ("timm_name", "name", "arguments", "problem"),
    [
        ("mobilenetv1_100h", "mobilenetv1_100", {}, "unexpected: bn2.bias, bn2.num_batches_tracked"),
        ("mobilenetv2_110d", "mobilenetv2_100", {"width_mult": 1.1}, "unexpected: blocks.1.2.bn1.bias"),
        ("mobilenetv2_120d", "mobilenetv2_100", {"width_mult": 1.2}, "unexpected: blocks.1.2.bn1.bias"),
    ],
    ids=["mobilenetv1_100h", "mobilenetv2_110d", "mobilenetv2_120d"],
)
def test_timm_models_of_other_architectures_are_refused(timm_name: str, name: str, arguments, problem: str) -> None:
    """timm's ``100h`` has a head conv that V1 lacks; ``110d`` / ``120d`` have more blocks per stage."""
    with torch.device("meta"):
        model = create_model(name, **arguments)
    with pytest.raises(ValueError, match="do not fit") as info:
        fit_state_dict(model, meta_state(timm_name), source=timm_name)
    assert problem in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("fixture", "name", "mismatch"),
    [
        (
            "mobilenetv1_025",
            "mobilenet_v1_0.5_224",
            "shape mismatch: conv_stem.weight (8, 3, 3, 3) for features.conv0.conv.weight (16, 3, 3, 3)",
        ),
        (
            "mobilenetv2_035",
            "mobilenetv2_050",
            "shape mismatch: blocks.1.0.conv_pwl.weight (8, 48, 1, 1) for features.block2.project.conv.weight "
            "(16, 48, 1, 1)",
        ),
    ],
    ids=["v1", "v2"],
)
def test_a_file_of_another_width_is_one_error_naming_the_tensors(fixture: str, name: str, mismatch: str) -> None:
    with pytest.raises(ValueError) as info:
        load_model(FIXTURES / f"timm_{fixture}.safetensors", name)
    message = str(info.value)
    assert mismatch in message and "\n" not in message
    assert "missing" not in message and "unexpected" not in message  # timm's layout was recognised


def test_timm_names_of_our_modules() -> None:
    names, classifier = foreign_names(create_model("mobilenet_v1_0.25_128"), "timm")
    assert names["features.block1.pw.bn.running_var"] == "blocks.0.0.bn2.running_var"
    assert names["features.block3.dw.conv.weight"] == "blocks.1.1.conv_dw.weight"
    assert names["features.block13.pw.conv.weight"] == "blocks.4.1.conv_pw.weight"
    assert classifier == "classifier."
    names, _ = foreign_names(create_model("mobilenet_v2_0.35_96"), "timm")
    assert names["features.block1.project.bn.bias"] == "blocks.0.0.bn2.bias"
    assert names["features.block17.expand.conv.weight"] == "blocks.6.0.conv_pw.weight"
    assert names["features.conv18.bn.weight"] == "bn2.weight"
    assert len(set(names.values())) == len(names)


def test_timm_features_under_a_fresh_classifier() -> None:
    path = FIXTURES / "timm_mobilenetv2_035.safetensors"
    full = load_model(path, "mobilenetv2_035")
    model = create_model("mobilenetv2_035", num_classes=5)
    assert init_from(model, path) is False  # 10 classes in the file: the 5-class head stays fresh
    features = full.features.state_dict()
    assert all(torch.equal(value, features[key]) for key, value in model.features.state_dict().items())
    backbone = load_model(path, "mobilenetv2_035", num_classes=0)
    assert backbone.meta.num_classes == 0
    assert all(torch.equal(value, features[key]) for key, value in backbone.features.state_dict().items())
