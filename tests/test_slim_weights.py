"""TF-slim MobileNet checkpoints (TensorFlow's tensor bundle) give TensorFlow's outputs, without TensorFlow.

The fixtures (tests/fixtures/slim/, written by tests/fixtures/make_slim.py with TensorFlow's own
``Saver``) hold a MobileNet V1 (α = 0.25, 1001 classes, with some training variables) and a
MobileNetV2 (α = 0.35, 10 classes) under slim's names with random weights and BatchNorm statistics,
and TF's logits for one image at the default size and
at an odd size (161 px: TF's "SAME" pads its strided layers 1 on each side there, but 0 before and 1
after at 224, where symmetric padding differs), and the maps there of the slim layers that end each
reduction.
"""

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilenets import FeatureExtractor, create_model, load_model
from mobilenets.weights import convert_weights, load_weights, read_weights_file

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only wait on each other

FIXTURES = Path(__file__).parent / "fixtures" / "slim"
NAME = "mobilenet_v1_0.25_224"
SIZES = (224, 161)


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "outputs.npz"))


def unpack(archive: str, folder: Path) -> Path:
    """The checkpoint prefix of the fixture ``archive`` unpacked into ``folder``."""
    with tarfile.open(FIXTURES / archive) as tar:
        tar.extractall(folder, filter="data")
    (index,) = folder.glob("*.index")
    return index.with_suffix("")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack("mobilenet_v1_0.25.tgz", tmp_path_factory.mktemp("slim"))


def tf_input(outputs: dict[str, np.ndarray], size: int) -> torch.Tensor:
    """The fixture image's top-left ``size``² crop scaled to [-1, 1], NCHW (TF saw it NHWC)."""
    image = outputs["image"][:, :size, :size].astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(image).permute(0, 3, 1, 2)


