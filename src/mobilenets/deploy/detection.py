"""Object detectors exported to ONNX or OpenVINO IR, verified against PyTorch, and the NumPy steps that
turn a picture into the artifact's input and its output into detections.

Every artifact has one input and one output, batch 1, fixed size (``R`` = the detector's resolution):

* input ``images``: (1, 3, R, R) float32, RGB in 0..1, *not* normalised: the graph subtracts the
  mean and divides by the std itself. A picture of another size is resized to R×R first
  (:func:`preprocess`).
* SSD and SSDLite: output ``detections`` (1, A, 4 + K), for each of the A anchors its decoded box
  (x0, y0, x1, y1 in pixels of the R×R input, clipped to it), then its K class probabilities
  (softmax; column 0 is the background). The selection is :func:`postprocess`, NumPy only, with
  the parameters the artifact records: per class, probabilities above ``score_thresh``, the best
  ``topk_candidates``, non-maximum suppression at IoU ``nms_thresh``; then the best
  ``detections_per_img`` of all classes, boxes scaled to the picture. It is left out of the graph
  because torchvision's selection traces to one NonZero/TopK/NMS chain per class (90 for COCO)
  with data-dependent shapes, while the network alone is a static graph that both runtimes
  compile ahead.
* Faster R-CNN: its region head runs on proposals that NMS selects, so the whole detector is the
  graph (RPN NMS, RoIAlign, per-class NMS: ONNX NonMaxSuppression and RoiAlign, run by ONNX Runtime
  and OpenVINO); output ``detections`` (N, 6): x0, y0, x1, y1 (pixels of the R×R input), score,
  label, by decreasing score, N ≤ ``detections_per_img``. :func:`postprocess` only scales the boxes.

Labels are 1..K-1, 0 being the background; the artifact records ``classes`` (label ``i`` is
``classes[i - 1]`` when known) with :func:`~mobilenets.deploy.export.artifact_metadata`'s other keys,
and ``task``, ``input``, ``output`` and ``postprocess`` (JSON of :class:`Postprocessing`).

Verification (:func:`export_detector`): real pictures, each :func:`preprocess`\\ ed once, go to the
PyTorch detector (fp32, CPU) and to the artifact + :func:`postprocess`; every detection of either
above the score floor must be matched by one of the other with the same label, IoU ≥ ``min_iou`` and
|Δscore| ≤ ``max_score_diff``, in any order (ties). The floor is the score threshold, raised to the
last kept score when a list is full (which of two tied detections makes the cut is arbitrary), plus
``max_score_diff``. SSD's raw output is also compared with PyTorch's: boxes within
``tolerance · R`` pixels, probabilities within ``tolerance``. Any NaN or infinite output fails.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..device import resolve_device
from ..models.base import check_resolution
from .export import (
    DEFAULT_TOLERANCE,
    FORMATS,
    ONNX_OPSET,
    VerificationError,
    _reference,
    artifact_metadata,
    check_destination,
    read_artifact_metadata,
    save_openvino,
)
from .fuse import fold_batchnorm, prepare_for_inference
from .runtimes import Runner, load_runner, require

DETECTION_FORMATS = ("onnx", "openvino")
INPUT_NAME, OUTPUT_NAME = "images", "detections"
SELECT, SCALE = "select", "scale"  # what postprocess does: SSD's selection and scaling, or scaling only
DEFAULT_MIN_IOU = 0.99
DEFAULT_MAX_SCORE_DIFF = 1e-3
DEFAULT_VERIFY_IMAGES = 8
INT8_REFUSED = "int8 export is for classifiers; a detector exports in fp32"

# A picture: (H, W, 3) uint8 RGB. Detections: {"boxes" (N, 4) float32 xyxy pixels, "scores" (N,), "labels" (N,) int64}.
Detections = dict[str, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class Postprocessing:
    """What :func:`postprocess` does with an artifact's output: ``kind`` :data:`SELECT` (SSD: the
    selection, then scaling) or :data:`SCALE` (the graph selected: scaling only), and the selection's
    parameters (the detector's own)."""

    kind: str
    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    detections_per_img: int

    @classmethod
    def of(cls, model: nn.Module) -> Postprocessing:
        """The post-processing of a torchvision ``SSD`` or ``FasterRCNN``."""
        from torchvision.models.detection.ssd import SSD

        if isinstance(model, SSD):
            return cls(
                kind=SELECT,
                score_thresh=model.score_thresh,
                nms_thresh=model.nms_thresh,
                topk_candidates=model.topk_candidates,
                detections_per_img=model.detections_per_img,
            )
        heads = model.roi_heads
        return cls(
            kind=SCALE,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            topk_candidates=model.rpn.post_nms_top_n(),
            detections_per_img=heads.detections_per_img,
        )


def is_detector(model: nn.Module) -> bool:
    """Whether ``model`` is one of torchvision's detectors (what the registry's detection entries build)."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.ssd import SSD

    return isinstance(model, SSD | GeneralizedRCNN)


class SSDNetwork(nn.Module):
    """An SSD's network for one R×R picture: normalisation, backbone, heads, box decoding against
    its anchors (computed once for R×R), softmax.

    ``forward``: (1, 3, R, R) in 0..1 -> (1, A, 4 + K): boxes xyxy in pixels, clipped to the input,
    then class probabilities.
    """

    def __init__(self, model: nn.Module, resolution: int) -> None:
        from torchvision.models.detection.image_list import ImageList

        super().__init__()
        self.backbone, self.head, self.box_coder = model.backbone, model.head, model.box_coder
        self.resolution = resolution
        self.register_buffer("mean", torch.tensor(model.transform.image_mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(model.transform.image_std).view(1, -1, 1, 1))
        device = next(model.parameters()).device
        example = torch.zeros(1, 3, resolution, resolution, device=device)
        with torch.no_grad():
            maps = list(model.backbone(example).values())
            anchors = model.anchor_generator(ImageList(example, [(resolution, resolution)]), maps)[0]
        self.register_buffer("anchors", anchors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(list(self.backbone((x - self.mean) / self.std).values()))
        boxes = self.box_coder.decode_single(out["bbox_regression"][0], self.anchors).clamp(0, self.resolution)
        return torch.cat([boxes[None], out["cls_logits"].softmax(-1)], dim=-1)


class WholeDetector(nn.Module):
    """A whole torchvision detector for one picture: (1, 3, R, R) in 0..1 -> (N, 6) detections,
    x0, y0, x1, y1, score, label (as float)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        found = self.model(list(x))[0]
        return torch.cat([found["boxes"], found["scores"][:, None], found["labels"][:, None].float()], dim=1)


def detector_network(model: nn.Module, resolution: int) -> nn.Module:
    """What a detector's artifact holds (see the module doc), eval mode: :class:`SSDNetwork` for an SSD,
    :class:`WholeDetector` for Faster R-CNN."""
    from torchvision.models.detection.ssd import SSD

    network = SSDNetwork(model, resolution) if isinstance(model, SSD) else WholeDetector(model)
    return network.eval()


def detector_resolution(model: nn.Module, resolution: int | None = None) -> int:
    """The input size a detector resizes every picture to (``model.meta.resolution``); another
    ``resolution`` is a ``ValueError``: the detector must be built at it."""
    built = model.meta.resolution
    if resolution is not None and check_resolution(resolution) != built:
        raise ValueError(
            f"resolution {resolution} differs from the {built} that {model.meta.name} resizes its input to; "
            f"build it at {resolution} (create_model(name, resolution={resolution}), --resolution)"
        )
    return built


def detection_metadata(model: nn.Module, resolution: int) -> dict[str, str]:
    """:func:`~mobilenets.deploy.export.artifact_metadata` and what the detector's artifact needs besides."""
    post = Postprocessing.of(model)
    if post.kind == SELECT:
        output = "(1, anchors, 4 + num_classes): boxes x0 y0 x1 y1 in input pixels, then class probabilities"
    else:
        output = "(N, 6): x0 y0 x1 y1 in input pixels, score, label; by decreasing score"
    return artifact_metadata(model, resolution) | {
        "task": "detection",
        "input": f"(1, 3, {resolution}, {resolution}) RGB in 0..1, normalised inside the graph",
        "output": output,
        "labels": "label 0 is the background; label i >= 1 is classes[i - 1]",
        "postprocess": json.dumps(asdict(post)),
    }


def export_detector_onnx(model: nn.Module, path: str | Path, resolution: int) -> Path:
    """Write detector ``model`` (BatchNorm folded, CPU) as ONNX (see the module doc), with
    :func:`detection_metadata` in ``metadata_props``."""
    onnx = require("onnx", "ONNX export")
    network = detector_network(fold_batchnorm(model).cpu(), resolution)
    example = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice, tracer notices
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_metadata_props(proto, detection_metadata(model, resolution))
    onnx.save(proto, str(path))
    return Path(path)


def write_detector(model: nn.Module, fmt: str, out: Path, *, resolution: int) -> list[Path]:
    """Write detector ``model`` in ``fmt`` (onnx or openvino) to ``out``; return the files."""
    if fmt == "onnx":
        return [export_detector_onnx(model, out, resolution)]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_detector_onnx(model, Path(tmp) / "fp32.onnx", resolution)
        return save_openvino(onnx_path, out, detection_metadata(model, resolution))


def preprocess(image: np.ndarray, resolution: int) -> np.ndarray:
    """A picture (H, W, 3) uint8 RGB as an artifact's input: (1, 3, R, R) float32 in 0..1, resized
    bilinearly (PIL) when not R×R."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    if image.shape[:2] != (resolution, resolution):
        image = np.asarray(Image.fromarray(image).resize((resolution, resolution), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), xyxy: (N, M)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def select(boxes: np.ndarray, probs: np.ndarray, post: Postprocessing) -> Detections:
    """SSD's selection, as torchvision's ``SSD.postprocess_detections``: boxes (A, 4), probabilities
    (A, K) -> the best ``detections_per_img`` after per-class NMS, by decreasing score.

    Candidates of all classes are visited by decreasing score, each kept unless a kept one of its
    class overlaps it above ``nms_thresh``; this keeps what per-class NMS keeps, and stops once the
    list is full.
    """
    scores = probs[:, 1:]
    top = np.argsort(-scores, axis=0, kind="stable")[: post.topk_candidates]  # (k, K - 1) anchor indices
    top_scores = np.take_along_axis(scores, top, axis=0)
    anchor = top.ravel()
    label = np.broadcast_to(np.arange(1, probs.shape[1]), top.shape).ravel()
    score = top_scores.ravel()
    passed = np.flatnonzero(score > post.score_thresh)
    order = passed[np.argsort(-score[passed], kind="stable")]
    kept: list[int] = []
    by_label: dict[int, list[int]] = {}
    for index in order:
        same = by_label.setdefault(int(label[index]), [])
        box = boxes[anchor[index]][None]
        if same and box_iou(box, boxes[anchor[same]]).max() > post.nms_thresh:
            continue
        same.append(int(index))
        kept.append(int(index))
        if len(kept) == post.detections_per_img:
            break
    keep = np.array(kept, dtype=np.int64)
    return {
        "boxes": boxes[anchor[keep]].astype(np.float32).reshape(-1, 4),
        "scores": score[keep].astype(np.float32),
        "labels": label[keep].astype(np.int64),
    }


def scale_boxes(found: Detections, *, resolution: int, size: tuple[int, int]) -> Detections:
    """``found`` with its boxes taken from the R×R input's pixels to those of a picture of ``size`` (height, width)."""
    height, width = size
    scale = np.array([width, height, width, height], dtype=np.float32) / resolution
    return found | {"boxes": found["boxes"] * scale}


def postprocess(output: np.ndarray, post: Postprocessing, *, resolution: int, size: tuple[int, int]) -> Detections:
    """An artifact's output as detections in the pixels of a picture of ``size`` (height, width)
    (see the module doc)."""
    if post.kind == SELECT:
        found = select(output[0, :, :4], output[0, :, 4:], post)
    else:
        found = {
            "boxes": output[:, :4].astype(np.float32),
            "scores": output[:, 4].astype(np.float32),
            "labels": np.rint(output[:, 5]).astype(np.int64),
        }
    return scale_boxes(found, resolution=resolution, size=size)


Pipeline = Callable[[np.ndarray], Detections]  # picture (H, W, 3) uint8 -> detections in its pixels


def detector_pipeline(runner: Runner, metadata: dict[str, str]) -> Pipeline:
    """An artifact's runner as a picture's detections: :func:`preprocess`, ``runner``, :func:`postprocess`
    as the artifact's ``metadata`` says."""
    post = Postprocessing(**json.loads(metadata["postprocess"]))
    resolution = int(metadata["resolution"])

    def detect(picture: np.ndarray) -> Detections:
        output = runner(preprocess(picture, resolution))
        return postprocess(output, post, resolution=resolution, size=picture.shape[:2])

    return detect


def load_detector_pipeline(
    path: str | Path, fmt: str, *, threads: int | None = None, device: torch.device | str | None = None
) -> Pipeline:
    """The :func:`detector_pipeline` of the artifact at ``path`` (format onnx or openvino)."""
    return detector_pipeline(load_runner(path, fmt, threads=threads, device=device), read_artifact_metadata(path, fmt))


def torch_pipeline(model: nn.Module, *, device: torch.device | str | None = None) -> Pipeline:
    """The PyTorch detector as a :class:`Pipeline` on ``device``: :func:`preprocess`, then the detector
    (BatchNorm folded, channels_last) with its own decoding and NMS (torchvision's)."""
    resolution = detector_resolution(model)
    device = resolve_device(device)
    prepared = prepare_for_inference(model, device)

    def detect(picture: np.ndarray) -> Detections:
        x = torch.from_numpy(preprocess(picture, resolution)[0]).to(device)
        with torch.inference_mode():
            found = {key: value.cpu().numpy() for key, value in prepared([x])[0].items()}
        return scale_boxes(found, resolution=resolution, size=picture.shape[:2])

    return detect


def torch_network_runner(model: nn.Module, *, device: torch.device | str | None = None) -> Runner:
    """The network a detector's artifact holds (:func:`detector_network`), in eager PyTorch on ``device``:
    BatchNorm folded, channels_last; (1, 3, R, R) float32 in 0..1 -> its output, as NumPy."""
    device = resolve_device(device)
    network = detector_network(prepare_for_inference(model, device), detector_resolution(model))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)).cpu().numpy()

    return run


