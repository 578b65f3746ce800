import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from skimage import data
from torchvision.transforms._presets import ImageClassification

from mobilenets import create_model
from mobilenets.cli import main
from mobilenets.data.decode import decode_image
from mobilenets.predict import Classifier, labels_for, preprocessing
from mobilenets.registry import get_entry
from mobilenets.weights import load_model, pretrained_path

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only wait on each other

needs_pretrained = pytest.mark.skipif(
    find_spec(get_entry("mobilenet_v2_1.0_224").pretrained.package) is None, reason="pretrained weights not installed"
)
MODEL = "shufflenet_v2_0.5"  # the cheapest model; untrained unless a test loads weights


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per kind of input: good ones of every mode, and broken ones."""
    root = tmp_path_factory.mktemp("images")
    cat = Image.fromarray(data.chelsea())
    paths = {kind: root / name for kind, name in [("rgb", "cat.jpg"), ("grey", "grey.png"), ("rgba", "rgba.png")]}
    cat.save(paths["rgb"])
    cat.convert("L").save(paths["grey"])
    cat.convert("RGBA").save(paths["rgba"])
    paths["grey16"] = root / "grey16.png"
    Image.fromarray(np.asarray(cat.convert("L"), np.uint16) * 257).save(paths["grey16"])
    paths["large"] = root / "large.jpg"
    cat.resize((6000, 4000)).save(paths["large"], quality=70)
    whole = paths["rgb"].read_bytes()
    paths["truncated"] = root / "truncated.jpg"
    paths["truncated"].write_bytes(whole[: len(whole) // 3])
    paths["text"] = root / "notes.jpg"
    paths["text"].write_text("not an image\n")
    paths["missing"] = root / "missing.png"
    return paths


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "grey16", "large"])
def test_decode_image_gives_rgb(images: dict[str, Path], kind: str) -> None:
    image = decode_image(images[kind], draft=256)
    assert image.mode == "RGB" and min(image.size) >= 256
    pixels = np.asarray(image, np.float32)
    assert 40 < pixels.mean() < 200  # the photo's brightness survives every conversion
    if kind in ("grey", "grey16"):
        assert (pixels[..., 0] == pixels[..., 2]).all()


def test_large_jpeg_is_decoded_reduced_only_in_draft_mode(images: dict[str, Path]) -> None:
    assert decode_image(images["large"], draft=256).size == (750, 500)
    assert decode_image(images["large"]).size == (6000, 4000)


@pytest.mark.parametrize(("kind", "error"), [("truncated", ValueError), ("text", ValueError), ("missing", OSError)])
def test_bad_images_raise_clear_errors(images: dict[str, Path], kind: str, error: type) -> None:
    with pytest.raises(error, match=r"^image '") as info:
        decode_image(images[kind])
    assert images[kind].name in str(info.value) and "\n" not in str(info.value)


def test_preprocessing_follows_meta() -> None:
    meta = create_model(MODEL).meta
    x = preprocessing(meta)(Image.new("RGB", (500, 300), (124, 116, 104)))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert x.abs().max() < 0.01  # the ImageNet mean colour normalises to about 0
    x = preprocessing(replace(meta, resolution=160, resize=320))(Image.new("RGB", (400, 200)))
    assert x.shape == (3, 160, 160)


def test_preprocessing_is_the_reference_evaluation_transform() -> None:
    # The resize runs on the PIL image, as in torchvision's reference: resizing a uint8 tensor
    # instead moves pixels by one level in a non-square photo.
    reference = ImageClassification(crop_size=224, resize_size=256)
    cat = Image.fromarray(data.chelsea())
    expected = reference(cat)
    assert torch.allclose(preprocessing(create_model(MODEL).meta)(cat), expected, atol=1e-6)


@needs_pretrained
def test_classifier_reproduces_torchvision_reference(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    cat = Image.fromarray(data.chelsea())
    cat.resize((cat.width * 3, cat.height * 3), Image.Resampling.BICUBIC).save(path, quality=90)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(pretrained_path("mobilenet_v2_1.0_224"), weights_only=True))
    with Image.open(path) as image, torch.inference_mode():
        expected = reference.eval()(ImageClassification(crop_size=224, resize_size=256)(image).unsqueeze(0))
    expected = expected.softmax(dim=1)[0]
    classifier = Classifier(load_model("pretrained", "mobilenet_v2_1.0_224"), topk=1000, device="cpu")
    probs = torch.zeros(1000)
    for p in classifier(path):
        probs[p.index] = p.prob
    assert (probs - expected).abs().max() < 1e-3


def test_draft_decoding_is_opt_in(images: dict[str, Path]) -> None:
    model = create_model(MODEL)
    full, draft = Classifier(model, topk=1000, device="cpu"), Classifier(model, topk=1000, device="cpu", draft=True)
    with Image.open(images["large"]) as image:
        expected = full(image.convert("RGB"))
    assert full(images["large"]) == expected
    assert draft(images["large"]) != expected  # decoded at 1/8 scale: other pixels


def test_classifier_converts_pil_images_as_files_are() -> None:
    transparent = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    classifier = Classifier(create_model(MODEL), topk=3, device="cpu")
    assert classifier(transparent) == classifier(Image.new("RGB", (64, 48), "white"))


def test_classifier_top_k() -> None:
    classifier = Classifier(create_model(MODEL), topk=3, device="cpu")
    top = classifier(Image.fromarray(data.coffee()))
    assert len(top) == 3 and top[0].prob >= top[1].prob >= top[2].prob > 0
    assert [p.label for p in top] == [classifier.labels[p.index] for p in top]
    assert len(classifier.labels) == 1000 and classifier.labels[0] == "tench"
    assert labels_for(create_model(MODEL, num_classes=3).meta) == ("class 0", "class 1", "class 2")


@pytest.mark.parametrize(
    ("kwargs", "topk", "fragment"),
    [({}, 0, r"topk must be an integer in \[1, 1000\]"), ({"num_classes": 0}, 5, "num_classes=0")],
)
def test_classifier_rejects_bad_arguments(kwargs: dict, topk: int, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Classifier(create_model(MODEL, **kwargs), topk=topk)


def test_cli_text_and_per_file_errors(cli: Callable[..., tuple[int, str, str]], images: dict[str, Path]) -> None:
    argv = [str(images[k]) for k in ("rgb", "truncated", "grey", "text", "missing", "rgba")]
    code, out, err = cli("predict", MODEL, *argv, "--topk", "2", "--device", "cpu")
    assert code == 1
    for kind in ("rgb", "grey", "rgba"):
        assert f"{images[kind]}\n  1." in out
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 3 and all(line.startswith("mobilenets predict: error: image ") for line in errors)
    assert err.splitlines()[-1] == "mobilenets predict: 3 of 6 images could not be classified"
    assert "untrained" in err and "Traceback" not in err


def test_cli_refuses_images_over_the_pixel_limit_and_goes_on(
    cli: Callable[..., tuple[int, str, str]], images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between 1× and 2× Pillow's limit, Pillow itself only warns: such an image is refused too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 140_000)
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (500, 300)).save(bomb)  # 150 000 pixels: chelsea's 135 300 pass
    code, out, err = cli("predict", MODEL, str(bomb), str(images["rgb"]), "--topk", "1", "--device", "cpu")
    assert code == 1 and f"{images['rgb']}\n  1." in out and "bomb.png" not in out
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "bomb.png" in errors[0] and "150000 pixels" in errors[0]
    assert err.splitlines()[-1] == "mobilenets predict: 1 of 2 images could not be classified"


def test_cli_empty_image_path_is_an_error(cli: Callable[..., tuple[int, str, str]], images: dict[str, Path]) -> None:
    code, out, err = cli("predict", MODEL, str(images["rgb"]), "")
    assert code == 2 and out == ""
    assert "image path '' is empty" in err and len(err.strip().splitlines()) == 1


def test_cli_json(cli: Callable[..., tuple[int, str, str]], images: dict[str, Path]) -> None:
    code, out, _ = cli("predict", MODEL, str(images["large"]), str(images["grey16"]), "--json", "--draft")
    results = json.loads(out)
    assert code == 0 and [r["image"] for r in results] == [str(images["large"]), str(images["grey16"])]
    for result in results:
        assert len(result["top"]) == 5
        assert all(set(p) == {"index", "label", "prob"} and 0 <= p["prob"] <= 1 for p in result["top"])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--weights", "nowhere.pth"], "weights file 'nowhere.pth' does not exist"),
        (["--weights", "pretrained"], "weights 'pretrained' exist only for"),
        (["--topk", "1001"], "--topk must be an integer in [1, 1000]"),
        (["--topk", "0"], "--topk must be an integer in [1, 1000]"),
        (["--topk", "-2"], "--topk must be an integer in [1, 1000]"),
    ],
)
def test_cli_bad_arguments_are_one_line(
    cli: Callable[..., tuple[int, str, str]], images: dict[str, Path], argv: list[str], fragment: str
) -> None:
    code, out, err = cli("predict", MODEL, str(images["rgb"]), *argv)
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1


@needs_pretrained
def test_cli_pretrained_names_the_photo(cli: Callable[..., tuple[int, str, str]], images: dict[str, Path]) -> None:
    code, out, _ = cli("predict", "mobilenet_v2_1.0_224", "--weights", "pretrained", str(images["rgb"]))
    assert code == 0
    assert re.fullmatch(r"  1\. +[0-9.]+ %  .+ \(28[1-5]\)", out.splitlines()[1])  # ImageNet's cats


def test_console_script_bad_file_has_no_traceback(images: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenets", "predict", MODEL, str(images["text"]), "--weights", str(images["text"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "could not be read as PyTorch or safetensors" in proc.stderr


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for option in ("--weights", "--topk", "--draft", "--json", "--device", "pretrained", "exit status is then 1"):
        assert option in " ".join(out.split())


def test_cli_takes_folders_of_images(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    cat = Image.fromarray(data.chelsea()).resize((64, 48))
    for name in ("b/2.png", "a.jpg", "b/1.JPEG"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        cat.save(tmp_path / "photos" / name)
    (tmp_path / "photos" / "notes.txt").write_text("not an image\n")
    (tmp_path / "empty").mkdir()
    code, out, _ = cli("predict", MODEL, str(tmp_path / "photos"), "--json", "--topk", "1")
    names = [Path(r["image"]).relative_to(tmp_path / "photos").as_posix() for r in json.loads(out)]
    assert code == 0 and names == ["a.jpg", "b/1.JPEG", "b/2.png"]
    code, out, err = cli("predict", MODEL, str(tmp_path / "empty"))
    assert code == 2 and out == "" and "holds no image files" in err
