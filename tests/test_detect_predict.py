import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets import create_model
from mobilenets.checkpoint import save_weights
from mobilenets.detect import Detection, Detector, class_colours, draw_detections, load_detector

from detect_fixtures import CLASSES, MODEL, RESOLUTION


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """An untrained detector's weights file as `detect train` writes it."""
    torch.manual_seed(0)
    arguments = {"num_classes": len(CLASSES) + 1, "resolution": RESOLUTION}
    net = create_model(MODEL, **arguments)
    path = tmp_path / "detector.safetensors"
    info = {"task": "detection", "model": MODEL, "model_args": arguments, "classes": CLASSES}
    save_weights(path, net.state_dict(), {**info, "mean": [0.5] * 3, "std": [0.5] * 3, "data": "unused"})
    return path


def photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_predict_writes_json_and_drawn_images_and_skips_an_unreadable_one(
    weights: Path, tmp_path: Path, cli: Any
) -> None:
    photo(tmp_path / "in" / "a.png", (80, 60), 0)
    photo(tmp_path / "in" / "sub" / "a.png", (64, 64), 1)  # the same name in another folder
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    code, out, err = cli(
        "detect", "predict", "--weights", str(weights), str(tmp_path / "in"), "--out", str(tmp_path / "out"),
        "--score-threshold", "0",
    )  # fmt: skip
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "broken.jpg" in lines[0] and "1 of 3 images" in lines[1]
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [Path(r["image"]).name for r in results] == ["a.png", "a.png"]
    assert len({r["drawn"] for r in results}) == 2
    first = results[0]
    assert first["detections"], "an untrained detector at score threshold 0 still proposes boxes"
    for found in first["detections"]:
        x0, y0, x1, y1 = found["box"]
        assert 0 <= x0 <= x1 <= 80 and 0 <= y0 <= y1 <= 60  # the image's own pixels
        assert found["name"] == CLASSES[found["label"] - 1] and 0 <= found["score"] <= 1
    drawn = np.asarray(Image.open(first["drawn"]))
    assert drawn.shape == (60, 80, 3)
    assert not np.array_equal(drawn, np.asarray(Image.open(tmp_path / "in" / "a.png")))
    assert "detections.json" in out


def test_score_threshold_keeps_only_confident_boxes(weights: Path, tmp_path: Path) -> None:
    model, classes = load_detector(weights)
    image = photo(tmp_path / "a.png", (64, 64), 0)
    everything = Detector(model, classes, score_threshold=0.0)(image)[1]
    confident = Detector(model, classes, score_threshold=0.5)(image)[1]
    assert everything and all(d.score >= 0.5 for d in confident)
    assert [d for d in everything if d.score >= 0.5] == confident


def test_each_class_is_drawn_in_its_own_colour() -> None:
    image = torch.zeros(3, 100, 100, dtype=torch.uint8)
    found = [
        Detection(box=(5, 5, 45, 45), label=1, name="red", score=0.9),
        Detection(box=(50, 50, 95, 95), label=2, name="green", score=0.8),
    ]
    drawn = draw_detections(image, found, CLASSES)
    colours = class_colours(len(CLASSES))
    assert len(set(colours)) == len(CLASSES)
    for detection, colour in zip(found, colours, strict=False):
        expected = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        x0, _, _, y1 = detection.box
        assert drawn[:, int(y1), int(x0) + 20].tolist() == expected  # the bottom edge, below the label


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--score-threshold", "1.5"], "--score-threshold must be in [0, 1]"),
        (["--out", "FILE"], "is a file"),
        (["--weights", "CLASSIFIER"], "a classifier's (mobilenet_v1_0.25_128)"),
        (["--weights", "MISSING"], "is not a file"),
    ],
)
def test_bad_input_is_one_line(weights: Path, tmp_path: Path, cli: Any, argv: list[str], expected: str) -> None:
    image = photo(tmp_path / "a.png", (32, 32), 0)
    (tmp_path / "file").write_text("")
    classifier = tmp_path / "classifier.safetensors"
    net = create_model("mobilenet_v1_0.25_128", num_classes=3)
    save_weights(classifier, net.state_dict(), {"model": "mobilenet_v1_0.25_128", "model_args": {"num_classes": 3}})
    paths = {"FILE": tmp_path / "file", "CLASSIFIER": classifier, "MISSING": tmp_path / "missing.safetensors"}
    options = {"--weights": str(weights), "--out": str(tmp_path / "out")}
    options.update(dict(zip(argv[::2], (str(paths.get(v, v)) for v in argv[1::2]), strict=True)))
    code, _, err = cli("detect", "predict", str(image), *(x for kv in options.items() for x in kv))
    assert code == 2 and err.startswith("mobilenets detect: error:") and expected in err, err
    assert len(err.strip().splitlines()) == 1
