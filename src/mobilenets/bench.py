"""Latency benchmarks on this machine: each runtime timed the same way, against the GEMM peak.

Runtimes (every one runs the prepared model: BatchNorm folded):

* ``eager``: PyTorch, channels_last; ``compile``: ``torch.compile`` (inductor) of the same.
* ``onnx``: ONNX Runtime, every graph optimisation (conv+activation fusion, NCHWc kernels).
* ``onnx-int8``: the same after int8 QDQ static quantization (per-channel weights).
* ``openvino``, ``openvino-int8``: OpenVINO's CPU plugin, latency hint, on the fp32 model / the int8
  model that NNCF quantized (:func:`~mobilenets.deploy.quantize.quantize_openvino`).
* ``executorch``, ``executorch-int8``: ExecuTorch's runtime on the program lowered to XNNPACK, fp32 /
  int8 PT2E (:mod:`mobilenets.deploy.executorch`), a program written for each batch size timed (an exported
  program takes one image).

The int8 runtimes here are calibrated on random images: their speed does not depend on the
calibration, their accuracy does, and is checked by ``mobilenets export --int8 --calib DATA``.

Each measurement: build every runtime's runner (export, compile...), its first call and ``warmup``
calls, then rounds in which each runner in turn makes an untimed call and ``block`` timed calls on
one batch, until each has ``repeats`` (load from other programs then falls on all alike). Threads
default to :func:`~mobilenets.device.default_threads` (the cores this process may use) unless
``OMP_NUM_THREADS`` is set, and may not exceed those cores. ONNX
Runtime's idle threads spin by default and would take the cores from the runner timed after them
(OpenVINO measured 7.0 ms alone, 10.7 ms right after an ONNX Runtime session), so when several
runtimes are timed together its sessions sleep instead (about 6 % slower for ONNX Runtime itself:
7.1 → 7.6 ms for 1.0 MobileNet-224 on this project's machine). Reported:
latency p50/p90, its spread (p90/p50 and the interquartile range), images/s, effective GFLOP/s =
2 × counted mult-adds × batch / p50 time, and peak memory: the rise of the process's peak resident
memory (Linux; ``VmHWM`` reset through ``/proc/self/clear_refs``) while building and warming up, or
on CUDA PyTorch's peak allocation. The machine's fp32 peak is the best of ten products of two
``size``² matrices (``torch.mm``, and on the CPU the same product as a oneDNN 1×1 convolution), its
int8 peak (which the int8 runtimes are compared to, in GOP/s) the same with
``torch._int_mm`` of int8 matrices; each cached as the best of every measurement.

A detector (:func:`benchmark_detector`; runtimes eager, onnx, openvino; batch 1) is timed twice:
its network alone (what its exported file holds, ``mobilenets.deploy.detection``) on a (1, 3, R, R)
input, and end to end on a 640×480 picture: preprocessing, network, box decoding and NMS
(torchvision's in eager, the file's NumPy post-processing in onnx and openvino). Its rows carry
``stage`` :data:`NETWORK` or :data:`END_TO_END`.

Figures taken while other processes compete for the cores are slow and noisy; a
:class:`BenchWarning` says so when the 1-minute load average leaves fewer idle cores than threads
asked, and for each result whose spread is wide (:attr:`BenchResult.noisy`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate
from torch import nn

from .checkpoint import atomic_write
from .cost import count_cost
from .deploy.detection import (
    detection_metadata,
    detector_pipeline,
    detector_resolution,
    export_detector_onnx,
    is_detector,
    torch_network_runner,
    torch_pipeline,
)
from .deploy.executorch import executorch_runner, write_program
from .deploy.export import artifact_metadata, export_onnx, save_openvino
from .deploy.fuse import input_shape
from .deploy.quantize import quantize_onnx, quantize_openvino
from .deploy.runtimes import Runner, onnx_runner, openvino_runner, torch_runner
from .device import default_threads, resolve_device, usable_cores
from .models.base import check_resolution
from .train.config import MAX_BATCH_SIZE

RUNTIMES = ("eager", "compile", "onnx", "onnx-int8", "openvino", "openvino-int8", "executorch", "executorch-int8")
INT8_RUNTIMES = tuple(runtime for runtime in RUNTIMES if runtime.endswith("-int8"))  # compared to the int8 peak
CPU_ONLY = ("openvino", "openvino-int8", "executorch", "executorch-int8")
EXECUTORCH_RUNTIMES = ("executorch", "executorch-int8")  # their programs are written for the batch size timed
DETECTOR_RUNTIMES = ("eager", "onnx", "openvino")
NETWORK, END_TO_END = "network", "end to end"  # a detector's two figures
PICTURE_SIZE = (480, 640)  # (height, width) of the picture a detector is timed on end to end: a camera's VGA frame
CACHE_ENV = "MOBILENETS_CACHE"
GEMM_SIZE, QUICK_GEMM_SIZE = 2048, 512
# A result is noisy above either spread: on a quiet machine both stay far below (p90/p50 ≈ 1.05).
MAX_P90_OVER_P50 = 1.5
MAX_IQR_OVER_P50 = 0.25
# Load average not counted as competition: background noise on an otherwise idle machine.
IDLE_MARGIN = 0.5


class BenchWarning(UserWarning):
    """The figures may not be trusted: the machine is busy, a result's spread is wide, a peak was not cached."""


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How many calls to make: untimed warm-up, then ``repeats`` timed ones, ``block`` at a time per runtime."""

    warmup: int = 10
    repeats: int = 50
    block: int = 5

    def __post_init__(self) -> None:
        for name, least in (("warmup", 0), ("repeats", 1), ("block", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


DEFAULT_TIMING = Timing()
QUICK = Timing(warmup=1, repeats=3, block=1)


def cache_dir() -> Path:
    """The cache directory: ``$MOBILENETS_CACHE``, else ``$XDG_CACHE_HOME/mobilenets`` or ``~/.cache/mobilenets``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobilenets"


