import json
import time
import warnings
from collections.abc import Callable
from itertools import count
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilenets import bench as bench_module
from mobilenets import count_cost, create_model
from mobilenets.bench import (
    QUICK,
    BenchResult,
    BenchWarning,
    Entry,
    PeakMemory,
    Timing,
    benchmark,
    cache_dir,
    check_threads,
    format_table,
    gemm_peak,
    measure,
    read_cache,
    warn_if_busy,
)
from mobilenets.deploy.runtimes import ort_session_options
from mobilenets.device import default_threads, resolve_device, usable_cores

MODEL = "mobilenet_v1_0.25_128"
Cli = Callable[..., tuple[int, str, str]]  # the conftest fixture: cli(*argv) -> (status, stdout, stderr)

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


def test_bench_cli_quick_end_to_end(cli: Cli) -> None:
    runtimes = ["eager", "onnx", "onnx-int8", "openvino", "openvino-int8"]
    code, out, _ = cli("bench", MODEL, "--runtime", ",".join(runtimes), "--batch", "1,2", "--threads", "1",
                       "--resolution", "32", "--device", "cpu", "--quick", "--json")  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["gemm_peak_gflops"] > 0
    results = data["results"]
    assert [(r["runtime"], r["batch"]) for r in results] == [(rt, b) for rt in runtimes for b in (1, 2)]
    mult_adds = count_cost(create_model(MODEL), 32).mult_adds
    for r in results:
        assert r["mult_adds"] == mult_adds and r["repeats"] == QUICK.repeats and r["threads"] == 1
        assert 0 < r["p50_ms"] <= r["p90_ms"] and r["iqr_ms"] >= 0
        assert r["p90_over_p50"] == pytest.approx(r["p90_ms"] / r["p50_ms"]) and isinstance(r["noisy"], bool)
        assert r["gflops"] == pytest.approx(2 * mult_adds * r["batch"] / (r["p50_ms"] / 1000) / 1e9)
        peak = data["int8_gemm_peak_gops"] if r["runtime"].endswith("-int8") else data["gemm_peak_gflops"]
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / peak)
        assert r["images_per_s"] == pytest.approx(1000 * r["batch"] / r["p50_ms"])
        assert r["peak_memory_mb"] is not None and r["peak_memory_mb"] >= 0


def test_default_runtimes_are_the_cpu_fp32_ones(cli: Cli) -> None:
    code, out, _ = cli("bench", MODEL, "--resolution", "32", "--device", "cpu", "--quick", "--json")
    assert code == 0 and [r["runtime"] for r in json.loads(out)["results"]] == ["eager", "onnx", "openvino"]


@pytest.mark.parametrize(("runtimes", "spinning"), [(["onnx"], "1"), (["eager", "onnx"], "0")])
def test_onnx_runtime_threads_sleep_when_timed_beside_others(
    monkeypatch: pytest.MonkeyPatch, runtimes: list[str], spinning: str
) -> None:
    seen = []
    original = ort_session_options

    def recording(threads: int | None = None, spin: bool = True):
        options = original(threads, spin)
        seen.append(options.get_session_config_entry("session.intra_op.allow_spinning") if not spin else "1")
        return options

    monkeypatch.setattr("mobilenets.deploy.runtimes.ort_session_options", recording)
    benchmark(
        create_model(MODEL), runtimes, batches=[1], threads=1, device="cpu", timing=QUICK, resolution=32, peak=10.0
    )
    assert seen == [spinning]


def test_table_names_every_column() -> None:
    results = benchmark(
        create_model(MODEL), ["eager"], batches=[1], threads=1, device="cpu", timing=QUICK, resolution=32, peak=10.0
    )
    table = format_table(results)
    for column in ("p50 ms", "p90 ms", "p90/p50", "IQR ms", "images/s", "GFLOP/s", "of peak", "peak MB"):
        assert column in table
    assert MODEL in table and "fp32 GEMM peak 10.0 GFLOP/s" in table


def test_gemm_peak_is_measured_once_then_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    first = gemm_peak("cpu", 1, size=256)
    assert first > 0 and (cache_dir() / "gemm_peak.json").is_file()

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr("torch.mm", no_measuring)
    assert gemm_peak("cpu", 1, size=256) == first


def fake_measurements(monkeypatch: pytest.MonkeyPatch, gflops: dict[int, list[float]]) -> None:
    """GEMM measurements return ``gflops[threads]`` one after the other, nothing is timed."""
    queues = {threads: iter(values) for threads, values in gflops.items()}
    monkeypatch.setattr(bench_module, "_measure_gemm", lambda device, threads, size: next(queues[threads]))


def test_gemm_peak_cache_keeps_the_best_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_measurements(monkeypatch, {1: [50.0, 80.0, 30.0]})
    assert gemm_peak("cpu", 1, size=64) == 50.0
    assert gemm_peak("cpu", 1, size=64, refresh=True) == 80.0  # higher: replaces
    assert gemm_peak("cpu", 1, size=64, refresh=True) == 80.0  # lower (taken under load): ignored
    assert list(read_cache(cache_dir() / "gemm_peak.json").values()) == [80.0]


