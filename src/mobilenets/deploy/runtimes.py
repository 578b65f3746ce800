"""Runners: one callable per runtime, ``(N, C, H, W) float32 array -> (N, classes) float32 array``.

Every runtime is driven the same way so that export verification and benchmarks compare like
with like: a NumPy batch in, NumPy logits out (a CUDA run includes its copies to and from the
device). ONNX Runtime and OpenVINO are imported only when asked for (the ``[deploy]`` extra), ExecuTorch
likewise (the ``[mobile]`` extra; its runner is in :mod:`mobilenets.deploy.executorch`).
"""

from __future__ import annotations

import ctypes
import importlib
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from ..device import resolve_device
from .fuse import prepare_for_inference

Runner = Callable[[np.ndarray], np.ndarray]


def require(package: str, purpose: str, *, extra: str = "deploy") -> ModuleType:
    """Import an optional dependency, or say in one line how to install it (the package ``extra``)."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ValueError(f"{purpose} needs the {package!r} package: pip install 'mobilenets[{extra}]'") from err


def torch_runner(model: nn.Module, device: torch.device | str | None = None, compile: bool = False) -> Runner:
    """Eager PyTorch (``compile=True``: ``torch.compile``) on the prepared model: BN folded, channels_last."""
    device = resolve_device(device)
    prepared = prepare_for_inference(model, device)
    forward = torch.compile(prepared) if compile else prepared

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
            return forward(batch).float().cpu().numpy()

    return run


def torchscript_runner(path: str | Path, device: torch.device | str | None = None) -> Runner:
    """A saved TorchScript module."""
    device = resolve_device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        module = torch.jit.load(str(path), map_location=device)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return run


def ort_session_options(threads: int | None = None, spin: bool = True):
    """ONNX Runtime settings for latency: every graph optimisation (Conv+BN+activation fusion and
    the blocked NCHWc layout of the CPU kernels), ``threads`` intra-op threads, no inter-op pool.

    ``spin=False`` makes idle intra-op threads sleep instead of spinning: a little slower for this
    session, but its threads no longer take the cores from other work in the process (another
    session, another runtime) between its calls.
    """
    ort = require("onnxruntime", "the ONNX runtime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def onnx_runner(
    path: str | Path, *, threads: int | None = None, device: torch.device | str | None = None, spin: bool = True
) -> Runner:
    """An ONNX file in ONNX Runtime: the CUDA provider for a CUDA ``device`` (onnxruntime-gpu), else the CPU;
    ``spin`` as in :func:`ort_session_options`."""
    ort = require("onnxruntime", "the ONNX runtime")
    device = torch.device("cpu") if device is None else resolve_device(device)
    providers: list = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("runtime onnx on device cuda needs the onnxruntime-gpu package; use --device cpu")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    session = ort.InferenceSession(str(path), ort_session_options(threads, spin), providers=providers)
    input_name = session.get_inputs()[0].name
    return lambda x: session.run(None, {input_name: x})[0]


def openvino_config(threads: int | None = None) -> dict[str, object]:
    """OpenVINO CPU settings for latency: one stream, fp32 arithmetic (no silent bf16), ``threads`` threads."""
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


class _SignalStack(ctypes.Structure):
    """Linux's ``stack_t``."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Undo any change the block makes to this thread's alternate signal stack (Linux; elsewhere a no-op).

    Compiling a model with OpenVINO's CPU plugin (2026.4) leaves the calling thread an alternate
    signal stack of its own; after a second model, that stack is no longer valid, and CPython runs
    its signal handlers on the alternate stack, so the next signal that Python handles (Ctrl-C,
    SIGTERM during training, a data-loading process's SIGCHLD) crashed the process with a
    segmentation fault.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    libc.sigaltstack(None, ctypes.byref(before))
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)


def openvino_runner(
    path: str | Path, *, threads: int | None = None, device: torch.device | str | None = None, batch: int | None = None
) -> Runner:
    """An OpenVINO IR (``.xml``) or ONNX file on OpenVINO's CPU plugin (the only ``device`` accepted).

    ``batch`` fixes the batch dimension before compiling (faster than a dynamic one).
    """
    if device is not None and resolve_device(device).type != "cpu":
        raise ValueError("runtime openvino runs on the CPU here; use --device cpu")
    ov = require("openvino", "the OpenVINO runtime")
    core = ov.Core()
    model = core.read_model(str(path))
    if batch is not None:
        shape = model.input(0).get_partial_shape()
        shape[0] = batch
        model.reshape({model.input(0): shape})
    with kept_signal_stack():
        compiled = core.compile_model(model, "CPU", openvino_config(threads))
    request = compiled.create_infer_request()
    output = compiled.output(0)
    # The request reuses its output buffer: copy before the next call overwrites it.
    return lambda x: np.array(request.infer({0: x})[output], copy=True)


def load_runner(
    path: str | Path, fmt: str, *, threads: int | None = None, device: torch.device | str | None = None
) -> Runner:
    """A runner for an exported artifact of format ``fmt`` ("onnx", "torchscript", "openvino" or "executorch")."""
    if fmt == "executorch":
        from .executorch import executorch_runner  # imported here: that module builds on this one

        return executorch_runner(path, threads=threads, device=device)
    if fmt == "onnx":
        return onnx_runner(path, threads=threads, device=device)
    if fmt == "openvino":
        return openvino_runner(path, threads=threads, device=device)
    if fmt == "torchscript":
        return torchscript_runner(path, device)
    raise ValueError(f"format must be one of onnx, torchscript, openvino, executorch, got {fmt!r}")
