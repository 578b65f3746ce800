"""Keras's MobileNet V1 and MobileNetV2 HDF5 weights give Keras's outputs, without Keras.

The fixtures (tests/fixtures/keras/, written by tests/fixtures/make_keras.py with Keras 3) hold small
Keras models with random weights and BatchNorm statistics and Keras's logits for one image at the
default size and at an odd size (161 px, where Keras V1's fixed padding differs from TF "SAME"), and
the outputs there of the Keras layers that end each reduction.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets import FeatureExtractor, create_model, load_model
from mobilenets.layers import conv2d
from mobilenets.weights import convert_weights, fit_state_dict, read_weights_file

h5py = pytest.importorskip("h5py", reason="h5py (the 'formats' extra) reads Keras HDF5 files")

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only wait on each other

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
# (family in outputs.npz, file, our model of the same α)
KERAS = [
    ("v1", "v1.h5", "mobilenet_v1_0.25_224"),  # legacy weights-only layout
    ("v2", "v2.weights.h5", "mobilenet_v2_0.35_224"),  # Keras 3 layout
]
SIZES = (224, 161)


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "outputs.npz"))


def keras_input(outputs: dict[str, np.ndarray], size: int) -> torch.Tensor:
    """The fixture image's top-left ``size``² crop scaled to [-1, 1], NCHW (Keras saw it NHWC)."""
    image = outputs["image"][:, :size, :size].astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(image).permute(0, 3, 1, 2)


