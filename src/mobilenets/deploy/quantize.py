"""int8 post-training static quantization, calibrated on real images, weights per output channel.

* ONNX: ONNX Runtime's static quantizer writes a QDQ graph (QuantizeLinear / DequantizeLinear pairs
  around each convolution): activations by their min and max, per tensor, asymmetric; weights
  symmetric int8. It runs in ONNX Runtime's int8 kernels.
* OpenVINO: NNCF, OpenVINO's own quantizer, inserts FakeQuantize operations into the OpenVINO model
  (:func:`quantize_openvino`); besides the ranges it corrects the biases that quantization shifts.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import load_dataset
from .fuse import input_shape
from .runtimes import require

CALIBRATION_BATCH = 8  # images per calibration run
DEFAULT_CALIB_SAMPLES = 256  # images calibrated on
DEFAULT_EVAL_SAMPLES = 1000  # held-out images the int8 model is checked on


def dataset_batches(dataset: Dataset, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``dataset`` of ``(image tensor, label)`` as ``(images (B, C, H, W) float32, labels (B,) int64)`` batches,
    read lazily. Samples with a negative label (files that could not be decoded) are left out."""
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for index in range(len(dataset)):
        image, label = dataset[index]
        if int(label) >= 0:
            images.append(image)
            labels.append(int(label))
        if len(images) == batch_size or (index == len(dataset) - 1 and images):
            yield torch.stack(images).float().numpy(), np.array(labels, dtype=np.int64)
            images, labels = [], []


def calibration_data(
    source: str,
    model: nn.Module,
    *,
    resolution: int,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
) -> tuple[list[np.ndarray], Iterator[tuple[np.ndarray, np.ndarray | None]]]:
    """Real images for int8: calibration batches from the train split of ``source`` ("fashion-mnist"
    or an image folder) and ``(images, labels)`` batches from its val split, read lazily, both
    prepared for ``model`` (its ``meta`` normalisation, its input channels, ``resolution``) and
    randomly (seeded) subsampled. Labels are ``None`` unless the data's classes are the model's."""
    for name, value in (("calib_samples", calib_samples), ("eval_samples", eval_samples)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    meta = model.meta
    in_chans = input_shape(model, resolution)[0]

    def split(name: str, limit: int) -> Dataset:
        return load_dataset(
            source, name, resolution=resolution, in_chans=in_chans, mean=meta.mean, std=meta.std, limit=limit
        )

    calibration = [images for images, _ in dataset_batches(split("train", calib_samples))]
    held_out = split("val", eval_samples)
    labelled = len(held_out.classes) == meta.num_classes
    return calibration, ((images, labels if labelled else None) for images, labels in dataset_batches(held_out))


def _calibration_reader(input_name: str, batches: Sequence[np.ndarray]):
    """ONNX Runtime's calibration reader over ``batches``, re-cut into runs of :data:`CALIBRATION_BATCH` images
    and served a range at a time (``CalibStridedMinMax``), so that memory holds one run's activations."""
    quantization = require("onnxruntime.quantization", "int8 quantization")
    images = np.ascontiguousarray(np.concatenate(batches), dtype=np.float32)
    runs = [images[start : start + CALIBRATION_BATCH] for start in range(0, len(images), CALIBRATION_BATCH)]

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(runs))

        def __len__(self) -> int:
            return len(runs)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._runs: Iterator[np.ndarray] = iter(runs[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            run = next(self._runs, None)
            return None if run is None else {input_name: run}

    return Reader()


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calibration: Sequence[np.ndarray]) -> Path:
    """Write the int8 QDQ version of the fp32 ONNX model at ``fp32_path`` to ``out_path``.

    ``calibration``: image batches (B, C, H, W) float32, normalised as the model expects.
    """
    if not calibration:
        raise ValueError("calibration data must hold at least one batch of images")
    quantization = require("onnxruntime.quantization", "int8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx = require("onnx", "int8 quantization")
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference and constant folding first, as ONNX Runtime's quantization guide advises.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantization.quantize_static(
            str(prepared),
            str(out_path),
            _calibration_reader(input_name, calibration),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            # Ranges merged run by run: by default every activation of every image stays in memory
            # until the end (about 26 MB per image for MobileNetV2 at 224).
            extra_options={"CalibStridedMinMax": 1},
        )
    return Path(out_path)


@contextlib.contextmanager
def _nncf_output_on_stderr() -> Iterator[None]:
    """NNCF's progress bars (drawn on ``sys.stdout``) and log lines (its handlers hold the stdout of
    its import) on stderr: stdout is the command's output, JSON with ``--json``. Also silences the
    warning that PyTorch's extension builder, which NNCF loads, logs on a machine with a CUDA toolkit
    but no CUDA runtime: nothing to do with quantizing for OpenVINO."""
    handlers = [h for h in logging.getLogger("nncf").handlers if type(h) is logging.StreamHandler]
    streams = [handler.setStream(sys.stderr) for handler in handlers]
    builder_log = logging.getLogger("torch.utils.cpp_extension")
    level = builder_log.level
    builder_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        builder_log.setLevel(level)
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)


def quantize_openvino(fp32_path: str | Path, calibration: Sequence[np.ndarray]) -> Any:
    """The int8 ``openvino.Model`` of the fp32 ONNX model (or OpenVINO IR) at ``fp32_path``, quantized by NNCF.

    ``calibration``: image batches (B, C, H, W) float32, normalised as the model expects; NNCF sees
    every image, one at a time (its advice where statistics of whole batches can mislead). NNCF's
    performance preset (symmetric int8: weights per output channel, activations per tensor, unsigned
    after ReLU6) and its full bias correction: for ImageNet MobileNetV2 they measured 88.6 % top-1
    agreement with fp32 on crops of photos, where fast bias correction gave 77.6 % and the mixed
    preset (asymmetric activations) 85.5 %.
    """
    if not calibration:
        raise ValueError("calibration data must hold at least one batch of images")
    ov = require("openvino", "int8 quantization for OpenVINO")
    nncf = require("nncf", "int8 quantization for OpenVINO")
    images = np.concatenate(calibration).astype(np.float32, copy=False)
    dataset = nncf.Dataset([images[index : index + 1] for index in range(len(images))])
    # convert_model, not Core.read_model: its transformations fold the ONNX graph into the Convolution
    # + Add + Clamp patterns that NNCF knows where to quantize.
    model = ov.convert_model(str(fp32_path))
    with _nncf_output_on_stderr():
        return nncf.quantize(
            model,
            dataset,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(images),
            fast_bias_correction=False,
        )
