import json

import pytest

from mobilenets import create_model, get_entry, list_models
from mobilenets.registry import list_aliases, name_for, same_architecture


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
        ({"batchnorm": "keras"}, "batchnorm"),
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


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"width_mult": 50}, "width_mult"),
        ({"width_mult": float("inf")}, "width_mult"),
        ({"width_mult": float("nan")}, "width_mult"),
        ({"width_mult": True}, "width_mult"),
        ({"width_mult": "1.0"}, "width_mult"),
        ({"resolution": 100_000}, "resolution"),
        ({"resolution": True}, "resolution"),
        ({"num_classes": 10**9}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"in_chans": 100_000}, "in_chans"),
        ({"dropout": "0.1"}, "dropout"),
        ({"dropout": float("nan")}, "dropout"),
        ({"activation": ["relu"]}, "activation"),
    ],
)
def test_arguments_are_bounded_and_typed(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} must be .*got"):
        create_model("mobilenet_v1_0.25_128", **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs"), [("shufflenet_g3_1.0", {"groups": True}), ("shufflenet_v2_1.0", {"width_mult": True})]
)
def test_shufflenets_refuse_bools_for_their_choices(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        create_model(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "width", "resolution"),
    [("mobilenet_v1_0.25_32", 0.25, 32), ("mobilenet_v2_0.35_64", 0.35, 64), ("mobilenet_v1_conv_1.0_100", 1.0, 100)],
)
def test_any_resolution_in_a_name(name: str, width: float, resolution: int) -> None:
    model = create_model(name, num_classes=2)
    assert (model.meta.name, model.width_mult, model.meta.resolution) == (name, width, resolution)
    assert get_entry(name).family == name[:12]
    assert name not in list_models()


def test_resolution_in_a_name_is_checked() -> None:
    with pytest.raises(ValueError, match=r"model name 'mobilenet_v1_0.25_16': resolution must be .* >= 32"):
        create_model("mobilenet_v1_0.25_16")


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("mobilenet_v2", "mobilenet_v2_1.0_224"),
        ("shufflenet_v2_x0_5", "shufflenet_v2_0.5"),
        ("shufflenet_v2_x2_0", "shufflenet_v2_2.0"),
        ("mobilenetv1_100", "mobilenet_v1_1.0_224"),
        ("mobilenetv2_100", "mobilenet_v2_1.0_224"),
        ("mobilenetv2_050", "mobilenet_v2_0.5_224"),
    ],
)
def test_torchvision_and_timm_names_are_aliases(alias: str, name: str) -> None:
    assert get_entry(alias) is get_entry(name)
    assert create_model(alias, num_classes=2).meta.name == name
    assert list_aliases()[alias] == name and alias not in list_models()


def test_near_misses_are_suggested_by_similarity() -> None:
    with pytest.raises(ValueError, match=r"similar: mobilenet_v2_1\.0_224") as info:
        get_entry("mobilenetv2_1.0_224")
    assert "mobilenet_v1" not in str(info.value).split("similar:")[1].split(",")[0]
    with pytest.raises(ValueError, match=r"similar: shufflenet_g8_1\.0"):
        get_entry("shufflenet_g9_1.0")


def test_name_for_follows_width_and_resolution() -> None:
    assert name_for("mobilenet_v1_1.0_224", width_mult=0.6) == "mobilenet_v1_0.6_224"
    assert name_for("mobilenet_v2", resolution=160) == "mobilenet_v2_1.0_160"
    assert name_for("shufflenet_v2_1.0", width_mult=0.5, resolution=96) == "shufflenet_v2_0.5"
    assert name_for("mobilenet_v1_0.25_128") == "mobilenet_v1_0.25_128"


def test_same_architecture_ignores_the_default_input_size() -> None:
    assert same_architecture("mobilenet_v1_0.25_128", "mobilenet_v1_0.25_32")
    assert same_architecture("mobilenet_v2", "mobilenetv2_100")
    assert not same_architecture("mobilenet_v1_0.25_128", "mobilenet_v1_0.5_128")
    assert not same_architecture("mobilenet_v1_1.0_224", "mobilenet_v1_conv_1.0_224")


def test_cli_lists_aliases_apart(cli) -> None:
    code, out, _ = cli("list", "mobilenetv2_*", "--aliases", "--json")
    assert code == 0 and {"alias": "mobilenetv2_100", "model": "mobilenet_v2_1.0_224"} in json.loads(out)
    code, out, _ = cli("list", "--json")
    assert code == 0 and "mobilenet_v2" not in {row["model"] for row in json.loads(out)}
    code, _, err = cli("list", "nothing*", "--aliases")
    assert code == 2 and "matches no alias" in err
