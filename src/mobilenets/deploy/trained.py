"""What users do after training, in one call: export a run's best weights to int8, verify them on the
held-out images, and time them beside fp32; or, for a detection run, export them in fp32, verify their
detections and time the network and the whole detector.

:func:`deploy_run` reads ``best.safetensors`` (with the data it was trained on, which it records) and
``report.json`` (the training figures) from a ``mobilenets train`` folder, writes ``model.onnx``
(fp32, verified on random inputs) and ``model-int8.onnx`` (int8 QDQ calibrated on training images,
verified on the held-out ones; OpenVINO: ``.xml`` + ``.bin``; ExecuTorch: ``.pte`` + its metadata
``.pte.json``) beside them, then times batch-1 latency of eager PyTorch and both files in turns
(:func:`mobilenets.bench.measure`). Without the format's extra (deploy; mobile for ExecuTorch) only
eager PyTorch is timed, and the report says so.

A run of ``mobilenets detect train`` (:func:`deploy_detection_run`) is exported to ``model.onnx`` or
``model.xml`` (fp32: int8 is for classifiers), its detections verified against PyTorch on the first
validation images of its data (:func:`~mobilenets.deploy.detection.export_detector`), then eager
PyTorch and the file are timed at batch 1, the network alone and end to end
(:func:`mobilenets.bench.benchmark_detector`).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bench import (
    DEFAULT_TIMING,
    BenchResult,
    Entry,
    Timing,
    benchmark_detector,
    check_threads,
    make_runner,
    measure,
    torch_threads,
)
from ..cost import count_cost
from ..registry import DETECTION
from ..train.run_files import BEST
from ..weights import WeightsFile, model_from, read_weights_source
from .detection import DETECTION_FORMATS, INT8_REFUSED, DetectionExportReport, export_detector, verification_pictures
from .export import DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_EVAL_SAMPLES, FORMATS, INT8_FORMATS, ExportReport, export_model
from .fuse import input_shape
from .quantize import DEFAULT_CALIB_SAMPLES, calibration_data
from .runtimes import Runner

# The Python packages each export format needs, and the extra that installs them.
NEEDS = {
    "onnx": ("onnx", "onnxruntime"),
    "openvino": ("onnx", "onnxruntime", "openvino"),
    "executorch": ("executorch", "torchao"),
}
EXTRA = {"onnx": "deploy", "openvino": "deploy", "executorch": "mobile"}
RUNTIME = {
    "onnx": ("onnx", "onnx-int8"),
    "openvino": ("openvino", "openvino-int8"),
    "executorch": ("executorch", "executorch-int8"),
}
# Where the exported files are deployed and timed; eager PyTorch is timed there too, so the three compare.
CPU = torch.device("cpu")
DEFAULT_EVAL_SAMPLES = 10_000  # held-out images the int8 check runs on, at most


def missing_packages(fmt: str) -> list[str]:
    """The packages of :data:`NEEDS` for ``fmt`` that are not installed (looked up, not imported: torchao's
    import logs a warning of PyTorch's that the export's own import keeps quiet)."""
    return [package for package in NEEDS[fmt] if importlib.util.find_spec(package) is None]


@dataclass(kw_only=True)
class DeployReport:
    """A trained run exported and timed. Latencies in ms at batch 1 (a detector's rows with a ``stage``:
    the network alone, or end to end); ``training``: the run's report.json."""

    run_dir: Path
    fmt: str
    training: dict[str, Any] | None
    params: int
    fp32: ExportReport | DetectionExportReport | None
    int8: ExportReport | None = None
    latency: list[BenchResult]
    skipped: str | None = None  # why the export was skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "format": self.fmt,
            "training": self.training,
            "params": self.params,
            "fp32": self.fp32.to_dict() if self.fp32 else None,
            "int8": self.int8.to_dict() if self.int8 else None,
            "latency": [result.to_dict() for result in self.latency],
            "skipped": self.skipped,
        }

    def _trained(self, t: dict[str, Any]) -> str:
        """The training line's score: top-1 of the best weights."""
        return (
            f"top-1 {100 * t['evaluation']['top1']:.2f} % on {t['evaluation']['images']:,} val images "
            f"(epoch {t['best']['epoch']} {t['best']['weights']} weights, the best on val)"
        )

    def _checks(self) -> list[str]:
        """The lines on how well the files reproduce PyTorch."""
        if self.int8 is None:
            return []
        r = self.int8
        return [
            f"accuracy   fp32 {100 * r.accuracy_fp32:.2f} %, int8 {100 * r.accuracy_int8:.2f} % on "
            f"{r.samples:,} val images; top-1 agreement {100 * r.agreement:.2f} % (required "
            f"{100 * r.min_agreement:.0f} %); int8 calibrated on {r.calibration_images:,} train images"
        ]

    def format(self) -> str:
        lines = []
        if self.training:
            t = self.training
            minutes, seconds = divmod(round(t["seconds"]), 60)
            lines.append(
                f"trained    {t['model']} on {t['data']} at {t['resolution']}×{t['resolution']}: "
                f"{minutes} min {seconds:02d} s, {t['train_images_per_s']:,.1f} images/s; {self._trained(t)}"
            )
        lines += self._checks()
        width = 20 if any(r.stage for r in self.latency) else 14
        for r in self.latency:
            runtime = f"{r.runtime}, {r.stage}" if r.stage else r.runtime
            lines.append(
                f"latency    {runtime:<{width}} p50 {r.p50_ms:.3f} ms, p90 {r.p90_ms:.3f} ms, IQR "
                f"{r.iqr_ms:.3f} ms over {r.repeats} calls ({r.device}, batch 1)"
            )
        reports = [(name, report) for name, report in (("fp32", self.fp32), ("int8", self.int8)) if report]
        size = f"size       {self.params / 1e6:.3f} M params"
        for name, report in reports:
            size += f", {name} {self.fmt} {sum(p.stat().st_size for p in report.files) / 1e3:,.0f} kB"
        lines.append(size)
        if self.skipped:
            lines.append(f"export     skipped: {self.skipped}")
        else:
            lines.append(f"files      {', '.join(str(path) for _, report in reports for path in report.files)}")
        return "\n".join(lines)


