"""Quantization-aware training (``mobilenets train --qat``): a trained classifier fine-tuned through the
int8 fake quantization that ExecuTorch's XNNPACK backend runs, then written as an int8 program.

Post-training int8 loses most where a model has little to spare (α = 0.25, small inputs). QAT starts from
``--init``'s weights, exports the model for training and prepares it with the XNNPACK quantizer of
``mobilenets export --int8 --format executorch`` (:func:`~mobilenets.deploy.executorch.prepare_qat`): each
convolution trains with its BatchNorm folded in and its weights fake-quantized per output channel, each
activation fake-quantized with a range tracked as it trains. Each epoch validates the fake-quantized model
(its ranges fixed meanwhile), so the best epoch is the best in simulated int8. ``best.safetensors`` holds
that epoch's float weights (what ``eval``, ``export`` and ``deploy`` read); at the end its fake quantizers,
with their ranges, become one int8 graph, written as ``model-qat-int8.pte`` (+ ``.pte.json``) for ExecuTorch,
``model-qat-int8.onnx`` (QDQ) for ONNX Runtime and ``model-qat-int8.xml`` for OpenVINO; each runtime runs it on
the validation images, beside the post-training int8 program of ``--init`` (calibrated as ``mobilenets deploy``
does): the int8 accuracies to choose between.

The run is the usual one (progress bar, metrics, curves, checkpoints, exact resume), in float32, without
an EMA of the weights (the fake quantizers' ranges follow the raw weights), in one process.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import inspect_source
from ..deploy import executorch
from ..deploy.export import artifact_metadata, verify_int8, write_qat_artifacts
from ..deploy.quantize import calibration_data, dataset_batches
from ..deploy.runtimes import load_runner
from ..registry import create_model
from ..weights import init_from, model_from, read_weights_source
from .config import TrainConfig
from .distributed import Dist
from .evaluate import EvalResult
from .loop import Trainer, TrainResult
from .run_files import RunFiles

# Beside best.safetensors (`mobilenets deploy` writes its post-training model-int8.*): the same int8 graph for
# ExecuTorch, ONNX Runtime (QDQ) and OpenVINO (IR converted from that ONNX).
STEM = "model-qat-int8"
PROGRAM, ONNX_FILE, OPENVINO_FILE = f"{STEM}{executorch.SUFFIX}", f"{STEM}.onnx", f"{STEM}.xml"
# Options a QAT run cannot honour: its BatchNorm and layers live inside one exported graph.
REFUSED = ("freeze_bn", "freeze_features", "compile")


def check_qat(config: TrainConfig, env: Dist) -> None:
    """Raise ``ValueError`` (one line) for what a QAT run cannot do."""
    for name in REFUSED:
        if getattr(config, name):
            raise ValueError(f"{name} cannot be used with qat: the fake-quantized model is one exported graph")
    if config.amp not in ("auto", "none"):
        raise ValueError(f"amp must be 'auto' or 'none' with qat (it trains in float32), got {config.amp!r}")
    if env.enabled:
        raise ValueError("qat trains in one process: run it without torchrun")
    if inspect_source(config.data).multilabel:
        raise ValueError(f"qat is for single-label classifiers; data {config.data!r} is multi-label")


class QatRunFiles(RunFiles):
    """A QAT run's folder: ``best.safetensors`` holds the best epoch's float weights (``float_keys``); its whole
    fake-quantized state (``best_state``, ranges included) is kept for the int8 program and the checkpoint.
    ``report.json`` gains the int8 comparison (``int8``)."""

    def __init__(self, run_dir: Path, write: bool) -> None:
        super().__init__(run_dir, write)
        self.float_keys: set[str] = set()
        self.best_state: dict[str, torch.Tensor] = {}
        self.int8: dict[str, Any] = {}

    def save_best(self, state_dict: dict[str, Any], info: dict[str, Any]) -> None:
        self.best_state = {key: value.detach().clone() for key, value in state_dict.items()}
        super().save_best({key: value for key, value in state_dict.items() if key in self.float_keys}, info)

    def names(self) -> list[str]:
        *names, report = super().names()
        written = [PROGRAM, executorch.metadata_path(PROGRAM).name, ONNX_FILE, OPENVINO_FILE]
        return [*names, *written, Path(OPENVINO_FILE).with_suffix(".bin").name, report]

    def finish(self, evaluation: EvalResult, report: dict[str, Any]) -> None:
        super().finish(evaluation, {**report, "int8": self.int8})


@dataclass(kw_only=True)
class QatResult(TrainResult):
    """A QAT run's outcome: the usual one (its evaluation is of the best float weights) and ``int8``, the
    comparison of :meth:`QatTrainer.compare_int8`."""

    int8: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "int8": self.int8}

    def format(self) -> str:
        q = self.int8
        pct = {key: f"{100 * value:.2f} %" for key, value in q.items() if isinstance(value, float)}
        change = 100 * (q["qat_int8_top1"] - q["ptq_int8_top1"])
        return "\n".join(
            [
                super().format(),
                f"  int8       {q['program']}: top-1 {pct['qat_int8_top1']} on {q['images']:,} val images in "
                f"ExecuTorch (fake-quantized PyTorch {pct['qat_fake_quant_top1']}, agreement {pct['agreement']})",
                f"             the same int8 graph in ONNX Runtime {pct['qat_onnx_int8_top1']} ({q['onnx']}), in "
                f"OpenVINO {pct['qat_openvino_int8_top1']} ({q['openvino']})",
                f"  vs PTQ     {self.config.init}: fp32 {pct['init_fp32_top1']}, post-training int8 "
                f"{pct['ptq_int8_top1']} (calibrated on {q['ptq_calibration_images']:,} train images): QAT "
                f"{change:+.2f} points",
            ]
        )


class QatTrainer(Trainer):
    """The classifier's run on the fake-quantized model; see the module doc."""

    run_files = QatRunFiles

    def __init__(self, config: TrainConfig, resume: bool, env: Dist) -> None:
        config.validate()
        check_qat(config, env)
        super().__init__(replace(config, ema_decay=0.0, amp="none"), resume, env)
        if config.ema_decay:
            self.notes.append(f"qat: ema_decay {config.ema_decay} not used: no EMA of the weights with qat")

    def _build_model(self, resume: bool) -> None:
        super()._build_model(resume)  # the float classifier (--init's weights unless resumed) and its optimiser
        cfg = self.config
        self.init_model = create_model(self.name, **self.model_args)  # for post-training int8 at the end
        if not init_from(self.init_model, cfg.init):
            raise ValueError(
                f"init {cfg.init!r} does not classify the data's {len(self.classes)} classes: qat fine-tunes a "
                "trained classifier of them"
            )
        self.files.float_keys = set(self.net.state_dict())
        example = torch.zeros(2, self.in_chans, self.resolution, self.resolution, device=self.device)
        # The exported graph trains the float classifier's own parameters: the optimiser built for them stands.
        self.net = self.model = executorch.prepare_qat(self.net, example)
        self.notes.append(
            "qat: int8 fake quantization as ExecuTorch's XNNPACK backend runs it (weights per output channel, "
            f"BatchNorm folded in); at the end {self.run_dir / PROGRAM}"
        )

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        # Fake quantizers shared by several graph nodes appear under each name; a checkpoint stores each apart.
        state["model"] = {key: value.clone() for key, value in state["model"].items()}
        return {**state, "best_state": self.files.best_state}

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        executorch.load_qat_state(self.net, state["model"])  # again, with what the plain load leaves out
        self.files.best_state = state["best_state"]

    def _evaluate(self, model: nn.Module) -> EvalResult:
        """The fake-quantized model's evaluation, its ranges left as training made them."""
        with executorch.ranges_fixed(model):
            return super()._evaluate(model)

    def compare_int8(self) -> dict[str, Any]:
        """Write the best epoch's int8 graph as an ExecuTorch program, ONNX (QDQ) and OpenVINO IR, and measure each
        in its runtime on the validation images beside fake-quantized PyTorch, and beside the post-training int8
        program of ``--init`` (fractions)."""
        executorch.load_qat_state(self.net, self.files.best_state)
        shape = (self.in_chans, self.resolution, self.resolution)
        best = model_from(read_weights_source(self.files.best))  # its metadata: classes, mean, std
        files = write_qat_artifacts(
            executorch.convert_qat(self.net),
            self.run_dir,
            stem=STEM,
            shape=shape,
            name=self.name,
            metadata=artifact_metadata(best, self.resolution),
        )
        evaluation = list(dataset_batches(self.val_set))
        calibration, _ = calibration_data(self.config.data, self.init_model, resolution=self.resolution)
        threads = torch.get_num_threads()
        # verify_int8 counts top-1 of PyTorch and of the runtime, and their agreement; no threshold applies here.
        counts = {"evaluation": evaluation, "min_agreement": 1.0, "min_samples": 1}
        runners = {fmt: load_runner(path, fmt, threads=threads) for fmt, path in files.items()}
        with executorch.ranges_fixed(self.net):
            qat = {runtime: verify_int8(self.net, runner, **counts) for runtime, runner in runners.items()}
        with tempfile.TemporaryDirectory() as tmp:
            ptq_program = executorch.write_program(self.init_model, Path(tmp) / "ptq.pte", self.resolution, calibration)
            ptq = verify_int8(self.init_model, executorch.executorch_runner(ptq_program, threads=threads), **counts)
        return {
            "program": str(files["executorch"]),
            "onnx": str(files["onnx"]),
            "openvino": str(files["openvino"]),
            "images": qat["executorch"]["samples"],
            "qat_int8_top1": qat["executorch"]["accuracy_int8"],
            "qat_onnx_int8_top1": qat["onnx"]["accuracy_int8"],
            "qat_openvino_int8_top1": qat["openvino"]["accuracy_int8"],
            "qat_fake_quant_top1": qat["executorch"]["accuracy_fp32"],
            "agreement": qat["executorch"]["agreement"],
            "onnx_agreement": qat["onnx"]["agreement"],
            "openvino_agreement": qat["openvino"]["agreement"],
            "init_fp32_top1": ptq["accuracy_fp32"],
            "ptq_int8_top1": ptq["accuracy_int8"],
            "ptq_calibration_images": sum(len(images) for images in calibration),
            "nonfinite": sum(check["nonfinite"] for check in qat.values()) + ptq["nonfinite"],
        }

    def _finish(self) -> QatResult:
        self.files.int8 = self.compare_int8()
        result = super()._finish()
        return QatResult(**{f.name: getattr(result, f.name) for f in fields(result)}, int8=self.files.int8)
