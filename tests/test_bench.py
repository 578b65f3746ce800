import json
from collections.abc import Callable

import numpy as np
import pytest

from mobilenets import count_cost, create_model
from mobilenets.bench import QUICK, PeakMemory, benchmark, cache_dir, format_table, gemm_peak
from mobilenets.deploy.runtimes import ort_session_options
from mobilenets.device import resolve_device

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
        assert 0 < r["p50_ms"] <= r["p90_ms"]
        assert r["gflops"] == pytest.approx(2 * mult_adds * r["batch"] / (r["p50_ms"] / 1000) / 1e9)
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / data["gemm_peak_gflops"])
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
    benchmark(create_model(MODEL), runtimes, [1], 1, "cpu", QUICK, resolution=32, peak=10.0)
    assert seen == [spinning]


def test_table_names_every_column() -> None:
    results = benchmark(create_model(MODEL), ["eager"], [1], 1, "cpu", QUICK, resolution=32, peak=10.0)
    table = format_table(results)
    for column in ("p50 ms", "p90 ms", "images/s", "GFLOP/s", "of peak", "peak MB"):
        assert column in table
    assert MODEL in table and "fp32 GEMM peak 10.0 GFLOP/s" in table


def test_gemm_peak_is_measured_once_then_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    first = gemm_peak("cpu", 1, size=256)
    assert first > 0 and (cache_dir() / "gemm_peak.json").is_file()

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr("torch.mm", no_measuring)
    assert gemm_peak("cpu", 1, size=256) == first


def test_peak_memory_sees_an_allocation() -> None:
    with PeakMemory(resolve_device("cpu")) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, written so that it is resident
    del block
    assert memory.mb is not None and memory.mb >= 60


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["bench", MODEL, "--runtime", "eager,tensorrt"], "runtime must be among"),
        (["bench", MODEL, "--batch", "0"], "batch sizes must be integers >= 1"),
        (["bench", MODEL, "--threads", "0"], "threads must be an integer >= 1"),
        (["bench", "nope"], "model name 'nope' is unknown"),
        (["bench", MODEL, "--device", "tpu"], "device must be"),
    ],
)
def test_bench_errors_are_one_line(cli: Cli, argv: list[str], fragment: str) -> None:
    code, out, err = cli(*argv, "--quick", "--resolution", "32")
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1