# The int8 options of deploy_run, by their command-line names: a detection run takes none of them.
INT8_OPTIONS = {
    "calib_samples": "--calib-samples",
    "eval_samples": "--eval-samples",
    "min_agreement": "--min-agreement",
    "min_eval_samples": "--min-eval-samples",
}


def deploy_run(
    run_dir: str | Path,
    *,
    fmt: str = "onnx",
    data: str | None = None,
    calib_samples: int | None = None,
    eval_samples: int | None = None,
    min_agreement: float | None = None,
    min_eval_samples: int | None = None,
    threads: int | None = None,
    timing: Timing = DEFAULT_TIMING,
) -> DeployReport | DetectionDeployReport:
    """Export ``run_dir``'s best weights (fp32 and int8, format ``fmt``: one of ``INT8_FORMATS``), verify them
    (int8: on up to ``eval_samples`` images (default 10,000) of ``data``'s val split, by default the run's
    data, calibrated on ``calib_samples``; None: the defaults), and time batch-1 latency of eager PyTorch and
    both files on the CPU with ``threads`` threads. A detection run goes to :func:`deploy_detection_run`
    (fp32 only: giving an int8 option is a ``ValueError``). Raises :class:`~mobilenets.deploy.VerificationError`
    when a check fails (files kept for inspection)."""
    run_dir = Path(run_dir)
    weights = run_dir / BEST
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: give a folder written by `mobilenets train` or `mobilenets detect train`"
        )
    threads = check_threads(threads)
    report_file = run_dir / "report.json"
    training = json.loads(report_file.read_text()) if report_file.is_file() else None
    read = read_weights_source(weights)  # read once: the model and the data it was trained on
    task = read.info.get("task")
    if task == DETECTION:
        given = {
            "calib_samples": calib_samples,
            "eval_samples": eval_samples,
            "min_agreement": min_agreement,
            "min_eval_samples": min_eval_samples,
        }
        int8 = [INT8_OPTIONS[name] for name, value in given.items() if value is not None]
        if int8:
            raise ValueError(f"{', '.join(int8)}: {INT8_REFUSED}; leave them out for a detection run")
        return deploy_detection_run(
            run_dir, read, training=training, fmt=fmt, data=data, threads=threads, timing=timing
        )
    if fmt not in INT8_FORMATS:
        raise ValueError(f"format must be one of {list(INT8_FORMATS)}, got {fmt!r}")
    if task is not None:  # embedding, multilabel: their int8 needs another check than top-1 agreement
        raise ValueError(
            f"{run_dir} is not a single-label classifier's run ({task}): `mobilenets deploy` verifies int8 by top-1 "
            f"agreement; export it "
            f"with `mobilenets export --weights {weights} --format onnx` and time it with `mobilenets bench`"
        )
    calib_samples = DEFAULT_CALIB_SAMPLES if calib_samples is None else calib_samples
    eval_samples = DEFAULT_EVAL_SAMPLES if eval_samples is None else eval_samples
    min_agreement = DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement
    min_eval_samples = DEFAULT_MIN_EVAL_SAMPLES if min_eval_samples is None else min_eval_samples
    data = data if data is not None else read.info.get("data")
    if not data:
        raise ValueError(f"{weights} records no training data: give the data to calibrate and verify on")
    model = model_from(read).eval()
    resolution = model.meta.resolution
    cost = count_cost(model, resolution, model.meta.name)
    entries = [_entry(model, "eager", None, threads=threads, mult_adds=cost.mult_adds)]
    fp32 = int8 = None
    missing = missing_packages(fmt)
    skipped = None
    if missing:
        extra = EXTRA[fmt]
        skipped = f"the {extra} extra is not installed ({', '.join(missing)}): pip install 'mobilenets[{extra}]'"
    else:
        suffix = FORMATS[fmt]
        fp32 = export_model(model, fmt, run_dir / f"model{suffix}", resolution=resolution)
        calibration, evaluation = calibration_data(
            data, model, resolution=resolution, calib_samples=calib_samples, eval_samples=eval_samples
        )
        int8 = export_model(
            model,
            fmt,
            run_dir / f"model-int8{suffix}",
            resolution=resolution,
            calibration=calibration,
            evaluation=evaluation,
            calibration_asked=calib_samples,
            min_agreement=min_agreement,
            min_eval_samples=min_eval_samples,
        )
        for runtime, report in zip(RUNTIME[fmt], (fp32, int8), strict=True):
            entries.append(_entry(model, runtime, report.files[0], threads=threads, mult_adds=cost.mult_adds))
    x = np.random.default_rng(0).standard_normal((1, *input_shape(model, resolution)), dtype=np.float32)
    with torch_threads(threads):
        latency = measure(entries, x, device=CPU, threads=threads, timing=timing)
    return DeployReport(
        run_dir=run_dir,
        fmt=fmt,
        training=training,
        params=cost.params,
        fp32=fp32,
        int8=int8,
        latency=latency,
        skipped=skipped,
    )