def torch_detections(model: nn.Module, x: torch.Tensor) -> Detections:
    """PyTorch detector ``model``'s detections of one picture ``x`` (3, H, W) in 0..1, as NumPy."""
    with torch.no_grad():
        found = model([x])[0]
    return {key: value.cpu().numpy() for key, value in found.items()}


@dataclass
class Comparison:
    """Detections compared, those matched by none, those excused as NMS near-ties (the other list kept
    an overlapping one of their class and score instead: which of two survives is a draw), and the
    lowest IoU of a match (1 when none)."""

    compared: int = 0
    unmatched: int = 0
    ties: int = 0
    worst_iou: float = 1.0

    def __add__(self, other: Comparison) -> Comparison:
        return Comparison(
            compared=self.compared + other.compared,
            unmatched=self.unmatched + other.unmatched,
            ties=self.ties + other.ties,
            worst_iou=min(self.worst_iou, other.worst_iou),
        )


def match_detections(
    want: Detections, got: Detections, *, floor: float, min_iou: float, max_score_diff: float, nms_iou: float
) -> Comparison:
    """``want``'s detections scoring above ``floor``, each matched by the detection of ``got`` with its
    label, |Δscore| ≤ ``max_score_diff`` and the highest IoU when that is ≥ ``min_iou``; one whose
    best IoU is above ``nms_iou`` (NMS kept that one instead) is a tie."""
    result = Comparison()
    for box, score, label in zip(want["boxes"], want["scores"], want["labels"], strict=True):
        if score <= floor:
            continue
        same = (got["labels"] == label) & (np.abs(got["scores"] - score) <= max_score_diff)
        best = float(box_iou(box[None], got["boxes"][same]).max()) if same.any() else 0.0
        result.compared += 1
        if best >= min_iou:
            result.worst_iou = min(result.worst_iou, best)
        elif best > nms_iou:
            result.ties += 1
        else:
            result.unmatched += 1
    return result


