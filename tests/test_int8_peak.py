"""The int8 matrix-multiply peak, and the int8 runtimes' share of it."""

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from mobilenets import bench as bench_module
from mobilenets.bench import (
    QUICK,
    BenchResult,
    BenchWarning,
    Entry,
    cache_dir,
    format_table,
    int8_gemm_peak,
    measure,
    read_cache,
)

pytestmark = pytest.mark.usefixtures("private_cache")
Cli = Callable[..., tuple[int, str, str]]


def test_int8_gemm_peak_is_positive_finite_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    first = int8_gemm_peak("cpu", 1, size=128)
    assert 0 < first < math.inf
    cached = read_cache(cache_dir() / "gemm_peak.json")
    assert [key for key in cached if "|int8|" in key] and first in cached.values()

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(torch, "_int_mm", no_measuring)
    assert int8_gemm_peak("cpu", 1, size=128) == first


def test_int8_and_fp32_peaks_are_cached_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module, "_measure_gemm", lambda device, threads, size: 50.0)
    monkeypatch.setattr(bench_module, "_measure_int8_gemm", lambda device, threads, size: 400.0)
    assert bench_module.gemm_peak("cpu", 1, size=64) == 50.0
    assert int8_gemm_peak("cpu", 1, size=64) == 400.0
    assert sorted(read_cache(cache_dir() / "gemm_peak.json").values()) == [50.0, 400.0]


def test_int8_peak_below_the_one_thread_peak_is_a_warning_in_gops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module, "usable_cores", lambda: 2)
    figures = {1: 500.0, 2: 300.0}
    monkeypatch.setattr(bench_module, "_measure_int8_gemm", lambda device, threads, size: figures[threads])
    with pytest.warns(BenchWarning, match="2-thread int8 GEMM peak measured 300.0 GOP/s, below the 1-thread 500.0"):
        assert int8_gemm_peak("cpu", 2, size=64) == 300.0


@pytest.mark.filterwarnings("ignore:.*too noisy to trust")  # nothing is computed: no spread to judge
def test_measure_compares_int8_runtimes_to_the_int8_peak() -> None:
    entries = [Entry(model="m", runtime=r, build=lambda: lambda x: x, mult_adds=1) for r in ("onnx", "onnx-int8")]
    results = measure(entries, np.zeros((1, 1)), device=torch.device("cpu"), threads=1, timing=QUICK,
                      peak=100.0, int8_peak=800.0)  # fmt: skip
    assert [r.gemm_peak_gflops for r in results] == [100.0, 800.0]


def fabricated(runtime: str, peak: float) -> BenchResult:
    """A result of 100 effective GFLOP/s (5e8 mult-adds in 10 ms) against ``peak``."""
    return BenchResult(model="m", runtime=runtime, device="cpu test", batch=1, threads=1, resolution=32,
                       mult_adds=500_000_000, p50_ms=10.0, p90_ms=10.5, iqr_ms=0.2, repeats=10, setup_s=1.0,
                       peak_memory_mb=None, gemm_peak_gflops=peak)  # fmt: skip


def test_table_shows_int8_runtimes_share_of_the_int8_peak() -> None:
    table = format_table([fabricated("openvino", 200.0), fabricated("openvino-int8", 1000.0)])
    fp32_row, int8_row = (line for line in table.splitlines() if line.startswith("m "))
    assert " 50% " in fp32_row and " 10% " in int8_row
    assert "fp32 GEMM peak 200.0 GFLOP/s; int8 GEMM peak 1000.0 GOP/s" in table
    assert "int8 GEMM" not in format_table([fabricated("openvino", 200.0)])


def test_bench_cli_json_gives_the_int8_peak_for_int8_runtimes(cli: Cli) -> None:
    code, stdout, _ = cli("bench", "mobilenet_v1_0.25_128", "--runtime", "onnx,onnx-int8", "--resolution", "32",
                          "--threads", "1", "--quick", "--json")  # fmt: skip
    assert code == 0
    data = json.loads(stdout)
    assert data["int8_gemm_peak_gops"] > 0
    fp32, int8 = data["results"]
    assert fp32["peak_fraction"] == pytest.approx(fp32["gflops"] / data["gemm_peak_gflops"])
    assert int8["peak_fraction"] == pytest.approx(int8["gflops"] / data["int8_gemm_peak_gops"])