def _entry(model: torch.nn.Module, runtime: str, artifact: Path | None, *, threads: int, mult_adds: int) -> Entry:
    def build() -> Runner:
        return make_runner(model, runtime, artifact=artifact, device=CPU, threads=threads, batch=1, alone=False)

    return Entry(model=model.meta.name, runtime=runtime, build=build, mult_adds=mult_adds)


@dataclass(kw_only=True)
class DetectionDeployReport(DeployReport):
    """A detection run exported in fp32 (``fp32``: its detection verification), verified and timed."""

    def _trained(self, t: dict[str, Any]) -> str:
        m = t["metrics"]
        return (
            f"mAP@[.5:.95] {100 * m['map']:.2f} %, @.5 {100 * m['map50']:.2f} % on {t['val_images']:,} val images "
            f"(epoch {t['best']['epoch']} weights, the best on val)"
        )

    def _checks(self) -> list[str]:
        verified = [f"verified   {self.fp32.summary()}"] if self.fp32 is not None else []
        return [*verified, f"int8       not made: {INT8_REFUSED}"]


def deploy_detection_run(
    run_dir: Path,
    read: WeightsFile,
    *,
    training: dict[str, Any] | None,
    fmt: str = "onnx",
    data: str | None = None,
    threads: int,
    timing: Timing = DEFAULT_TIMING,
) -> DetectionDeployReport:
    """Export the detector of ``read`` (``run_dir``'s best weights; ``training``: its report.json) to
    ``run_dir/model.onnx`` or ``.xml`` (fp32), verify its detections against PyTorch on the first
    validation images of ``data`` (default: the run's), and time eager PyTorch and the file at batch 1
    on the CPU, network and end to end."""
    from ..detect import load_detector  # the detector API builds on this package

    if fmt not in DETECTION_FORMATS:
        raise ValueError(f"format must be {' or '.join(DETECTION_FORMATS)} for a detection run, got {fmt!r}")
    model, _ = load_detector(read.path)
    resolution = model.meta.resolution
    params = count_cost(model, resolution).params
    export, skipped, runtimes = None, None, ["eager"]
    missing = missing_packages(fmt)
    if missing:
        extra = EXTRA[fmt]
        skipped = f"the {extra} extra is not installed ({', '.join(missing)}): pip install 'mobilenets[{extra}]'"
    else:
        pictures = verification_pictures(data=data if data is not None else read.info.get("data"))
        export = export_detector(model, fmt, run_dir / f"model{FORMATS[fmt]}", pictures=pictures)
        runtimes.append(fmt)
    latency = benchmark_detector(
        model,
        runtimes,
        threads=threads,
        device=CPU,
        timing=timing,
        artifact=export.files[0] if export is not None else None,
    )
    return DetectionDeployReport(
        run_dir=run_dir,
        fmt=fmt,
        training=training,
        params=params,
        fp32=export,
        latency=latency,
        skipped=skipped,
    )