def compare_detections(
    want: Detections, got: Detections, post: Postprocessing, *, threshold: float, min_iou: float, max_score_diff: float
) -> Comparison:
    """:func:`match_detections` both ways above the floor: ``threshold``, raised to the last kept score
    of a full list (which of tied detections make the cut is a draw), plus ``max_score_diff``."""
    cuts = [float(d["scores"].min()) for d in (want, got) if len(d["scores"]) >= post.detections_per_img]
    floor = max([threshold, *cuts]) + max_score_diff
    limits = {"floor": floor, "min_iou": min_iou, "max_score_diff": max_score_diff, "nms_iou": post.nms_thresh}
    return match_detections(want, got, **limits) + match_detections(got, want, **limits)


@dataclass(kw_only=True)
class DetectionExportReport:
    """What was written and how well it reproduces the PyTorch detector on real pictures."""

    model: str
    format: str
    resolution: int
    files: list[Path]
    postprocess: str
    images: int
    compared: int  # detections above the floor, of both lists
    unmatched: int
    ties: int  # NMS near-ties (see Comparison)
    worst_iou: float  # lowest IoU of a match
    min_iou: float
    max_score_diff: float
    max_box_diff: float | None  # SSD's raw output vs PyTorch: pixels
    max_prob_diff: float | None
    tolerance: float
    nonfinite: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"files": [str(path) for path in self.files]}

    def summary(self) -> str:
        """One line: the verification and its verdict."""
        verdict = "passed" if self.passed else "FAILED"
        text = (
            f"detection verification {verdict}: {self.compared - self.unmatched - self.ties} of {self.compared} "
            f"detections of PyTorch and {self.format} on {self.images} images matched (same class, IoU >= "
            f"{self.min_iou:g}, |score difference| <= {self.max_score_diff:g}; lowest IoU {self.worst_iou:.4f}), "
            f"{self.ties} NMS near-ties, {self.unmatched} unmatched"
        )
        if self.max_box_diff is not None:
            text += (
                f"; raw output vs PyTorch: boxes {self.max_box_diff:.2e} px (allowed "
                f"{self.tolerance * self.resolution:.2e}), probabilities {self.max_prob_diff:.2e} (allowed "
                f"{self.tolerance:.2e})"
            )
        if self.nonfinite:
            text += f"; {self.nonfinite} output values are NaN or infinite"
        return text

    def format_text(self) -> str:
        size = sum(path.stat().st_size for path in self.files) / 1e6
        wrote = ", ".join(str(path) for path in self.files)
        steps = "then NumPy selection and NMS (postprocess)" if self.postprocess == SELECT else "NMS in the graph"
        return (
            f"wrote {wrote} ({self.model}, {self.format} fp32 detector, input (1, 3, {self.resolution}, "
            f"{self.resolution}) RGB 0..1, {steps}, {size:.2f} MB)\n{self.summary()}"
        )


