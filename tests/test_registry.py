import pytest

from mobilenets import create_model, list_models


def test_names_in_paper_style() -> None:
    names = list_models("mobilenet_v1_*")
    assert "mobilenet_v1_0.75_192" in names
    assert "mobilenet_v1_conv_1.0_224" in names and "mobilenet_v1_shallow_1.0_224" in names
    assert len(list_models("mobilenet_v1_[0-9]*")) == 16
    assert list_models("nothing*") == []


def test_name_sets_defaults_and_overrides_win() -> None:
    model = create_model("mobilenet_v1_0.75_192")
    assert model.width_mult == 0.75 and model.meta.resolution == 192
    assert model.meta.mean == (0.5, 0.5, 0.5)
    model = create_model("mobilenet_v1_0.75_192", width_mult=0.5, resolution=97, num_classes=3)
    assert model.width_mult == 0.5 and model.meta.resolution == 97 and model.meta.num_classes == 3


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"width_mult": 0}, "width_mult"),
        ({"width_mult": -0.5}, "width_mult"),
        ({"resolution": 31}, "resolution"),
        ({"resolution": 100.5}, "resolution"),
        ({"num_classes": -1}, "num_classes"),
        ({"in_chans": 0}, "in_chans"),
        ({"dropout": 1.0}, "dropout"),
        ({"activation": "gelu"}, "activation"),
        ({"padding": "valid"}, "padding"),
        ({"output_stride": 4}, "output_stride"),
        ({"depth_multiplier": 1.0}, "depth_multiplier"),
    ],
)
def test_bad_arguments_name_the_argument_and_range(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument) as info:
        create_model("mobilenet_v1_1.0_224", **kwargs)
    message = str(info.value)
    assert any(token in message for token in (">", "one of", "accepted", "[0, 1)"))


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="model name 'mobilenet_v9' is unknown"):
        create_model("mobilenet_v9")


def test_package_names_load_on_first_use() -> None:
    import mobilenets

    for name in mobilenets.__all__:
        assert getattr(mobilenets, name) is not None, name
    assert mobilenets.create_model is create_model
    with pytest.raises(AttributeError, match="no attribute 'create_modle'"):
        mobilenets.create_modle  # noqa: B018
