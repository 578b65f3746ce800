"""Export to ONNX (fp32, or int8 QDQ), TorchScript, OpenVINO IR (fp32, or int8 by NNCF) or ExecuTorch (fp32 or
int8), then verify against PyTorch.

Every artifact is written from the prepared model (BatchNorm folded) with a fixed input size and a
dynamic batch dimension (ExecuTorch: a batch of one image, :mod:`mobilenets.deploy.executorch`),
then loaded back in its runtime and compared with the original PyTorch model on the CPU:

* fp32: the largest absolute difference of the outputs on seeded random inputs at batch sizes
  1 and 3 (the second proves the batch dimension is dynamic; ExecuTorch's runner feeds them one
  image per call); it must not exceed ``tolerance · max(1, max |reference output|)``.
* int8: the top-1 agreement with fp32 PyTorch on at least ``min_eval_samples`` real images (and
  both accuracies when labels are given); it must reach ``min_agreement``. Fewer than
  ``min_calibration`` calibration images is an error before anything is written.

Any output that is not finite (NaN, ±inf) fails either check. A failed check raises
:class:`VerificationError`, which carries the report.

Every artifact records what a user needs to feed it (:func:`artifact_metadata`: model name,
input channels and resolution, mean and std, class names): ONNX ``metadata_props``, OpenVINO
``rt_info`` under ``mobilenets``, TorchScript the extra file ``mobilenets.json``, ExecuTorch a JSON
file beside the program (``m.pte.json``); :func:`read_artifact_metadata` reads it back.

ONNX goes through PyTorch's TorchScript-based exporter (``dynamo=False``, opset 18). For every
family it writes standard operators only (Conv, Clip, GlobalAveragePool, Gemm; Reshape and
Transpose for channel shuffles, plus a small Shape/Gather/Concat chain where a model reads its
batch size), and it is ten times faster than the ``torch.export``-based exporter (0.7–1.7 s vs
7–10 s per model on the 2-core development machine), whose graphs differ only in folding those
shape chains. Should PyTorch drop it, ``dynamo=True`` with ``dynamic_shapes`` for the batch is the
replacement.

TorchScript artifacts are ``torch.jit.trace``d and frozen (``.pt``; TorchScript is deprecated by
PyTorch but still supported, and it is what libtorch and PyTorch Mobile load). OpenVINO IR is
read from the ONNX file by OpenVINO's ONNX frontend (as ``openvino.convert_model`` does, without
its slower Python pipeline) and saved with fp32 weights (``.xml`` + ``.bin``); its int8 version is
the fp32 ONNX file quantized by NNCF (:func:`~mobilenets.deploy.quantize.quantize_openvino`).
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import check_writable_file
from ..models.base import check_resolution
from . import executorch
from .fuse import fold_batchnorm, input_shape
from .quantize import quantize_onnx, quantize_openvino
from .runtimes import Runner, load_runner, require

if TYPE_CHECKING:
    from .detection import DetectionExportReport

FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml", "executorch": executorch.SUFFIX}
INT8_FORMATS = ("onnx", "openvino", "executorch")
INT8_METHODS = {"executorch": "int8 PT2E", "openvino": "int8 NNCF"}  # others: ONNX Runtime's QDQ
FIXED_BATCH = {"executorch": executorch.BATCH}  # formats whose input takes one batch size only
INPUT_NAME, OUTPUT_NAME = "input", "output"
ONNX_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
DEFAULT_MIN_AGREEMENT = 0.95
# Below these, an int8 check says little: ranges from a handful of images, agreement in steps of 25 %.
DEFAULT_MIN_CALIBRATION = 100
DEFAULT_MIN_EVAL_SAMPLES = 100
METADATA_SECTION = "mobilenets"  # OpenVINO rt_info section; TorchScript extra file mobilenets.json
VERIFY_BATCHES = (1, 3)

# (images (B, C, H, W) float32, labels (B,) int64 or None)
Batch = tuple[np.ndarray, np.ndarray | None]


class VerificationError(RuntimeError):
    """The exported artifact does not reproduce the PyTorch model; ``report`` says by how much."""

    def __init__(self, report: ExportReport) -> None:
        super().__init__(report.summary())
        self.report = report


@dataclass(kw_only=True)
class ExportReport:
    """What was written and how well it reproduces PyTorch (fp32: output difference; int8: top-1)."""

    model: str
    format: str
    int8: bool
    resolution: int
    files: list[Path]
    samples: int
    passed: bool
    max_abs_diff: float | None = None
    max_allowed_diff: float | None = None
    agreement: float | None = None
    min_agreement: float | None = None
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    calibration_images: int | None = None
    calibration_asked: int | None = None
    min_eval_samples: int | None = None
    nonfinite: int = 0  # output values of the artifact that are NaN or ±inf
    batch: int | None = None  # the only batch size the artifact takes; None: any (dynamic)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = [str(path) for path in self.files]
        return out

    def summary(self) -> str:
        """One line: the verification and its verdict."""
        verdict = "passed" if self.passed else "FAILED"
        nonfinite = f"; {self.nonfinite} output values are NaN or infinite" if self.nonfinite else ""
        if not self.int8:
            batches = f"batch sizes {' and '.join(map(str, VERIFY_BATCHES))}"
            if self.batch is not None:
                batches += f" fed {self.batch} image per call"
            return (
                f"fp32 verification {verdict}: max |{self.format} − PyTorch| = {self.max_abs_diff:.2e} "
                f"(allowed {self.max_allowed_diff:.2e}) on {self.samples} random inputs, {batches}{nonfinite}"
            )
        too_few = ""
        if self.samples < self.min_eval_samples:
            too_few = f" (fewer than min_eval_samples {self.min_eval_samples})"
        text = (
            f"int8 verification {verdict}: top-1 agreement with fp32 PyTorch {100 * self.agreement:.1f}% "
            f"(required {100 * self.min_agreement:.1f}%) on {self.samples} verification images{too_few}, "
            f"calibrated on {self.calibration_images} images ({self.calibration_asked} asked){nonfinite}"
        )
        if self.accuracy_fp32 is not None and self.accuracy_int8 is not None:
            change = 100 * (self.accuracy_int8 - self.accuracy_fp32)
            text += (
                f"; accuracy fp32 {100 * self.accuracy_fp32:.2f}%, int8 {100 * self.accuracy_int8:.2f}% "
                f"({change:+.2f} points)"
            )
        return text

    def format_text(self) -> str:
        size = sum(path.stat().st_size for path in self.files) / 1e6
        wrote = ", ".join(str(path) for path in self.files)
        precision = INT8_METHODS.get(self.format, "int8 QDQ") if self.int8 else "fp32"
        batch = "dynamic batch" if self.batch is None else f"batch {self.batch}"
        return (
            f"wrote {wrote} ({self.model}, {self.format} {precision}, {self.resolution}×{self.resolution}, "
            f"{batch}, {size:.2f} MB)\n{self.summary()}"
        )


def check_destination(fmt: str, out: str | Path, int8: bool = False) -> Path:
    """Check the format (int8: one of :data:`INT8_FORMATS`) and that ``out`` has its suffix and can be
    written (with OpenVINO's ``.bin`` or ExecuTorch's metadata JSON beside it), in an existing folder;
    return ``out`` as a path. Raises ``ValueError`` naming the problem."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if int8 and fmt not in INT8_FORMATS:
        raise ValueError(f"int8 export needs format {', '.join(INT8_FORMATS[:-1])} or {INT8_FORMATS[-1]}, got {fmt!r}")
    out = Path(out)
    suffix = FORMATS[fmt]
    if out.suffix != suffix:
        raise ValueError(f"out must end with {suffix} for format {fmt}, got {str(out)!r}")
    for path in artifact_files(fmt, out):
        check_writable_file(path, "out")
    return out


