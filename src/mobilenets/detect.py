"""Detect objects in images: load a detector trained by ``mobilenets detect train`` or exported by
``mobilenets export`` (ONNX, OpenVINO IR), run it on image files, write the boxes as JSON and each
image with its boxes drawn.

Images are decoded by :func:`mobilenets.data.decode.decode_image` (upright, RGB) and given to the
detector at their own size, in 0-1: the detector normalises and resizes inside and answers in the
image's pixel coordinates. An exported detector (:class:`DetectorArtifact`) does the same through
its runtime and :mod:`mobilenets.deploy.detection`'s NumPy steps (resize, selection and NMS), as its
metadata says. Label ``i`` (1..K-1) is ``classes[i - 1]``; 0 is the background.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from torchvision.utils import draw_bounding_boxes

from .checkpoint import atomic_write, read_saved_weights
from .data.decode import decode_image
from .deploy.detection import DETECTION_FORMATS, Pipeline, detector_pipeline
from .deploy.export import read_artifact_metadata
from .deploy.runtimes import load_runner
from .device import resolve_device
from .predict import artifact_format, artifact_meta
from .registry import DETECTION, ModelMeta, create_model

DEFAULT_SCORE_THRESHOLD = 0.3


def read_detector_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, info) of a weights file or checkpoint written by ``mobilenets detect train``;
    ``ValueError`` for a classifier's weights or a file that records no detector."""
    state, info = read_saved_weights(path)
    where = f"weights {str(path)!r}"
    if info.get("task") != DETECTION:
        model = info.get("model")
        what = f"a classifier's ({model})" if model else "not from `mobilenets detect train` (they record no model)"
        raise ValueError(f"{where} are {what}; give a detector's weights from `mobilenets detect train`")
    missing = [key for key in ("model", "model_args", "classes") if key not in info]
    if missing:
        raise ValueError(f"{where} are a detector's but record no {' or '.join(missing)}: train it again")
    return state, info


def load_detector(path: str | os.PathLike) -> tuple[nn.Module, list[str]]:
    """The detector a weights file from ``mobilenets detect train`` records, with its weights loaded
    (eval mode, on the CPU), and its class names (label i is ``classes[i - 1]``)."""
    state, info = read_detector_weights(path)
    model = create_model(info["model"], **info["model_args"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"weights {str(path)!r} do not fit model {info['model']!r}: {str(err).splitlines()[0]}"
        ) from None
    classes = list(info["classes"])
    model.meta = replace(model.meta, weights=str(path), labels=tuple(classes))
    return model.eval(), classes


@dataclass(frozen=True, kw_only=True)
class DetectorArtifact:
    """An exported detector (``.onnx``, ``.xml``) in its runtime, with the :class:`ModelMeta` its metadata
    records; called as a torchvision detector in eval mode."""

    path: Path
    meta: ModelMeta
    pipeline: Pipeline

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Each image (3, H, W) float in 0-1 -> {"boxes" (N, 4) xyxy in its pixels, "scores", "labels"}."""
        found = []
        for image in images:
            picture = v2.functional.to_dtype(image.cpu(), torch.uint8, scale=True).permute(1, 2, 0).numpy()
            detections = self.pipeline(np.ascontiguousarray(picture))
            found.append({key: torch.from_numpy(value) for key, value in detections.items()})
        return found


def load_detector_artifact(
    path: str | os.PathLike, *, device: str | torch.device | None = None
) -> tuple[DetectorArtifact, list[str]]:
    """An exported detector in its runtime (default device: the CPU) and its class names (label i is
    ``classes[i - 1]``; ``class <i>`` where the export recorded none). ``ValueError`` (one line) for a
    classifier's export or a file that is not an export."""
    path = Path(path)
    fmt = artifact_format(path)
    if fmt is None:
        raise ValueError(f"{str(path)!r} is not an exported model: its suffix must be .onnx or .xml")
    metadata = read_artifact_metadata(path, fmt)
    if metadata.get("task") != DETECTION or fmt not in DETECTION_FORMATS:
        raise ValueError(
            f"{str(path)!r} holds the classifier {metadata.get('model')}, not a detector: run it with "
            f"`mobilenets predict --weights {path} IMAGES`"
        )
    meta = artifact_meta(path, metadata)
    classes = list(meta.labels) or [f"class {label}" for label in range(1, meta.num_classes)]
    pipeline = detector_pipeline(load_runner(path, fmt, device=device), metadata)
    return DetectorArtifact(path=path, meta=meta, pipeline=pipeline), classes


@dataclass(frozen=True, kw_only=True)
class Detection:
    """One object found: its box (x0, y0, x1, y1, pixels of the image), label (1..K-1), class name and score (0-1)."""

    box: tuple[float, float, float, float]
    label: int
    name: str
    score: float


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as the float tensor (3, H, W) in 0-1 that detectors take."""
    return v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True)


def class_colours(count: int) -> list[str]:
    """``count`` distinct colours (hex), one per class: matplotlib's tab10, then tab20's paler ones."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = [to_hex(c) for c in colormaps["tab10"].colors] + [to_hex(c) for c in colormaps["tab20"].colors[1::2]]
    return [palette[i % len(palette)] for i in range(count)]


def draw_detections(image: torch.Tensor, detections: list[Detection], classes: list[str]) -> torch.Tensor:
    """``image`` (uint8 (3, H, W)) with each detection's box drawn in its class's colour and labelled
    "name score" in white on that colour; boxes are 2 px wide (3 on images over 600 px)."""
    if not detections:
        return image
    colours = class_colours(len(classes))
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float32)
    return draw_bounding_boxes(
        image,
        boxes,
        labels=[f"{d.name} {d.score:.2f}" for d in detections],
        colors=[colours[(d.label - 1) % len(colours)] for d in detections],
        width=3 if max(image.shape[-2:]) > 600 else 2,
        label_colors="white",
        fill_labels=True,  # white text on the box's colour: readable on any background
    )


