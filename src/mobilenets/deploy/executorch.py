"""ExecuTorch programs (``.pte``) for phones: the model lowered to XNNPACK, fp32 or int8, and their runner.

A program is written from the prepared model (BatchNorm folded) by ``torch.export`` at a fixed
input of :data:`BATCH` image, lowered with ExecuTorch's XNNPACK partitioner (every convolution,
activation, pooling and linear layer runs in XNNPACK; what it does not take, such as ShuffleNet V2's
channel split, runs in ExecuTorch's portable kernels) and serialised. The batch is fixed because a
dynamic one does not survive lowering for every family (ShuffleNet V2's split is specialised to the
example's batch), and a phone classifies one image at a time; the runner feeds a batch one image
per call.

int8 is PyTorch 2 export quantization (PT2E, from torchao) with ExecuTorch's XNNPACK quantizer:
weights int8, symmetric, per output channel; activations int8, per tensor; XNNPACK then runs the
quantized convolutions in int8. Post-training (:func:`write_program`), the activation ranges are
observed on calibration images. Quantization-aware training (:func:`prepare_qat`, then
:func:`write_qat_program`) fine-tunes the model exported for training with the same quantizer's fake
quantization, BatchNorm folded into each fake-quantized convolution, and learns the ranges as it goes.

ExecuTorch's Python runtime runs every program on one thread pool shared by the process (sized to
the processors by default). Its size can only be changed through an experimental binding that
replaces the pool, which would leave programs loaded before it with a pool that no longer exists:
the runner therefore resizes it only while no program loaded by this module is alive.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import types
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from ..checkpoint import atomic_write
from ..device import resolve_device
from ..errors import first_line
from .fuse import fold_batchnorm, input_shape
from .runtimes import Runner, require

SUFFIX = ".pte"
BATCH = 1  # images per call: the exported input is (BATCH, C, H, W)
EXTRA = "mobile"  # the package extra that installs ExecuTorch

# Runners whose programs use the current thread pool (see the module doc).
_live_runners: weakref.WeakSet = weakref.WeakSet()


def _require(package: str, purpose: str) -> ModuleType:
    """:func:`~mobilenets.deploy.runtimes.require` for the mobile extra, without the deprecation notice that
    torchao's import logs through PyTorch's pytree logger (about an Enum it registers)."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return require(package, purpose, extra=EXTRA)
    finally:
        logger.setLevel(level)


def metadata_path(path: str | Path) -> Path:
    """The JSON file beside a program that records what feeding it needs: ``m.pte`` -> ``m.pte.json``."""
    return Path(f"{path}.json")


def quantizer(*, qat: bool = False):
    """ExecuTorch's XNNPACK quantizer as every int8 program here uses it: int8 weights symmetric per output
    channel, int8 activations per tensor; ``qat``: its fake-quantizing form, for training."""
    xnnpack = _require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "int8 ExecuTorch programs")
    config = xnnpack.get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
    return xnnpack.XNNPACKQuantizer().set_global(config)


def _quantize(module: torch.fx.GraphModule, calibration: Sequence[np.ndarray], batch: int) -> torch.fx.GraphModule:
    """PT2E int8 of a module exported for ``batch`` images, its activation ranges observed on ``calibration``
    batches (B, C, H, W), fed ``batch`` images at a time (the last call wraps round to the first images)."""
    pt2e = _require("torchao.quantization.pt2e.quantize_pt2e", "int8 ExecuTorch export")
    prepared = pt2e.prepare_pt2e(module, quantizer())
    images = np.concatenate(list(calibration))
    with torch.no_grad():
        for start in range(0, len(images), batch):
            prepared(torch.from_numpy(images[np.arange(start, start + batch) % len(images)]))
    return pt2e.convert_pt2e(prepared)