def run(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


@pytest.mark.parametrize(("family", "file", "name"), KERAS, ids=[family for family, _, _ in KERAS])
def test_logits_equal_keras_at_every_size(outputs, family: str, file: str, name: str) -> None:
    model = load_model(FIXTURES / file, name)
    assert model.meta.num_classes == 10  # read from the file's classifier
    assert model.meta.mean == model.meta.std == (0.5, 0.5, 0.5)  # TF's [-1, 1] inputs
    for size in SIZES:
        expected = outputs[f"{family}_logits_{size}"]
        np.testing.assert_allclose(run(model, keras_input(outputs, size)), expected, rtol=0, atol=1e-4)
        assert expected.std() > 0.1  # the weights do shape the outputs
        probabilities = torch.softmax(torch.from_numpy(run(model, keras_input(outputs, size))), 1)
        np.testing.assert_allclose(probabilities, torch.softmax(torch.from_numpy(expected), 1), rtol=0, atol=1e-5)


# Our end point -> the Keras layer whose output it is, with its reduction of the input. Our V2 blocks
# count from 1 where Keras's count from 0 after ``expanded_conv``; its stride-1 blocks end in ``_add``.
ENDPOINTS = {
    "v1": [
        ("block1", "conv_pw_1_relu", 2),
        ("block3", "conv_pw_3_relu", 4),
        ("block5", "conv_pw_5_relu", 8),
        ("block11", "conv_pw_11_relu", 16),
        ("block13", "conv_pw_13_relu", 32),
    ],
    "v2": [
        ("block1", "expanded_conv_project_BN", 2),
        ("block3", "block_2_add", 4),
        ("block6", "block_5_add", 8),
        ("block13", "block_12_add", 16),
        ("conv18", "out_relu", 32),
    ],
}


@pytest.mark.parametrize(("family", "file", "name"), KERAS, ids=[family for family, _, _ in KERAS])
def test_end_points_equal_keras_at_every_size(outputs, family: str, file: str, name: str) -> None:
    extractor = FeatureExtractor(load_model(FIXTURES / file, name).eval())
    assert [(info.name, info.reduction) for info in extractor.info] == [(ours, r) for ours, _, r in ENDPOINTS[family]]
    for size in SIZES:
        with torch.no_grad():
            maps = extractor(keras_input(outputs, size))
        for ours, theirs, _ in ENDPOINTS[family]:
            key = f"{family}_{theirs}_{size}"  # two of the map's channels (NHWC), as make_keras.py stored them
            expected = outputs[key].transpose(0, 3, 1, 2)
            assert expected.std() > 0.1  # the weights do shape the map
            np.testing.assert_allclose(maps[ours][:, outputs[f"{key}_channels"]], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("family", "file", "name"), KERAS, ids=[family for family, _, _ in KERAS])
def test_pytorch_batchnorm_epsilon_would_differ(outputs, family: str, file: str, name: str) -> None:
    model = load_model(FIXTURES / file, name, batchnorm="torch")
    assert np.abs(run(model, keras_input(outputs, 224)) - outputs[f"{family}_logits_224"]).max() > 1e-2


def test_v1_needs_keras_padding_on_odd_sizes(outputs) -> None:
    same = load_model(FIXTURES / "v1.h5", "mobilenet_v1_0.25_224", padding="same")
    np.testing.assert_allclose(run(same, keras_input(outputs, 224)), outputs["v1_logits_224"], rtol=0, atol=1e-4)
    assert np.abs(run(same, keras_input(outputs, 161)) - outputs["v1_logits_161"]).max() > 1e-2


def test_keras_padding_is_fixed_on_strided_depthwise_layers() -> None:
    x = torch.randn(1, 4, 25, 25)
    keras = conv2d(4, 4, kernel_size=3, stride=2, groups=4, padding="keras")
    same = conv2d(4, 4, kernel_size=3, stride=2, groups=4, padding="same")
    full = conv2d(4, 4, kernel_size=3, stride=2, padding="keras")  # Keras's conv1 is "SAME"
    assert keras(x).shape[-1] == 12 and same(x).shape[-1] == full(x).shape[-1] == 13
    keras.weight.data.copy_(same.weight.data)
    even = torch.randn(1, 4, 24, 24)
    torch.testing.assert_close(keras(even), same(even))


def test_no_top_full_model_file_gives_keras_features(outputs) -> None:
    model = load_model(FIXTURES / "v1_no_top_model.h5", "mobilenet_v1_0.25_224", num_classes=0)
    for size in SIZES:
        features = run(model, keras_input(outputs, size))
        np.testing.assert_allclose(features, outputs[f"v1_features_{size}"], rtol=0, atol=1e-4)


def test_keras2_names_with_depthwise_kernel(outputs, tmp_path: Path) -> None:
    """The released files name variables ``<layer>/depthwise_kernel:0``, ``<layer>/kernel:0``..."""
    path = tmp_path / "keras2.h5"
    with h5py.File(FIXTURES / "v1.h5", "r") as src, h5py.File(path, "w") as dst:
        dst.attrs.update(src.attrs)
        for layer in src.attrs["layer_names"]:
            group = dst.create_group(layer)
            names = []
            for name in src[layer].attrs["weight_names"]:
                variable = name.rsplit("/", 1)[-1]
                if variable == "kernel" and layer.startswith("conv_dw_"):
                    variable = "depthwise_kernel"
                new = f"{layer}/{variable}:0"
                group[new] = src[layer][name][()]
                names.append(new.encode())
            group.attrs["weight_names"] = names
    model = load_model(path, "mobilenet_v1_0.25_224")
    np.testing.assert_allclose(run(model, keras_input(outputs, 161)), outputs["v1_logits_161"], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("file", "name", "message"),
    [
        ("v1.h5", "mobilenet_v1_0.5_224", r"shape mismatch: conv1\.weight \(8, 3, 3, 3\) for features\.conv0\.conv"),
        ("v2.weights.h5", "mobilenet_v1_0.25_224", r"missing: features\.conv0\.conv\.weight.*unexpected: Conv1\."),
        ("v1.h5", "mobilenet_v2_0.35_224", r"missing: features\.conv0\.conv\.weight.*unexpected: conv1\.weight"),
    ],
)
def test_file_of_another_width_or_family(file: str, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        load_model(FIXTURES / file, name)
    assert "\n" not in str(error.value)


def test_damaged_and_foreign_files(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes((FIXTURES / "v1.h5").read_bytes()[:50_000])
    text = tmp_path / "text.h5"
    text.write_text("not HDF5")
    plain = tmp_path / "plain.hdf5"
    with h5py.File(plain, "w") as file:
        file["x"] = np.zeros(3)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file.attrs["layer_names"] = [b"dense_7"]
        file.create_group("dense_7").attrs["weight_names"] = [b"dense_7/kernel:0"]
        file["dense_7/dense_7/kernel:0"] = np.zeros((4, 2), np.float32)
    strings = tmp_path / "strings.h5"
    with h5py.File(strings, "w") as file:
        file.attrs["layer_names"] = [b"conv1"]
        file.create_group("conv1").attrs["weight_names"] = [b"conv1/kernel:0"]
        file["conv1/conv1/kernel:0"] = [b"not", b"numbers"]
    cases = [
        (truncated, "could not be read as Keras HDF5"),
        (strings, "could not be read as Keras HDF5"),
        (text, "could not be read as Keras HDF5"),
        (plain, "is HDF5 but holds no Keras weights"),
        (other, r"do not fit mobilenet_v1_0\.25_224: missing: features\.conv0\.conv\.weight.*unexpected: dense_7\."),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            load_model(path, "mobilenet_v1_0.25_224")
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_hdf5_found_by_content_without_suffix(outputs, tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes((FIXTURES / "v1.h5").read_bytes())
    model = load_model(path, "mobilenet_v1_0.25_224")
    np.testing.assert_allclose(run(model, keras_input(outputs, 224)), outputs["v1_logits_224"], rtol=0, atol=1e-4)


def test_predict_gives_keras_probabilities(cli, outputs, tmp_path: Path) -> None:
    """``predict`` scales pixels to [-1, 1] as the file's info says: a 256² image whose centre 224² crop
    is the fixture's (the resize to 256 then changes nothing) gets Keras's softmax."""
    canvas = np.zeros((256, 256, 3), np.uint8)
    canvas[16:240, 16:240] = outputs["image"][0]
    Image.fromarray(canvas).save(tmp_path / "image.png")
    # Our MobileNetV2 defaults to ImageNet's mean and std (torchvision's weights): the file must change them.
    weights, image = str(FIXTURES / "v2.weights.h5"), str(tmp_path / "image.png")
    code, out, _ = cli("predict", "mobilenet_v2_0.35_224", "--weights", weights, image, "--json")
    assert code == 0
    top = json.loads(out)[0]["top"]
    expected = torch.softmax(torch.from_numpy(outputs["v2_logits_224"][0]), 0)
    assert [p["index"] for p in top] == expected.argsort(descending=True)[:5].tolist()
    np.testing.assert_allclose([p["prob"] for p in top], expected.sort(descending=True).values[:5], rtol=0, atol=1e-5)


def test_cli_error_for_a_damaged_keras_file(cli, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes((FIXTURES / "v1.h5").read_bytes()[:50_000])
    code, _, err = cli("predict", "mobilenet_v1_0.25_224", "--weights", str(damaged), str(damaged))
    assert code == 2
    assert err.startswith("mobilenets predict: error: weights file") and "Keras HDF5" in err
    assert err.count("\n") == 1


def test_without_h5py_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py then raises ImportError
    with pytest.raises(ValueError, match=r"needs h5py: pip install 'mobilenets\[formats\]'"):
        load_model(FIXTURES / "v1.h5", "mobilenet_v1_0.25_224")


SHAPES = json.loads((FIXTURES / "shapes.json").read_text())


def released_layout(name: str, path: Path) -> Path:
    """A released-layout file at ``path`` with the layers and shapes of Keras's 1000-class model
    ``name`` (zeros: the shapes are what is checked)."""
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = [layer.encode() for layer, _ in SHAPES[name]]
        for layer, weights in SHAPES[name]:
            file.create_group(layer).attrs["weight_names"] = [weight.encode() for weight, _ in weights]
            for weight, shape in weights:
                file[layer].create_dataset(weight, shape, dtype=np.float32)  # unwritten: reads as zeros
    return path


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_width_of_keras_fits_ours(name: str, tmp_path: Path) -> None:
    """Keras's 1000-class model of each α fits our model of that α, classifier included."""
    state, info = read_weights_file(released_layout(name, tmp_path / "keras.h5"))
    with torch.device("meta"):
        model = create_model(name, **info["model_args"])
    fitted, head = fit_state_dict(model, state)
    assert head and set(fitted) == set(model.state_dict())


def test_convert_a_catalogue_keras_file_keeps_what_reproduces_keras(tmp_path: Path) -> None:
    """A Keras file found in the catalogue by its published name converts without a model name, and
    the converted file records Keras's padding and BatchNorm beside the catalogue's input and classes."""
    published = released_layout("mobilenet_v1_0.25_224", tmp_path / "mobilenet_2_5_224_tf.h5")
    convert_weights(published, tmp_path / "out.safetensors")
    model = load_model(tmp_path / "out.safetensors")
    _, info = read_weights_file(tmp_path / "out.safetensors")
    assert info["model_args"]["padding"] == "keras" and info["model_args"]["batchnorm"] == "tf"
    assert info["provenance"]["weights"] == "mobilenet_2_5_224_tf.h5"
    assert model.meta.name == "mobilenet_v1_0.25_224" and len(model.meta.labels) == 1000
    assert model.features.block2.dw.conv.pads == (0, 1, 0, 1) and model.features.conv0.bn.eps == 1e-3