def test_gemm_peak_below_the_one_thread_peak_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module, "usable_cores", lambda: 4)
    fake_measurements(monkeypatch, {1: [100.0], 4: [60.0, 300.0, 50.0]})
    with pytest.warns(BenchWarning, match="4-thread GEMM peak measured 60.0 GFLOP/s, below the 1-thread 100.0"):
        assert gemm_peak("cpu", 4, size=64) == 60.0
    assert sorted(read_cache(cache_dir() / "gemm_peak.json").values()) == [100.0]
    assert gemm_peak("cpu", 4, size=64) == 300.0  # measured again, since nothing was cached
    assert sorted(read_cache(cache_dir() / "gemm_peak.json").values()) == [100.0, 300.0]
    with pytest.warns(BenchWarning, match="measured 50.0"):
        assert gemm_peak("cpu", 4, size=64, refresh=True) == 300.0  # the best known


def test_an_unwritable_cache_is_a_warning_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("a file, not a folder")
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "afile"))
    fake_measurements(monkeypatch, {1: [50.0]})
    with pytest.warns(BenchWarning, match=f"cache '{tmp_path}/afile/gemm_peak.json' cannot be written"):
        assert gemm_peak("cpu", 1, size=64) == 50.0


def test_threads_default_to_the_usable_cores_and_are_bounded_by_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert check_threads(None) == default_threads() == usable_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as train does: the user's setting, which PyTorch follows
    assert check_threads(None) == 1  # the one_thread fixture holds PyTorch at 1
    with pytest.raises(ValueError, match=f"threads must be an integer from 1 to {usable_cores()}"):
        check_threads(usable_cores() + 1)


def test_busy_machine_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module, "usable_cores", lambda: 4)
    monkeypatch.setattr(bench_module.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    with pytest.warns(BenchWarning, match="load average is 3.0 on 4 cores and 2 threads"):
        warn_if_busy(2, resolve_device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_busy(1, resolve_device("cpu"))  # 3 busy cores, 1 idle: enough for 1 thread


def test_wide_spread_is_reported_and_warned() -> None:
    calls = count()

    def build():
        # Every third call ten times slower: the machine's load, in small.
        return lambda x: time.sleep(0.01 if next(calls) % 3 == 0 else 0.001)

    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    with pytest.warns(BenchWarning, match="too noisy to trust"):
        (result,) = measure(
            [Entry(model="m", runtime="eager", build=build, mult_adds=10**6)],
            x,
            device=resolve_device("cpu"),
            threads=1,
            timing=Timing(warmup=0, repeats=12, block=4),
        )
    assert result.noisy and result.p90_over_p50 > 3 and result.iqr_ms > 0
    assert f"{result.p90_over_p50:.2f} !" in format_table([result])
    steady = BenchResult(
        model="m",
        runtime="eager",
        device="cpu",
        batch=1,
        threads=1,
        resolution=32,
        mult_adds=10**6,
        p50_ms=2.0,
        p90_ms=2.1,
        iqr_ms=0.1,
        repeats=10,
        setup_s=0.1,
        peak_memory_mb=None,
    )
    assert not steady.noisy and "1.05" in format_table([steady]) and "1.05 !" not in format_table([steady])


def test_peak_memory_sees_an_allocation() -> None:
    with PeakMemory(resolve_device("cpu")) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, written so that it is resident
    del block
    assert memory.mb is not None and memory.mb >= 60


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["bench", MODEL, "--runtime", "eager,tensorrt"], "runtime must be one or more of"),
        (["bench", MODEL, "--runtime", ""], "runtime must be one or more of"),
        (["bench", MODEL, "--batch", "0"], "batch sizes must be one or more integers >= 1"),
        (["bench", MODEL, "--threads", "0"], "threads must be an integer from 1 to"),
        (["bench", MODEL, "--threads", "1000"], "threads must be an integer from 1 to"),
        (["bench", MODEL, "--warmup", "-1"], "warmup must be an integer >= 0, got -1"),
        (["bench", MODEL, "--repeats", "0"], "repeats must be an integer >= 1, got 0"),
        (["bench", "nope"], "model name 'nope' is unknown"),
        (["bench", MODEL, "--device", "tpu"], "device must be"),
    ],
)
def test_bench_errors_are_one_line(cli: Cli, argv: list[str], fragment: str) -> None:
    code, out, err = cli(*argv, "--resolution", "32")
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_cli_prints_warnings_as_one_line_each(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module.os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    code, out, err = cli("bench", MODEL, "--runtime", "eager", "--threads", "1", "--resolution", "32",
                         "--device", "cpu", "--quick")  # fmt: skip
    assert code == 0 and MODEL in out
    assert "mobilenets bench: warning: the 1-minute load average is 50.0" in err
    assert all(line.startswith("mobilenets bench: warning: ") for line in err.strip().splitlines())


def test_the_onednn_product_is_the_matrix_product() -> None:
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch build has no oneDNN")
    a, b = torch.randn(96, 40), torch.randn(40, 72)
    out = bench_module.onednn_product(a, b)()
    assert out.shape == (1, 72, 96, 1)
    torch.testing.assert_close(out[0, :, :, 0].T, a @ b, atol=1e-4, rtol=1e-4)