def run(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


def test_logits_equal_tensorflow_at_every_size(outputs, checkpoint: Path) -> None:
    model = load_model(checkpoint, NAME)
    assert model.meta.num_classes == 1001  # read from the file's classifier: background + ImageNet's 1000
    assert model.meta.mean == model.meta.std == (0.5, 0.5, 0.5)  # TF's [-1, 1] inputs
    for size in SIZES:
        expected = outputs[f"v1_logits_{size}"]
        assert expected.std() > 0.1  # the weights do shape the outputs
        # TF's reference is computed in float64: so is ours here, free of float32 rounding.
        np.testing.assert_allclose(run(model.double(), tf_input(outputs, size).double()), expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(run(model.float(), tf_input(outputs, size)), expected, rtol=0, atol=5e-4)


def test_v2_logits_equal_tensorflow_at_every_size(outputs, tmp_path: Path) -> None:
    model = load_model(unpack("mobilenet_v2_0.35.tgz", tmp_path), "mobilenet_v2_0.35_224")
    assert model.meta.num_classes == 10 and model.meta.mean == (0.5, 0.5, 0.5)  # not ImageNet's mean
    assert model.features.conv0.bn.eps == 1e-3
    for size in SIZES:
        expected = outputs[f"v2_logits_{size}"]
        assert expected.std() > 0.1
        np.testing.assert_allclose(run(model.double(), tf_input(outputs, size).double()), expected, rtol=0, atol=1e-5)


# Our end point -> the slim scope whose output it is, with its reduction of the input. slim's V2 also
# names its end points ``layer_1`` (Conv) to ``layer_19`` (Conv_1): these are layer_2, 4, 7, 14 and 19.
ENDPOINTS = {
    "v1": [
        ("block1", "MobilenetV1/Conv2d_1_pointwise", 2),
        ("block3", "MobilenetV1/Conv2d_3_pointwise", 4),
        ("block5", "MobilenetV1/Conv2d_5_pointwise", 8),
        ("block11", "MobilenetV1/Conv2d_11_pointwise", 16),
        ("block13", "MobilenetV1/Conv2d_13_pointwise", 32),
    ],
    "v2": [
        ("block1", "MobilenetV2/expanded_conv", 2),
        ("block3", "MobilenetV2/expanded_conv_2", 4),
        ("block6", "MobilenetV2/expanded_conv_5", 8),
        ("block13", "MobilenetV2/expanded_conv_12", 16),
        ("conv18", "MobilenetV2/Conv_1", 32),
    ],
}


@pytest.mark.parametrize(
    ("family", "archive", "name"),
    [("v1", "mobilenet_v1_0.25.tgz", NAME), ("v2", "mobilenet_v2_0.35.tgz", "mobilenet_v2_0.35_224")],
    ids=["v1", "v2"],
)
def test_end_points_equal_tf_at_every_size(outputs, tmp_path: Path, family: str, archive: str, name: str) -> None:
    extractor = FeatureExtractor(load_model(unpack(archive, tmp_path), name).eval()).double()  # as TF's, float64
    assert [(info.name, info.reduction) for info in extractor.info] == [(ours, r) for ours, _, r in ENDPOINTS[family]]
    for size in SIZES:
        with torch.no_grad():
            maps = extractor(tf_input(outputs, size).double())
        for ours, theirs, _ in ENDPOINTS[family]:
            key = f"{family}_{theirs}_{size}"  # two of the map's channels (NHWC), as make_slim.py stored them
            expected = outputs[key].transpose(0, 3, 1, 2)
            assert expected.std() > 0.1  # the weights do shape the map
            np.testing.assert_allclose(maps[ours][:, outputs[f"{key}_channels"]], expected, rtol=0, atol=1e-4)


def test_pytorch_batchnorm_epsilon_or_padding_would_differ(outputs, checkpoint: Path) -> None:
    for changed in ({"batchnorm": "torch"}, {"padding": "symmetric"}):
        model = load_model(checkpoint, NAME, **changed)
        assert np.abs(run(model, tf_input(outputs, 224)) - outputs["v1_logits_224"]).max() > 1e-2


def test_the_prefix_the_index_and_the_data_file_name_the_checkpoint(checkpoint: Path) -> None:
    state, info = read_weights_file(checkpoint)
    for path in (f"{checkpoint}.index", f"{checkpoint}.data-00000-of-00001"):
        other, _ = read_weights_file(path)
        assert other.keys() == state.keys() and all(torch.equal(other[key], state[key]) for key in state)
    assert info["model_args"] == {"batchnorm": "tf", "padding": "same"} and info["background_class"]


def test_training_variables_are_dropped_and_missing_gamma_is_one(checkpoint: Path) -> None:
    state, _ = read_weights_file(checkpoint)
    assert not [key for key in state if "global_step" in key or "RMSProp" in key or "MovingAverage" in key]
    assert torch.equal(state["MobilenetV1/Conv2d_0/BatchNorm.weight"], torch.ones(8))  # slim: scale=False
    assert state["MobilenetV1/Conv2d_1_depthwise.weight"].shape == (8, 1, 3, 3)  # (H, W, C, 1) -> (C, 1, H, W)
    assert state["MobilenetV1/Conv2d_1_pointwise.weight"].shape == (16, 8, 1, 1)  # HWIO -> OIHW


def test_dropping_the_background_class_gives_imagenet_classes(outputs, checkpoint: Path) -> None:
    model = load_model(checkpoint, NAME, num_classes=1000)
    assert model.meta.num_classes == 1000
    for size in SIZES:
        np.testing.assert_allclose(run(model, tf_input(outputs, size)), outputs[f"v1_logits_{size}"][:, 1:], atol=5e-4)
    # A 1000-class model built by the caller takes the checkpoint the same way.
    built = load_weights(create_model(NAME, padding="same", batchnorm="tf"), checkpoint)
    np.testing.assert_allclose(run(built, tf_input(outputs, 224)), outputs["v1_logits_224"][:, 1:], atol=5e-4)
    # Naming the checkpoint's own class count keeps its classifier (a 1×1 convolution) as it is.
    same = load_model(checkpoint, NAME, num_classes=1001)
    np.testing.assert_allclose(run(same, tf_input(outputs, 224)), outputs["v1_logits_224"], atol=5e-4)


def test_checkpoint_of_another_width(checkpoint: Path) -> None:
    message = r"shape mismatch: MobilenetV1/Conv2d_0\.weight \(8, 3, 3, 3\) for features\.conv0\.conv\.weight"
    with pytest.raises(ValueError, match=message) as error:
        load_model(checkpoint, "mobilenet_v1_0.5_224")
    assert "\n" not in str(error.value)


def test_damaged_and_foreign_checkpoints(checkpoint: Path, tmp_path: Path) -> None:
    index, data = Path(f"{checkpoint}.index").read_bytes(), Path(f"{checkpoint}.data-00000-of-00001").read_bytes()

    def copy(name: str, index_bytes: bytes, data_bytes: bytes | None = data) -> Path:
        (tmp_path / f"{name}.index").write_bytes(index_bytes)
        if data_bytes is not None:
            (tmp_path / f"{name}.data-00000-of-00001").write_bytes(data_bytes)
        return tmp_path / name

    cases = [
        (copy("short_index", index[:-100]), ValueError, "no table footer"),
        (copy("cut_index", index[:100] + index[-48:]), ValueError, "a block lies past the end of the index"),
        (copy("short_data", index, data[:1000]), ValueError, r"is truncated \(tensor 'MobilenetV1/"),
        (copy("text", b"not a checkpoint index, just text" * 4), ValueError, "no table footer"),
        (copy("no_data", index, None), FileNotFoundError, r"no_data\.data-00000-of-00001' does not exist"),
        (unpack("string_weights.tgz", tmp_path / "string"), ValueError, "'MobilenetV1/Conv2d_0/weights' has dtype st"),
    ]
    for path, error_type, message in cases:
        with pytest.raises(error_type, match=message) as error:
            load_model(path, NAME)
        assert path.name in str(error.value) and "\n" not in str(error.value)


def test_published_archive_loads_and_converts_as_its_catalogue_entry(outputs, tmp_path: Path) -> None:
    """slim publishes ``<model>.tgz``: read without unpacking; under its published name it converts
    with the catalogue's input and keeps TF's padding and BatchNorm."""
    archive = tmp_path / f"{NAME}.tgz"
    archive.write_bytes((FIXTURES / "mobilenet_v1_0.25.tgz").read_bytes())
    model = load_model(archive, NAME)
    np.testing.assert_allclose(run(model, tf_input(outputs, 161)), outputs["v1_logits_161"], atol=5e-4)
    model, _ = convert_weights(archive, tmp_path / "out.safetensors")
    assert model.meta.name == NAME and model.meta.num_classes == 1001
    converted = load_model(tmp_path / "out.safetensors")
    assert converted.features.conv0.bn.eps == 1e-3 and converted.meta.mean == (0.5, 0.5, 0.5)
    np.testing.assert_allclose(run(converted, tf_input(outputs, 224)), outputs["v1_logits_224"], atol=5e-4)


def test_damaged_and_foreign_archives(checkpoint: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tgz"
    damaged.write_bytes((FIXTURES / "mobilenet_v1_0.25.tgz").read_bytes()[:20_000])
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tar:
        tar.add(FIXTURES / "outputs.npz", arcname="outputs.npz")
    no_data = tmp_path / "no_data.tar"
    with tarfile.open(no_data, "w") as tar:
        tar.add(f"{checkpoint}.index", arcname="model.ckpt.index")
    cases = [
        (damaged, ValueError, "could not be read as a tar archive"),
        (empty, ValueError, r"holds 0 TensorFlow checkpoints \(\.index files\), not one"),
        (no_data, FileNotFoundError, "has no model.ckpt.data-00000-of-00001 beside its .index"),
    ]
    for path, error_type, message in cases:
        with pytest.raises(error_type, match=message) as error:
            load_model(path, NAME)
        assert path.name in str(error.value) and "\n" not in str(error.value)


def test_cli_error_for_a_damaged_checkpoint(cli, checkpoint: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "model.ckpt.index"
    damaged.write_bytes(Path(f"{checkpoint}.index").read_bytes()[:-10])
    code, _, err = cli("predict", NAME, "--weights", str(damaged), str(damaged))
    assert code == 2
    assert err.startswith("mobilenets predict: error: weights file") and "TensorFlow checkpoint" in err
    assert err.count("\n") == 1
