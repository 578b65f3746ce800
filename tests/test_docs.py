"""What the README says of the models' arguments is what the builders do."""

import inspect
from pathlib import Path

import pytest

from mobilenets.models.base import MAX_IN_CHANS, MAX_NUM_CLASSES, MAX_RESOLUTION, MAX_WIDTH_MULT, MIN_RESOLUTION
from mobilenets.registry import create_model, list_models, registry

README = (Path(__file__).parents[1] / "README.md").read_text()
ARGUMENTS = README[README.index("Model arguments (every family)") :].split("\n\n")[0]
MOBILENETS = ("mobilenet_v1", "mobilenet_v2")


def _families() -> dict[str, inspect.Signature]:
    return {entry.family: inspect.signature(entry.builder) for entry in registry().values()}


@pytest.mark.parametrize("family", ["mobilenet_v1", "mobilenet_v2", "shufflenet", "shufflenet_v2"])
def test_activation_and_padding_are_as_the_readme_says(family: str) -> None:
    parameters = _families()[family].parameters
    assert parameters["activation"].default == ("relu6" if family in MOBILENETS else "relu")
    assert ("padding" in parameters) == (family in MOBILENETS)
    assert {"width_mult", "num_classes", "in_chans", "dropout", "batchnorm", "output_stride"} <= set(parameters)


def test_ranges_are_the_ones_the_readme_states() -> None:
    text = " ".join(ARGUMENTS.split())
    assert f"(0, {MAX_WIDTH_MULT:g}]" in text
    assert f"{MIN_RESOLUTION} to {MAX_RESOLUTION}" in text
    assert f"up to {MAX_NUM_CLASSES:,}" in text and f"1 to {MAX_IN_CHANS}" in text


def test_names_at_any_resolution_as_the_readme_says() -> None:
    assert "mobilenet_v1_0.25_32" in ARGUMENTS and "mobilenet_v1_0.25_32" not in list_models()
    assert create_model("mobilenet_v1_0.25_32").meta.resolution == 32