def prepare_qat(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` exported for training (any batch size; ``example``: an input batch of two or more images on
    the model's device) and prepared for quantization-aware training with :func:`quantizer`: each
    convolution fake-quantized with its BatchNorm folded in, each activation fake-quantized, its range
    tracked. The result trains ``model``'s own parameters; its ``train()`` and ``eval()`` switch BatchNorm
    and dropout (an exported graph fixes everything else)."""
    pt2e = _require("torchao.quantization.pt2e.quantize_pt2e", "quantization-aware training")
    batch = {0: torch.export.Dim.DYNAMIC}
    program = torch.export.export(model.train(), (example,), dynamic_shapes=(batch,))
    prepared = pt2e.prepare_qat_pt2e(program.module(), quantizer(qat=True)).to(example.device)
    return _switchable(prepared)


def _switchable(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give the exported graph ``module``, and each deep copy of it, ``train()`` and ``eval()`` that switch
    its BatchNorm and dropout (torchao's ``move_exported_model_to_train/eval``) and otherwise behave as
    ``nn.Module``'s. torchao's own ``allow_exported_model_train_eval`` returns None, leaves ``training`` as
    it is and is lost by a deep copy, which then evaluates in whatever mode it was copied in."""
    module.train = types.MethodType(_train_exported, module)  # bound to the module, as torch.export does
    module.eval = types.MethodType(_eval_exported, module)
    if _switchable not in module._deepcopy_hooks:
        module._register_deepcopy_hook(_switchable)  # called with the copy; the copy inherits the hook
    return module


def _train_exported(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    pt2e = _require("torchao.quantization.pt2e", "quantization-aware training")
    # torchao skips a switch to the mode its flag records, and a deep copy loses the flag: switch in any
    # case (the rewrite leaves a graph already in that mode as it is).
    setattr(self, pt2e.export_utils._EXPORTED_TRAINING_ATTR, not mode)
    (pt2e.move_exported_model_to_train if mode else pt2e.move_exported_model_to_eval)(self)
    return nn.Module.train(self, mode)


def _eval_exported(self: torch.fx.GraphModule) -> torch.fx.GraphModule:
    return _train_exported(self, False)


def load_qat_state(prepared: torch.fx.GraphModule, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` (from ``state_dict()``, or a copy or checkpoint of it) into ``prepared`` (from
    :func:`prepare_qat`). torchao's observers keep a saved ``eps`` only from a state dict that records their
    version (its ``_metadata``), which copies and checkpoints drop: the metadata is ``prepared``'s own."""
    versioned = OrderedDict(state)
    versioned._metadata = prepared.state_dict()._metadata  # type: ignore[attr-defined]
    prepared.load_state_dict(versioned)


@contextmanager
def ranges_fixed(prepared: torch.fx.GraphModule) -> Iterator[torch.fx.GraphModule]:
    """Within the block, the fake quantizers of ``prepared`` (from :func:`prepare_qat`) keep their ranges:
    what it evaluates does not move them."""
    modes = _require("torchao.quantization.pt2e", "quantization-aware training")
    prepared.apply(modes.disable_observer)
    try:
        yield prepared
    finally:
        prepared.apply(modes.enable_observer)


def _lower(program: torch.export.ExportedProgram, name: str) -> bytes:
    """An exported program lowered to XNNPACK and serialised; ``ValueError`` (one line, naming the model ``name``)
    when ExecuTorch cannot lower it."""
    exir = _require("executorch.exir", "ExecuTorch export")
    partition = _require("executorch.backends.xnnpack.partition.xnnpack_partitioner", "ExecuTorch export")
    try:
        lowered = exir.to_edge_transform_and_lower(program, partitioner=[partition.XnnpackPartitioner()])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the serialiser's importlib.resources.read_binary
            return lowered.to_executorch().buffer
    except (RuntimeError, exir.error.ExportError) as err:  # ExecuTorch's own errors
        raise ValueError(f"ExecuTorch cannot export {name}: {first_line(err)}") from err


def _name(model: nn.Module) -> str:
    return getattr(getattr(model, "meta", None), "name", type(model).__name__)


def write_program(
    model: nn.Module,
    path: str | Path,
    resolution: int,
    calibration: Sequence[np.ndarray] | None = None,
    *,
    batch: int = BATCH,
) -> Path:
    """Write ``model`` (BatchNorm folded, CPU) as an ExecuTorch program lowered to XNNPACK, input
    ``(batch, C, resolution, resolution)``; int8 when ``calibration`` batches (normalised images) are given.
    A phone app's program takes :data:`BATCH`; ``bench`` writes one for each batch size it times.

    Raises ``ValueError`` with ExecuTorch's first line when the model cannot be exported or lowered.
    """
    _require("executorch.exir", "ExecuTorch export")
    if calibration is not None and not calibration:
        raise ValueError("calibration data must hold at least one batch of images")
    folded = fold_batchnorm(model).cpu().eval()
    example = (torch.zeros(batch, *input_shape(folded, resolution)),)
    try:
        program = torch.export.export(folded, example)
        if calibration is not None:
            program = torch.export.export(_quantize(program.module(), calibration, batch), example)
    except RuntimeError as err:  # torch.export's errors
        raise ValueError(f"ExecuTorch cannot export {_name(model)}: {first_line(err)}") from err
    atomic_write(path, _lower(program, _name(model)))
    return Path(path)


def convert_qat(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The int8 graph of ``prepared`` (from :func:`prepare_qat`, trained), on the CPU, in eval mode: its fake
    quantizers become int8 quantize and dequantize steps with the ranges they learnt, its BatchNorm folded
    into the convolutions. ``prepared`` itself is left as it is."""
    pt2e = _require("torchao.quantization.pt2e.quantize_pt2e", "int8 export of a QAT model")
    # XNNPACK lowering takes constants in one memory format: channels-last training weights fail it.
    inference = copy.deepcopy(prepared).to("cpu", memory_format=torch.contiguous_format).eval()
    return pt2e.convert_pt2e(inference)


def write_qat_program(
    converted: torch.fx.GraphModule, path: str | Path, *, shape: tuple[int, int, int], name: str
) -> Path:
    """Write ``converted`` (from :func:`convert_qat`) as an int8 ExecuTorch program, input ``(BATCH, *shape)``,
    whose quantized convolutions XNNPACK runs in int8; ``name``: the model's, for errors."""
    example = (torch.zeros(BATCH, *shape),)
    try:
        program = torch.export.export(converted, example)
    except RuntimeError as err:  # torch.export's errors
        raise ValueError(f"ExecuTorch cannot export {name}: {first_line(err)}") from err
    atomic_write(path, _lower(program, name))
    return Path(path)


def write_metadata(path: str | Path, metadata: dict[str, str]) -> Path:
    """Write ``metadata`` (what feeding the program at ``path`` needs) as JSON beside it; return that file."""
    target = metadata_path(path)
    atomic_write(target, (json.dumps(metadata, indent=1) + "\n").encode())
    return target


@contextmanager
def _native_logs_hidden() -> Iterator[None]:
    """Discard what is written to stderr within the block, by native code (file descriptor 2) or through
    ``sys.stderr``, where ExecuTorch's Python runtime sends its logs: its CPU probing, thread-pool changes
    and load failures, which the errors it raises say in one line."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _set_threads(portable, threads: int) -> None:
    """Size ExecuTorch's shared thread pool to ``threads``, unless it has that size already."""
    current = portable._threadpool_get_thread_count()
    if threads == current:
        return
    if len(_live_runners):
        raise ValueError(
            f"ExecuTorch's thread pool, shared by the process, has {current} threads and {len(_live_runners)} "
            f"loaded programs still use it: ask for {current} threads, or free those runners first"
        )
    portable._unsafe_reset_threadpool(threads)


def executorch_runner(
    path: str | Path, *, threads: int | None = None, device: torch.device | str | None = None
) -> Runner:
    """An ExecuTorch program (``.pte``) in ExecuTorch's Python runtime, on the CPU (the only ``device``
    accepted), ``threads`` threads (default: the pool as it is); a batch runs in calls of the program's batch
    size (one image for an exported program)."""
    if device is not None and resolve_device(device).type != "cpu":
        raise ValueError("runtime executorch runs on the CPU here; use --device cpu")
    runtime = _require("executorch.runtime", "the ExecuTorch runtime")
    portable = _require("executorch.extension.pybindings.portable_lib", "the ExecuTorch runtime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ExecuTorch program {str(path)!r} not found")
    with _native_logs_hidden():
        if threads is not None:
            _set_threads(portable, threads)
        try:
            program = runtime.Runtime.get().load_program(path)
            batch = program.load_method("forward").metadata.input_tensor_meta(0).sizes()[0]
        except RuntimeError as err:
            raise ValueError(f"{str(path)!r} cannot be loaded as an ExecuTorch program: {first_line(err)}") from err

    def run(x: np.ndarray) -> np.ndarray:
        method = program.load_method("forward")  # loaded once and cached by the program, which must stay alive
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        calls = [method.execute((images[start : start + batch],))[0] for start in range(0, len(images), batch)]
        return torch.cat(calls).numpy()

    _live_runners.add(run)
    return run
