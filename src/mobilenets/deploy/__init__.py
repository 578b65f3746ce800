"""Deployment: inference preparation, export with verification, int8 quantization, runtimes."""

from .export import (
    FORMATS,
    ExportReport,
    VerificationError,
    export_model,
    export_onnx,
    export_torchscript,
    write_artifact,
)
from .fuse import fold_batchnorm, prepare_for_inference
from .quantize import calibration_data, dataset_batches, quantize_onnx
from .runtimes import Runner, load_runner, onnx_runner, openvino_runner, torch_runner

__all__ = [
    "FORMATS",
    "ExportReport",
    "Runner",
    "VerificationError",
    "calibration_data",
    "dataset_batches",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "fold_batchnorm",
    "load_runner",
    "onnx_runner",
    "openvino_runner",
    "prepare_for_inference",
    "quantize_onnx",
    "torch_runner",
    "write_artifact",
]