def artifact_files(fmt: str, out: Path) -> list[Path]:
    """The files an artifact of format ``fmt`` written to ``out`` consists of."""
    if fmt == "openvino":
        return [out, out.with_suffix(".bin")]
    if fmt == "executorch":
        return [out, executorch.metadata_path(out)]
    return [out]


def artifact_metadata(model: nn.Module, resolution: int) -> dict[str, str]:
    """What an artifact records about its input and output, as strings (lists as JSON): ``model``,
    ``in_chans``, ``resolution``, and from ``model.meta`` when it has one ``mean``, ``std`` (of the
    0-1 scaled image), ``num_classes``, ``classes`` (class names in output order; ``[]`` if unknown) and,
    when the weights fix it, ``resize`` (the shorter side before the centre crop)."""
    meta = getattr(model, "meta", None)
    metadata = {
        "model": meta.name if meta else type(model).__name__,
        "in_chans": str(input_shape(model, resolution)[0]),
        "resolution": str(resolution),
    }
    if meta:
        metadata |= {
            "mean": json.dumps(list(meta.mean)),
            "std": json.dumps(list(meta.std)),
            "num_classes": str(meta.num_classes),
            "classes": json.dumps(list(meta.labels)),
        }
        if meta.resize:
            metadata["resize"] = str(meta.resize)
    return metadata