def read_cache(path: Path) -> dict[str, Any]:
    """A JSON cache file's content; empty when absent or unreadable (a cache is never essential)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def update_cache(path: Path, entries: dict[str, Any]) -> None:
    """Merge ``entries`` into the JSON cache at ``path`` (written atomically); a cache that cannot be
    written is a :class:`BenchWarning` naming ``path``, not an error."""
    data = read_cache(path) | entries
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except OSError as err:
        message = f"cache {str(path)!r} cannot be written ({err.strerror}): figures not kept"
        warnings.warn(message, BenchWarning, stacklevel=2)


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_label(device: torch.device, threads: int) -> str:
    """A readable key for the hardware a figure was measured on."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"cpu {cpu_name()}, {threads} threads"


def check_threads(threads: int | None) -> int:
    """``threads`` (default: :func:`~mobilenets.device.default_threads`, as ``train`` chooses), checked
    to be from 1 to the cores this process may use: more only makes each thread wait for the others."""
    if threads is None:
        threads = default_threads()
    cores = usable_cores()
    if not isinstance(threads, int) or not 1 <= threads <= cores:
        raise ValueError(
            f"threads must be an integer from 1 to {cores} (the cores this process may use), got {threads!r}"
        )
    return threads


def warn_if_busy(threads: int, device: torch.device) -> None:
    """A :class:`BenchWarning` when the 1-minute load average leaves fewer idle CPU cores than ``threads``."""
    if device.type != "cpu" or not hasattr(os, "getloadavg"):
        return
    load, cores = os.getloadavg()[0], usable_cores()
    if load > cores - threads + IDLE_MARGIN:
        warnings.warn(
            f"the 1-minute load average is {load:.1f} on {cores} cores and {threads} threads are asked: other "
            "processes compete for the cores, so figures will be slow and noisy (fewer --threads, or a quiet machine)",
            BenchWarning,
            stacklevel=2,
        )


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` for the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def gemm_peak(
    device: torch.device | str | None = None,
    threads: int | None = None,
    *,
    size: int = GEMM_SIZE,
    refresh: bool = False,
) -> float:
    """This machine's fp32 matrix-multiply peak in GFLOP/s: best of 10 ``torch.mm`` of ``size``² matrices.

    Cached in ``cache_dir()/gemm_peak.json`` per device, thread count, size and PyTorch version, as
    the best of every measurement: one taken under load reads low, and the next higher one replaces
    it. ``refresh``: measure again even when cached. On the CPU an n-thread peak below the 1-thread
    one (measured too when not cached) can only come from other load: it is not cached, with a
    :class:`BenchWarning`. Returns the best figure known.
    """
    return _gemm_peak(device, threads, size=size, refresh=refresh, int8=False)


def int8_gemm_peak(
    device: torch.device | str | None = None,
    threads: int | None = None,
    *,
    size: int = GEMM_SIZE,
    refresh: bool = False,
) -> float:
    """This machine's int8 matrix-multiply peak in GOP/s (2 operations per multiply-add): best of 10
    ``torch._int_mm`` of ``size``² int8 matrices into int32 (on the CPU oneDNN's s8·s8→s32 GEMM, with the
    VNNI or AMX instructions the CPU has). Cached beside the fp32 peak, under the rules of :func:`gemm_peak`.
    """
    return _gemm_peak(device, threads, size=size, refresh=refresh, int8=True)


def _gemm_peak(
    device: torch.device | str | None, threads: int | None, *, size: int, refresh: bool, int8: bool
) -> float:
    """:func:`gemm_peak` (fp32) or :func:`int8_gemm_peak`, cached apart."""
    device = resolve_device(device)
    threads = check_threads(threads)
    measure = _measure_int8_gemm if int8 else _measure_gemm
    single = device.type == "cpu" and threads > 1
    return _cached_peak(
        "int8 GEMM" if int8 else "GEMM",
        lambda n: measure(device, n, size),
        key=f"{device_label(device, threads)}|{size}|{'int8|' if int8 else ''}torch {torch.__version__}",
        single=(lambda: _gemm_peak(device, 1, size=size, refresh=False, int8=int8)) if single else None,
        threads=threads,
        unit="GOP/s" if int8 else "GFLOP/s",
        refresh=refresh,
    )


def _cached_peak(
    name: str,
    measure: Callable[[int], float],
    *,
    key: str,
    single: Callable[[], float] | None,
    threads: int,
    unit: str,
    refresh: bool,
) -> float:
    """The best known figure of the peak ``name`` under ``key`` in ``cache_dir()/gemm_peak.json``, measured
    (``measure(threads)``) when not cached or when ``refresh``; a figure below the 1-thread one (``single()``)
    is not cached, with a :class:`BenchWarning`."""
    path = cache_dir() / "gemm_peak.json"
    cached = read_cache(path).get(key)
    if cached and not refresh:
        return float(cached)
    peak = measure(threads)
    one_thread = single() if single else 0.0
    if peak < one_thread:
        warnings.warn(
            f"the {threads}-thread {name} peak measured {peak:.1f} {unit}, below the 1-thread "
            f"{one_thread:.1f}: the machine is busy, so it is not cached (measure again with --refresh)",
            BenchWarning,
            stacklevel=3,
        )
    elif not cached or peak > float(cached):
        update_cache(path, {key: peak})
    return max(peak, float(cached or 0.0))


def _best_time(device: torch.device, threads: int, call: Callable[[], torch.Tensor]) -> float:
    """Seconds of the fastest of ten ``call()`` (after one warm-up) on ``threads`` threads."""
    best = float("inf")
    with torch_threads(threads), torch.inference_mode():
        for index in range(11):
            start = time.perf_counter()
            call().sum().item()  # .item() waits for CUDA
            if index:  # the first call is a warm-up
                best = min(best, time.perf_counter() - start)
    return best


def _measure_gemm(device: torch.device, threads: int, size: int) -> float:
    """GFLOP/s of the fastest of ten ``size``² matrix products (after one warm-up) on ``threads`` threads:
    ``torch.mm``, and on the CPU also the same product as a 1×1 convolution in oneDNN, whichever is faster.
    PyTorch's CPU ``torch.mm`` is MKL's, which takes its AVX2 path on AMD processors: on this project's
    AVX-512 EPYC it measured half of what oneDNN's convolution and ONNX Runtime's MatMul reach (110 against
    219 GFLOP/s on one thread, 216 against 429 on two)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = _best_time(device, threads, lambda: torch.mm(a, b))
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        seconds = min(seconds, _best_time(device, threads, onednn_product(a, b)))
    return 2 * size**3 / seconds / 1e9


def onednn_product(a: torch.Tensor, b: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A call computing ``a @ b`` ((M, K) by (K, N), CPU) as a 1×1 convolution in oneDNN; it returns the product
    as (1, N, M, 1): ``out[0, :, :, 0].T`` is ``a @ b``."""
    rows, depth = a.shape
    # (1, K, M, 1) channels-last, with the dense strides oneDNN's fast path expects, and (N, K, 1, 1) filters.
    image = torch.empty(1, depth, rows, 1, memory_format=torch.channels_last).copy_(a.T.reshape(1, depth, rows, 1))
    filters = b.T.reshape(b.shape[1], depth, 1, 1).contiguous()
    # Called directly: on one thread conv2d would route a 1×1 convolution to MKL's GEMM again.
    return lambda: torch.mkldnn_convolution(image, filters, None, (0, 0), (1, 1), (1, 1), 1)


def _measure_int8_gemm(device: torch.device, threads: int, size: int) -> float:
    """GOP/s of the fastest of ten ``size``² int8 ``torch._int_mm`` (after one warm-up) on ``threads`` threads."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator).to(device) for _ in "ab")
    return 2 * size**3 / _best_time(device, threads, lambda: torch._int_mm(a, b)) / 1e9


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _lifetime_peak_rss_kb() -> int:
    import resource  # Unix only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """Peak memory added within a ``with`` block, in MB: process resident memory, or CUDA allocations.

    On Linux the kernel's peak-RSS mark is reset on entry, so the figure is this block's own peak;
    elsewhere ``getrusage``'s lifetime peak can only show a rise above earlier peaks.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._reset = _reset_peak_rss()
            self._start = _status_kb("VmRSS") if self._reset else _lifetime_peak_rss_kb()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        else:
            end = (_status_kb("VmHWM") or 0) if self._reset else _lifetime_peak_rss_kb()
            self.mb = max(end - (self._start or 0), 0) / 1024


@dataclass(kw_only=True)
class BenchResult:
    """One model in one runtime at one batch size. Times in ms, memory in MB, mult-adds per image."""

    model: str
    runtime: str
    device: str
    batch: int
    threads: int
    resolution: int
    mult_adds: int
    p50_ms: float
    p90_ms: float
    iqr_ms: float  # interquartile range: p75 − p25
    repeats: int
    setup_s: float
    peak_memory_mb: float | None
    # The matrix-multiply peak of the runtime's arithmetic: fp32 GFLOP/s, or int8 GOP/s for INT8_RUNTIMES.
    gemm_peak_gflops: float | None = None
    stage: str | None = None  # a detector's: NETWORK or END_TO_END

    @property
    def images_per_s(self) -> float:
        return 1000 * self.batch / self.p50_ms

    @property
    def gflops(self) -> float:
        """Effective GFLOP/s: 2 FLOPs per counted mult-add, over the p50 time."""
        return 2 * self.mult_adds * self.batch / (self.p50_ms / 1000) / 1e9

    @property
    def peak_fraction(self) -> float | None:
        return self.gflops / self.gemm_peak_gflops if self.gemm_peak_gflops else None

    @property
    def p90_over_p50(self) -> float:
        return self.p90_ms / self.p50_ms

    @property
    def noisy(self) -> bool:
        """Whether the spread is too wide to trust the figures: p90/p50 or IQR/p50 above their limits."""
        return self.p90_over_p50 > MAX_P90_OVER_P50 or self.iqr_ms / self.p50_ms > MAX_IQR_OVER_P50

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "p90_over_p50": self.p90_over_p50,
            "noisy": self.noisy,
            "images_per_s": self.images_per_s,
            "gflops": self.gflops,
            "peak_fraction": self.peak_fraction,
        }


def check_runtimes(runtimes: Sequence[str], device: torch.device) -> list[str]:
    """``runtimes`` checked against :data:`RUNTIMES` and the device."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise ValueError(f"runtime must be one or more of {list(RUNTIMES)}, got {list(runtimes)}")
    if device.type != "cpu" and any(r in CPU_ONLY for r in runtimes):
        raise ValueError(f"runtimes {list(CPU_ONLY)} run on the CPU only; use --device cpu")
    return list(runtimes)


def check_batches(batches: Sequence[int]) -> list[int]:
    """``batches`` checked to be one or more integers from 1 to ``MAX_BATCH_SIZE``."""
    if not batches or any(not isinstance(b, int) or not 1 <= b <= MAX_BATCH_SIZE for b in batches):
        raise ValueError(f"batch sizes must be one or more integers >= 1 and <= {MAX_BATCH_SIZE}, got {list(batches)}")
    return list(batches)


def default_runtimes(device: torch.device) -> list[str]:
    """What ``bench`` times when not told: the three fp32 runtimes on the CPU; PyTorch on CUDA."""
    return ["eager", "onnx", "openvino"] if device.type == "cpu" else ["eager"]


def random_calibration(model: nn.Module, resolution: int) -> list[np.ndarray]:
    """Seeded random images for the int8 runtimes: their speed does not depend on the calibration."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal((4, *input_shape(model, resolution)), dtype=np.float32) for _ in range(2)]


def prepare_artifact(model: nn.Module, runtime: str, *, workdir: Path, resolution: int, batch: int = 1) -> Path | None:
    """Write the file a runtime loads (ONNX fp32 or int8 QDQ, OpenVINO int8 IR, ExecuTorch fp32 or int8 for
    ``batch`` images a call) into ``workdir``; ``None`` for PyTorch runtimes."""
    if runtime in ("eager", "compile"):
        return None
    if runtime in EXECUTORCH_RUNTIMES:
        int8 = runtime.endswith("-int8")
        program = workdir / f"{'int8' if int8 else 'fp32'}-batch{batch}.pte"
        if not program.exists():
            calibration = random_calibration(model, resolution) if int8 else None
            write_program(model, program, resolution, calibration, batch=batch)
        return program
    fp32 = workdir / "fp32.onnx"
    if not fp32.exists():
        export_onnx(model, fp32, resolution)
    if runtime not in INT8_RUNTIMES:
        return fp32
    calibration = random_calibration(model, resolution)
    if runtime == "openvino-int8":
        int8 = workdir / "int8.xml"
        if not int8.exists():
            save_openvino(quantize_openvino(fp32, calibration), int8, artifact_metadata(model, resolution))
        return int8
    int8 = workdir / "int8.onnx"
    if not int8.exists():
        quantize_onnx(fp32, int8, calibration)
    return int8


def make_runner(
    model: nn.Module,
    runtime: str,
    *,
    artifact: Path | None,
    device: torch.device,
    threads: int,
    batch: int,
    alone: bool = True,
) -> Runner:
    """A runner for ``runtime``; ``artifact`` from :func:`prepare_artifact`. ``alone=False``: it is
    timed in turns with other runners, so ONNX Runtime's idle threads must not spin."""
    if runtime in ("eager", "compile"):
        return torch_runner(model, device, compile=runtime == "compile")
    if runtime.startswith("onnx"):
        return onnx_runner(artifact, threads=threads, device=device, spin=alone)
    if runtime in EXECUTORCH_RUNTIMES:
        return executorch_runner(artifact, threads=threads, device=device)
    return openvino_runner(artifact, threads=threads, device=device, batch=batch)


@dataclass(frozen=True, kw_only=True)
class Entry:
    """Something to time: a model in a runtime, how to build its runner, and its mult-adds per image."""

    model: str
    runtime: str
    build: Callable[[], Runner]
    mult_adds: int
    stage: str | None = None  # a detector's: NETWORK or END_TO_END


def model_entries(
    model: nn.Module,
    runtimes: Sequence[str],
    *,
    batch: int,
    workdir: Path,
    device: torch.device,
    threads: int,
    resolution: int,
    alone: bool = True,
) -> list[Entry]:
    """One :class:`Entry` per runtime for ``model`` at ``resolution``; artifacts are written in ``workdir``;
    ``alone`` as in :func:`make_runner` (it is made false when there are several runtimes)."""
    name = getattr(getattr(model, "meta", None), "name", type(model).__name__)
    mult_adds = count_cost(model, resolution, name).mult_adds

    def builder(runtime: str) -> Callable[[], Runner]:
        def build() -> Runner:
            folder = workdir / runtime.removesuffix("-int8")
            folder.mkdir(exist_ok=True)
            artifact = prepare_artifact(model, runtime, workdir=folder, resolution=resolution, batch=batch)
            return make_runner(
                model,
                runtime,
                artifact=artifact,
                device=device,
                threads=threads,
                batch=batch,
                alone=alone and len(runtimes) == 1,
            )

        return build

    return [Entry(model=name, runtime=runtime, build=builder(runtime), mult_adds=mult_adds) for runtime in runtimes]


def measure(
    entries: Sequence[Entry],
    x: np.ndarray,
    *,
    device: torch.device,
    threads: int,
    timing: Timing = DEFAULT_TIMING,
    peak: float | None = None,
    int8_peak: float | None = None,
    resolution: int | None = None,
) -> list[BenchResult]:
    """Build every entry's runner (first call and warm-up included: *setup* and *peak memory*), then time
    them all on batch ``x`` (N, C, H, W) in turns, so that a change in the machine's load falls on every
    runtime alike: in each round every runner makes one untimed call, which lets the thread pool of the
    runner before it fall idle (pools spin for a while after their work), then ``timing.block`` timed
    calls. The caller sets PyTorch's threads; ``threads`` and ``resolution`` (default: ``x``'s width)
    are recorded, with ``peak`` (fp32 GEMM GFLOP/s), or for :data:`INT8_RUNTIMES` ``int8_peak`` (GOP/s)."""
    runners, setups, memories = [], [], []
    for entry in entries:
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            runner = entry.build()
            runner(x)  # first call: compilation, allocation
            setups.append(time.perf_counter() - start)
            for _ in range(timing.warmup):
                runner(x)
        runners.append(runner)
        memories.append(memory.mb)
    times: list[list[float]] = [[] for _ in runners]
    while len(times[0]) < timing.repeats:
        for runner, row in zip(runners, times, strict=True):
            runner(x)
            for _ in range(min(timing.block, timing.repeats - len(row))):
                start = time.perf_counter()
                runner(x)
                row.append(time.perf_counter() - start)
    label = device_label(device, threads)
    results = []
    for entry, row, setup, memory_mb in zip(entries, times, setups, memories, strict=True):
        p25, p50, p75, p90 = np.percentile(row, [25, 50, 75, 90]) * 1000
        result = BenchResult(
            model=entry.model,
            runtime=entry.runtime,
            device=label,
            batch=len(x),
            threads=threads,
            resolution=x.shape[-1] if resolution is None else resolution,
            mult_adds=entry.mult_adds,
            p50_ms=float(p50),
            p90_ms=float(p90),
            iqr_ms=float(p75 - p25),
            repeats=timing.repeats,
            setup_s=setup,
            peak_memory_mb=memory_mb,
            gemm_peak_gflops=int8_peak if entry.runtime in INT8_RUNTIMES else peak,
            stage=entry.stage,
        )
        if result.noisy:
            warnings.warn(
                f"{result.model} in {result.runtime}, batch {result.batch}: p90/p50 {result.p90_over_p50:.2f}, "
                f"IQR {result.iqr_ms:.2f} ms at p50 {result.p50_ms:.2f} ms; too noisy to trust (is the machine busy?)",
                BenchWarning,
                stacklevel=2,
            )
        results.append(result)
    return results


def benchmark(
    model: nn.Module,
    runtimes: Sequence[str] = ("eager",),
    *,
    batches: Sequence[int] = (1,),
    threads: int | None = None,
    device: torch.device | str | None = None,
    timing: Timing = DEFAULT_TIMING,
    resolution: int | None = None,
    peak: float | None = None,
    int8_peak: float | None = None,
) -> list[BenchResult]:
    """Time ``model`` in each runtime at each batch size (see the module doc); ``peak``: fp32 GEMM GFLOP/s,
    ``int8_peak``: int8 GEMM GOP/s, which the :data:`INT8_RUNTIMES` are compared to."""
    device = resolve_device(device)
    threads = check_threads(threads)
    runtimes = check_runtimes(runtimes, device)
    batches = check_batches(batches)
    if is_detector(model):
        return benchmark_detector(
            model,
            runtimes,
            batches=batches,
            threads=threads,
            device=device,
            timing=timing,
            resolution=resolution,
            peak=peak,
        )
    meta = getattr(model, "meta", None)
    resolution = check_resolution(resolution if resolution is not None else (meta.resolution if meta else 224))
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(threads):
        for batch in batches:
            x = rng.standard_normal((batch, *input_shape(model, resolution)), dtype=np.float32)
            entries = model_entries(
                model, runtimes, batch=batch, workdir=Path(tmp), device=device, threads=threads, resolution=resolution
            )
            results += measure(
                entries, x, device=device, threads=threads, timing=timing, peak=peak, int8_peak=int8_peak
            )
    # Rows by runtime, then batch, as asked.
    return sorted(results, key=lambda r: (runtimes.index(r.runtime), batches.index(r.batch)))


def check_detector_options(runtimes: Sequence[str], batches: Sequence[int]) -> None:
    """A ``ValueError`` unless ``runtimes`` are among :data:`DETECTOR_RUNTIMES` and ``batches`` is [1]."""
    other = [r for r in runtimes if r not in DETECTOR_RUNTIMES]
    if other:
        raise ValueError(f"runtime {other[0]} is for classifiers; a detector runs in {', '.join(DETECTOR_RUNTIMES)}")
    if list(batches) != [1]:
        raise ValueError(f"a detector is timed at batch 1 (one picture), got batch sizes {list(batches)}")


def detector_entries(
    model: nn.Module,
    runtimes: Sequence[str],
    *,
    workdir: Path,
    device: torch.device,
    threads: int,
    resolution: int,
    artifact: Path | None = None,
) -> tuple[list[Entry], list[Entry]]:
    """A detector's :class:`Entry` per runtime for its network alone ((1, 3, R, R) in 0..1 -> the
    artifact's output) and end to end (a batch of one picture (1, H, W, 3) uint8 -> its boxes:
    preprocessing, network, decoding, NMS). onnx and openvino load ``artifact`` (a file exported from
    ``model``), by default an ONNX file written once in ``workdir``."""
    name = model.meta.name
    mult_adds = count_cost(model, resolution, name).mult_adds
    artifact = artifact or workdir / "detector.onnx"
    alone = len(runtimes) == 1

    def network(runtime: str) -> Runner:
        if runtime == "eager":
            return torch_network_runner(model, device=device)
        if not artifact.exists():
            export_detector_onnx(model, artifact, resolution)
        return make_runner(model, runtime, artifact=artifact, device=device, threads=threads, batch=1, alone=alone)

    def end_to_end(runtime: str) -> Runner:
        if runtime == "eager":
            pipeline = torch_pipeline(model, device=device)
        else:
            pipeline = detector_pipeline(network(runtime), detection_metadata(model, resolution))
        return lambda pictures: pipeline(pictures[0])["boxes"]

    def entries(stage: str, build: Callable[[str], Runner]) -> list[Entry]:
        return [
            Entry(model=name, runtime=r, build=lambda r=r: build(r), mult_adds=mult_adds, stage=stage) for r in runtimes
        ]

    return entries(NETWORK, network), entries(END_TO_END, end_to_end)


def benchmark_detector(
    model: nn.Module,
    runtimes: Sequence[str],
    *,
    batches: Sequence[int] = (1,),
    threads: int,
    device: torch.device,
    timing: Timing = DEFAULT_TIMING,
    resolution: int | None = None,
    peak: float | None = None,
    artifact: Path | None = None,
) -> list[BenchResult]:
    """Time a detector at batch 1 in each of :data:`DETECTOR_RUNTIMES`: its network alone on a random
    (1, 3, R, R) input in 0..1, then end to end on a random :data:`PICTURE_SIZE` picture (see
    :func:`detector_entries`, which ``artifact`` goes to). Rows by stage, then runtime as asked."""
    check_detector_options(runtimes, batches)
    resolution = detector_resolution(model, resolution)
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, resolution, resolution), dtype=np.float32)
    pictures = rng.integers(0, 256, (1, *PICTURE_SIZE, 3), dtype=np.uint8)  # a batch of one
    with tempfile.TemporaryDirectory() as tmp, torch_threads(threads):
        network, end_to_end = detector_entries(
            model, runtimes, workdir=Path(tmp), device=device, threads=threads, resolution=resolution, artifact=artifact
        )
        results = measure(network, x, device=device, threads=threads, timing=timing, peak=peak)
        results += measure(
            end_to_end, pictures, device=device, threads=threads, timing=timing, peak=peak, resolution=resolution
        )
    return results


def format_table(results: Sequence[BenchResult]) -> str:
    """A plain-text table of results, with the GEMM peaks they are compared to (int8 for :data:`INT8_RUNTIMES`)."""
    rows = [
        [
            r.model,
            r.runtime if r.stage is None else f"{r.runtime}, {r.stage}",
            r.batch,
            f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.p90_over_p50:.2f}" + (" !" if r.noisy else ""),
            f"{r.iqr_ms:.2f}",
            f"{r.images_per_s:.1f}",
            f"{r.gflops:.1f}",
            f"{100 * r.peak_fraction:.0f}%" if r.peak_fraction is not None else "-",
            f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb is not None else "-",
            f"{r.setup_s:.1f}",
        ]
        for r in results
    ]
    headers = ["model", "runtime", "batch", "p50 ms", "p90 ms", "p90/p50", "IQR ms", "images/s", "GFLOP/s",
               "of peak", "peak MB", "setup s"]  # fmt: skip
    table = tabulate(rows, headers, disable_numparse=True, colalign=("left", "left") + ("right",) * 10)
    if not results:
        return table
    peaks = []
    for int8, name, unit in ((False, "fp32", "GFLOP/s"), (True, "int8", "GOP/s")):
        compared = [r for r in results if (r.runtime in INT8_RUNTIMES) == int8]
        if compared:
            figure = compared[0].gemm_peak_gflops
            peaks.append(f"{name} GEMM peak {f'{figure:.1f} {unit}' if figure else 'not measured'}")
    return (
        f"{table}\n\n{results[0].device}; {'; '.join(peaks)}. GFLOP/s = 2 × counted mult-adds × batch / p50; "
        f"of peak: GFLOP/s over the GEMM peak of the runtime's arithmetic (int8 for {', '.join(INT8_RUNTIMES)}); "
        f"IQR: p75 − p25; ! marks a spread too wide to trust (p90/p50 > {MAX_P90_OVER_P50:g} or IQR > "
        f"{MAX_IQR_OVER_P50:.0%} of p50); peak MB: rise of peak memory while building and warming up; "
        f"setup s: export/compile and first call."
    )