def verification_pictures(
    count: int = DEFAULT_VERIFY_IMAGES, *, data: str | None = None, cache_dir: str | Path | None = None
) -> list[np.ndarray]:
    """The first ``count`` validation images of detection ``data`` (default: the built-in scenes),
    (H, W, 3) uint8 RGB."""
    from ..data.decode import decode_image
    from ..data.detection import DEFAULT_DETECTION_DATA, load_detection_dataset

    found = load_detection_dataset(
        data or DEFAULT_DETECTION_DATA, "val", train=False, resolution=32, limit=count, cache_dir=cache_dir
    )
    return [np.asarray(decode_image(record.path).convert("RGB")) for record in found.images]


def export_detector(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    *,
    pictures: Sequence[np.ndarray] | None = None,
    resolution: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    min_iou: float = DEFAULT_MIN_IOU,
    max_score_diff: float = DEFAULT_MAX_SCORE_DIFF,
    score_threshold: float | None = None,
) -> DetectionExportReport:
    """Export detector ``model`` to ``out`` in ``fmt`` (onnx or openvino), then verify the artifact on
    ``pictures`` ((H, W, 3) uint8 RGB; default :func:`verification_pictures`) against PyTorch (see the
    module doc). ``score_threshold``: the lowest score compared (default: the detector's own).
    Raises :class:`~mobilenets.deploy.export.VerificationError` when the check fails (the artifact is
    left in place for inspection)."""
    if fmt not in DETECTION_FORMATS:
        shown = f"{fmt!r}" if fmt not in FORMATS else f"{fmt} (classifiers only)"
        raise ValueError(f"format must be {' or '.join(DETECTION_FORMATS)} for a detector, got {shown}")
    out = check_destination(fmt, out)
    if not 0 < tolerance < math.inf:
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance}")
    if not 0 < min_iou <= 1:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    for name, value in (("max_score_diff", max_score_diff), ("score_threshold", score_threshold)):
        if value is not None and not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    resolution = detector_resolution(model, resolution)
    pictures = verification_pictures() if pictures is None else list(pictures)
    if not pictures:
        raise ValueError("pictures must hold at least one image to verify the detector on")
    inputs = [preprocess(picture, resolution) for picture in pictures]

    files = write_detector(model, fmt, out, resolution=resolution)
    runner = load_runner(out, fmt, device="cpu")
    reference = _reference(model)
    post = Postprocessing.of(reference)
    threshold = post.score_thresh if score_threshold is None else score_threshold
    network = detector_network(reference, resolution) if post.kind == SELECT else None
    comparison, nonfinite, box_diff, prob_diff = Comparison(), 0, 0.0, 0.0
    for x in inputs:
        output = runner(x)
        nonfinite += int(output.size - np.count_nonzero(np.isfinite(output)))
        want = torch_detections(reference, torch.from_numpy(x[0]))
        got = postprocess(output, post, resolution=resolution, size=(resolution, resolution))
        if network is not None:
            with torch.no_grad():
                raw = network(torch.from_numpy(x)).numpy()
            diff = np.abs(output - raw) if output.shape == raw.shape else np.full((1, 1, 5), np.inf)
            box_diff = float(np.maximum(box_diff, diff[..., :4].max()))
            prob_diff = float(np.maximum(prob_diff, diff[..., 4:].max()))
        comparison += compare_detections(
            want, got, post, threshold=threshold, min_iou=min_iou, max_score_diff=max_score_diff
        )
    raw_ok = network is None or (box_diff <= tolerance * resolution and prob_diff <= tolerance)
    report = DetectionExportReport(
        model=model.meta.name,
        format=fmt,
        resolution=resolution,
        files=files,
        postprocess=post.kind,
        images=len(inputs),
        compared=comparison.compared,
        unmatched=comparison.unmatched,
        ties=comparison.ties,
        worst_iou=comparison.worst_iou,
        min_iou=min_iou,
        max_score_diff=max_score_diff,
        max_box_diff=box_diff if network is not None else None,
        max_prob_diff=prob_diff if network is not None else None,
        tolerance=tolerance,
        nonfinite=nonfinite,
        passed=nonfinite == 0 and comparison.unmatched == 0 and raw_ok,
    )
    if not report.passed:
        raise VerificationError(report)
    return report