class Detector:
    """A detector ready to run on images: eval mode, on ``device`` (CUDA when available), keeping the
    detections scoring at least ``score_threshold``. ``model`` may be a :class:`DetectorArtifact`: its
    runtime then runs on the device it was loaded for, and ``device`` must be left out.

    ``detector(image)``: an image file or a PIL image -> (its pixels, float (3, H, W) in 0-1, and
    its detections, best first). Raises ``FileNotFoundError`` or ``ValueError`` (one line) for a file that
    cannot be read.
    """

    def __init__(
        self,
        model: nn.Module | DetectorArtifact,
        classes: list[str],
        *,
        device: str | torch.device | None = None,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    ) -> None:
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score threshold must be in [0, 1], got {score_threshold!r}")
        if isinstance(model, DetectorArtifact):
            if device is not None:
                raise ValueError("an artifact runs on the device it was loaded for: give it to load_detector_artifact")
            self.device, self.model = torch.device("cpu"), model
        else:
            self.device = resolve_device(device)
            self.model = model.eval().to(self.device)
        self.classes, self.score_threshold = list(classes), score_threshold

    def detect(self, pixels: torch.Tensor) -> list[Detection]:
        """The detections in one image, a float tensor (3, H, W) in 0-1, best first."""
        with torch.inference_mode():
            output = self.model([pixels.to(self.device)])[0]
        keep = output["scores"] >= self.score_threshold
        return [
            Detection(box=tuple(box), label=label, name=self.classes[label - 1], score=score)
            for box, label, score in zip(
                output["boxes"][keep].tolist(),
                output["labels"][keep].tolist(),
                output["scores"][keep].tolist(),
                strict=True,
            )
        ]

    def __call__(self, image: Image.Image | str | os.PathLike) -> tuple[torch.Tensor, list[Detection]]:
        if not isinstance(image, Image.Image):
            image = decode_image(image, mode="RGB")
        pixels = to_tensor(image.convert("RGB"))
        return pixels, self.detect(pixels)


def open_detector(
    weights: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> Detector:
    """A :class:`Detector` of ``weights``, whatever their kind: a weights file or checkpoint from
    ``mobilenets detect train`` (PyTorch), or a detector exported to ONNX or OpenVINO IR (its runtime)."""
    if artifact_format(weights) is not None:
        artifact, classes = load_detector_artifact(weights, device=device)
        return Detector(artifact, classes, score_threshold=score_threshold)
    model, classes = load_detector(weights)
    return Detector(model, classes, device=device, score_threshold=score_threshold)


def save_drawn(pixels: torch.Tensor, detections: list[Detection], classes: list[str], path: str | os.PathLike) -> None:
    """Write ``pixels`` (float (3, H, W) in 0-1) with the ``detections`` drawn (:func:`draw_detections`) as a PNG."""
    image = v2.functional.to_dtype(pixels.as_subclass(torch.Tensor).cpu(), torch.uint8, scale=True)
    buffer = io.BytesIO()
    v2.functional.to_pil_image(draw_detections(image, detections, classes)).save(buffer, format="png")
    atomic_write(path, buffer.getvalue())


def drawn_name(image: Path, taken: set[str]) -> str:
    """The file name of ``image`` drawn (``<stem>.png``; ``<stem>_2.png``... when taken), added to ``taken``."""
    name, n = f"{image.stem}.png", 1
    while name in taken:
        n += 1
        name = f"{image.stem}_{n}.png"
    taken.add(name)
    return name