def read_artifact_metadata(path: str | Path, fmt: str) -> dict[str, str]:
    """What :func:`artifact_metadata` recorded in the artifact at ``path`` of format ``fmt``. Raises
    ``FileNotFoundError`` or ``ValueError`` (one line, naming the file) when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{fmt} file {str(path)!r} not found")
    if fmt == "executorch":
        source = executorch.metadata_path(path)
        if not source.is_file():
            raise ValueError(f"{str(path)!r} has no metadata file {str(source)!r} beside it: export it again")
        try:
            metadata = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"metadata file {str(source)!r} cannot be read: {err}") from err
    elif fmt == "onnx":
        onnx = require("onnx", "reading ONNX metadata")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # protobuf's DecodeError and others: not an ONNX file
            raise ValueError(f"{str(path)!r} is not an ONNX file: {err}") from err
        metadata = {prop.key: prop.value for prop in proto.metadata_props}
    elif fmt == "openvino":
        ov = require("openvino", "reading OpenVINO metadata")
        converted = ov.Core().read_model(str(path))
        metadata = {}
        if converted.has_rt_info([METADATA_SECTION]):
            section = converted.get_rt_info()[METADATA_SECTION]
            metadata = {key: value.astype(str) for key, value in section.items()}
    else:
        raise ValueError(f"format must be one of onnx, openvino, executorch, got {fmt!r}")
    if not isinstance(metadata, dict) or "model" not in metadata:
        raise ValueError(f"{str(path)!r} records no mobilenets metadata: export it with `mobilenets export`")
    return {str(key): str(value) for key, value in metadata.items()}


def export_onnx(model: nn.Module, path: str | Path, resolution: int) -> Path:
    """Write ``model`` (BatchNorm folded, CPU) as ONNX with input ``(batch, C, resolution, resolution)``,
    its :func:`artifact_metadata` in ``metadata_props`` (int8 quantization keeps them)."""
    onnx = require("onnx", "ONNX export")
    folded = fold_batchnorm(model).cpu()
    example = torch.zeros(2, *input_shape(folded, resolution))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice, tracer notices on fixed H and W
        torch.onnx.export(
            folded,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_metadata_props(proto, artifact_metadata(model, resolution))
    onnx.save(proto, str(path))
    return Path(path)


def export_qat_onnx(
    converted: torch.fx.GraphModule, path: str | Path, *, shape: tuple[int, int, int], metadata: dict[str, str]
) -> Path:
    """Write ``converted`` (a QAT model's int8 graph, ``executorch.convert_qat``) as ONNX with input
    ``(batch, *shape)``: each of its quantize and dequantize steps a QuantizeLinear or DequantizeLinear with
    the ranges QAT learnt (the QDQ form that ONNX Runtime and OpenVINO run in int8), ``metadata`` in
    ``metadata_props``."""
    onnx = require("onnx", "ONNX export")
    example = (torch.zeros(2, *shape),)
    program = torch.export.export(converted, example, dynamic_shapes=({0: torch.export.Dim.AUTO},))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            program,
            f=str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            verbose=False,  # no progress lines on stdout
        )
    proto = onnx.load(str(path))
    onnx.helper.set_metadata_props(proto, metadata)
    onnx.save(proto, str(path))
    return Path(path)


def write_qat_artifacts(
    converted: torch.fx.GraphModule,
    directory: str | Path,
    *,
    stem: str,
    shape: tuple[int, int, int],
    name: str,
    metadata: dict[str, str],
) -> dict[str, Path]:
    """Write a QAT model's int8 graph (``executorch.convert_qat``) for each int8 runtime into ``directory``,
    each with ``metadata``: ``stem.pte`` (+ its JSON) for ExecuTorch, ``stem.onnx`` (QDQ) for ONNX Runtime and
    ``stem.xml`` (+ ``.bin``, converted from that ONNX) for OpenVINO. Returns each file by its format, as
    :func:`~mobilenets.deploy.runtimes.load_runner` names them; ``name``: the model's, for errors."""
    directory = Path(directory)
    program = executorch.write_qat_program(converted, directory / f"{stem}{executorch.SUFFIX}", shape=shape, name=name)
    executorch.write_metadata(program, metadata)
    onnx_file = export_qat_onnx(converted, directory / f"{stem}.onnx", shape=shape, metadata=metadata)
    save_openvino(onnx_file, directory / f"{stem}.xml", metadata)
    return {"executorch": program, "onnx": onnx_file, "openvino": directory / f"{stem}.xml"}


def export_torchscript(model: nn.Module, path: str | Path, resolution: int) -> Path:
    """Write ``model`` (BatchNorm folded, CPU) as a traced, frozen TorchScript module, its
    :func:`artifact_metadata` as JSON in the extra file ``mobilenets.json``."""
    folded = fold_batchnorm(model).cpu()
    example = torch.zeros(2, *input_shape(folded, resolution))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice, tracer notices on fixed H and W
        frozen = torch.jit.freeze(torch.jit.trace(folded, example, check_trace=False))
        extra = {f"{METADATA_SECTION}.json": json.dumps(artifact_metadata(model, resolution))}
        torch.jit.save(frozen, str(path), _extra_files=extra)
    return Path(path)


def save_openvino(source: str | Path | Any, path: str | Path, metadata: dict[str, str]) -> list[Path]:
    """Write ``source``, an ONNX file (fp32 or int8 QDQ) or an ``openvino.Model``, as OpenVINO IR at
    ``path`` (.xml, plus its .bin), with ``metadata`` in ``rt_info`` under ``mobilenets``; fp32 weights
    stay fp32 rather than OpenVINO's default compression to fp16, int8 ones stay int8."""
    ov = require("openvino", "the openvino format")
    converted = ov.Core().read_model(str(source)) if isinstance(source, str | Path) else source
    for key, value in metadata.items():
        converted.set_rt_info(value, [METADATA_SECTION, key])
    ov.save_model(converted, str(path), compress_to_fp16=False)
    return [Path(path), Path(path).with_suffix(".bin")]


def write_artifact(
    model: nn.Module,
    fmt: str,
    out: Path,
    *,
    resolution: int,
    calibration: Sequence[np.ndarray] | None = None,
) -> list[Path]:
    """Write ``model`` in ``fmt`` to ``out`` (int8 when ``calibration`` batches are given); return the files."""
    if fmt == "torchscript":
        return [export_torchscript(model, out, resolution)]
    if fmt == "executorch":
        executorch.write_program(model, out, resolution, calibration)
        executorch.write_metadata(out, artifact_metadata(model, resolution))
        return artifact_files(fmt, out)
    with tempfile.TemporaryDirectory() as tmp:
        last_step = calibration is None and fmt == "onnx"
        onnx_path = export_onnx(model, out if last_step else Path(tmp) / "fp32.onnx", resolution)
        if fmt == "openvino":
            source = onnx_path if calibration is None else quantize_openvino(onnx_path, calibration)
            return save_openvino(source, out, artifact_metadata(model, resolution))
        if calibration is not None:
            quantize_onnx(onnx_path, out, calibration)
    return [out]


def _reference(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu().eval()


def _nonfinite(output: np.ndarray) -> int:
    return int(output.size - np.count_nonzero(np.isfinite(output)))


def _verify_fp32(model: nn.Module, runner: Runner, *, resolution: int, tolerance: float) -> dict[str, Any]:
    reference = _reference(model)
    generator = torch.Generator().manual_seed(0)
    worst, scale, nonfinite = 0.0, 1.0, 0
    for batch in VERIFY_BATCHES:
        x = torch.randn(batch, *input_shape(reference, resolution), generator=generator)
        with torch.no_grad():
            want = reference(x).numpy()
        got = runner(x.numpy())
        nonfinite += _nonfinite(got)
        # A wrong output shape (a batch dimension frozen at export, say) fails as an infinite difference;
        # np.maximum, unlike max(), keeps a NaN.
        worst = float(np.maximum(worst, np.abs(got - want).max() if got.shape == want.shape else math.inf))
        scale = max(scale, float(np.abs(want).max()))
    allowed = tolerance * scale
    return {
        "samples": sum(VERIFY_BATCHES),
        "max_abs_diff": worst,
        "max_allowed_diff": allowed,
        "nonfinite": nonfinite,
        "passed": nonfinite == 0 and worst <= allowed,
    }


def verify_int8(
    model: nn.Module, runner: Runner, *, evaluation: Iterable[Batch], min_agreement: float, min_samples: int
) -> dict[str, Any]:
    """The int8 ``runner`` against ``model`` in PyTorch on the ``evaluation`` batches: top-1 agreement, each
    one's top-1 where labels are given, non-finite outputs, and whether it passed ``min_agreement`` on at least
    ``min_samples`` images."""
    reference = _reference(model)
    agree = correct_fp32 = correct_int8 = total = nonfinite = 0
    labelled = True
    for images, labels in evaluation:
        labelled = labelled and labels is not None
        with torch.no_grad():
            want = reference(torch.from_numpy(images)).argmax(1).numpy()
        output = runner(images)
        nonfinite += _nonfinite(output)
        got = output.argmax(1)
        agree += int((got == want).sum())
        total += len(images)
        if labels is not None:
            correct_fp32 += int((want == labels).sum())
            correct_int8 += int((got == labels).sum())
    if not total:
        raise ValueError("evaluation data must hold at least one image")
    agreement = agree / total
    return {
        "samples": total,
        "agreement": agreement,
        "min_agreement": min_agreement,
        "accuracy_fp32": correct_fp32 / total if labelled else None,
        "accuracy_int8": correct_int8 / total if labelled else None,
        "min_eval_samples": min_samples,
        "nonfinite": nonfinite,
        "passed": nonfinite == 0 and total >= min_samples and agreement >= min_agreement,
    }


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    *,
    resolution: int | None = None,
    calibration: Sequence[np.ndarray] | None = None,
    evaluation: Iterable[Batch] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    calibration_asked: int | None = None,
    min_calibration: int = DEFAULT_MIN_CALIBRATION,
    min_eval_samples: int = DEFAULT_MIN_EVAL_SAMPLES,
) -> ExportReport | DetectionExportReport:
    """Export ``model`` to ``out`` in ``fmt``, then verify the artifact against PyTorch (see the module doc).

    ``calibration``: image batches (B, C, H, W) float32, normalised as the model expects; giving
    them makes the export int8 (:data:`INT8_FORMATS`); fewer than ``min_calibration`` images
    is a ``ValueError``. ``calibration_asked``: how many images were asked for (reported; default:
    as many as given). ``evaluation``: ``(images, labels)`` batches for the int8 check (labels may be
    ``None``), read once, at least ``min_eval_samples`` images; by default the calibration images.
    ``resolution`` defaults to ``model.meta.resolution``. Raises :class:`VerificationError` when the
    check fails (the artifact is left in place for inspection). A detector goes to
    :func:`~mobilenets.deploy.detection.export_detector` (fp32 only).
    """
    int8 = calibration is not None
    from .detection import INT8_REFUSED, export_detector, is_detector  # it builds on this module

    if is_detector(model):  # boxes, not logits: verified on real pictures by their detections
        if int8:
            raise ValueError(f"{INT8_REFUSED} (leave out --int8)")
        return export_detector(model, fmt, out, resolution=resolution, tolerance=tolerance)
    out = check_destination(fmt, out, int8)
    if not 0 < tolerance < math.inf:
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance}")
    if not 0 < min_agreement <= 1:
        raise ValueError(f"min_agreement must be in (0, 1], got {min_agreement}")
    for name, value in (("min_calibration", min_calibration), ("min_eval_samples", min_eval_samples)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    calibration_images = sum(len(images) for images in calibration) if int8 else None
    if int8:
        calibration_asked = calibration_images if calibration_asked is None else calibration_asked
        if calibration_images < min_calibration:
            raise ValueError(
                f"int8 calibration got {calibration_images} images ({calibration_asked} asked), fewer than "
                f"min_calibration {min_calibration}: give more images or lower min_calibration"
            )
    meta = getattr(model, "meta", None)
    resolution = check_resolution(resolution if resolution is not None else (meta.resolution if meta else 224))

    files = write_artifact(model, fmt, out, resolution=resolution, calibration=calibration)
    runner = load_runner(out, fmt, device="cpu")
    if int8:
        evaluation = [(images, None) for images in calibration] if evaluation is None else evaluation
        checks = verify_int8(
            model, runner, evaluation=evaluation, min_agreement=min_agreement, min_samples=min_eval_samples
        )
        checks |= {"calibration_images": calibration_images, "calibration_asked": calibration_asked}
    else:
        checks = _verify_fp32(model, runner, resolution=resolution, tolerance=tolerance)
    name = meta.name if meta else type(model).__name__
    report = ExportReport(
        model=name, format=fmt, int8=int8, resolution=resolution, files=files, batch=FIXED_BATCH.get(fmt), **checks
    )
    if not report.passed:
        raise VerificationError(report)
    return report
