import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from mobilenets import bench as bench_module
from mobilenets import selection as selection_module
from mobilenets.bench import BenchWarning, read_cache
from mobilenets.published import published_results
from mobilenets.selection import Candidate, pareto_front, select_models, selection_figure

TINY = "mobilenet_v1_0.25_*"  # four models: α = 0.25 at 128, 160, 192, 224
Cli = Callable[..., tuple[int, str, str]]  # the conftest fixture: cli(*argv) -> (status, stdout, stderr)

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


def dominates(a: Candidate, b: Candidate, cost) -> bool:
    return cost(a) <= cost(b) and a.top1 >= b.top1 and (cost(a) < cost(b) or a.top1 > b.top1)


def assert_pareto(front: list[Candidate], candidates: list[Candidate], cost) -> None:
    """No member is dominated; every other candidate is dominated by (or equal to) a member."""
    for member in front:
        assert not any(dominates(other, member, cost) for other in candidates)
    for other in candidates:
        if other not in front:
            assert any(dominates(m, other, cost) or (cost(m), m.top1) == (cost(other), other.top1) for m in front)
    assert [cost(c) for c in front] == sorted(cost(c) for c in front)


def test_pareto_front_property_on_random_points() -> None:
    rng = random.Random(0)
    for _ in range(20):
        points = [
            Candidate(
                model=f"m{i}",
                family="f",
                resolution=224,
                top1=rng.choice([50.0, 60.0, 70.0, rng.uniform(40, 80)]),
                source="test",
                mult_adds=rng.choice([100, 200, rng.randint(10, 1000)]) * 10**6,
                params=10**6,
            )
            for i in range(12)
        ]
        front = pareto_front(points, lambda c: c.cost("mult_adds"))
        assert front
        assert_pareto(front, points, lambda c: c.cost("mult_adds"))


def test_select_by_mult_adds_on_a_tiny_list() -> None:
    selection = select_models("mult_adds", 35, pattern=TINY, measure=False)
    assert {c.model for c in selection.candidates} == {f"mobilenet_v1_0.25_{r}" for r in (128, 160, 192, 224)}
    assert all(c.cost("mult_adds") <= 35 for c in selection.within) and len(selection.within) == 3
    assert_pareto(selection.front, selection.within, lambda c: c.cost("mult_adds"))
    assert all(c.top1 == published_results()[c.model].top1 and c.latency_ms is None for c in selection.candidates)


def test_select_by_latency_measures_once_then_uses_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module, "MAX_P90_OVER_P50", float("inf"))  # no result too noisy to cache
    monkeypatch.setattr(bench_module, "MAX_IQR_OVER_P50", float("inf"))
    selection = select_models("latency_ms", 1e6, pattern=TINY, runtime="eager", device="cpu", threads=1)
    assert all(c.latency_ms is not None and c.latency_ms > 0 for c in selection.candidates)
    assert_pareto(selection.front, selection.within, lambda c: c.latency_ms)

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(selection_module, "benchmark", no_measuring)
    again = select_models("latency_ms", 1e6, pattern=TINY, runtime="eager", device="cpu", threads=1)
    assert [c.latency_ms for c in again.candidates] == [c.latency_ms for c in selection.candidates]


def test_noisy_latencies_are_not_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bench_module, "MAX_P90_OVER_P50", 0.0)  # every result too noisy
    cache = tmp_path / "latency.json"
    with pytest.warns(BenchWarning, match="latency not cached"):
        selection = select_models("latency_ms", 1e6, pattern=TINY, device="cpu", threads=1, cache_file=cache)
    assert all(c.latency_ms > 0 for c in selection.candidates) and read_cache(cache) == {}


def test_plots_are_readable() -> None:
    from matplotlib.text import Text

    selection = select_models("mult_adds", 300, pattern="mobilenet_v2_*", measure=False)  # a dense front
    figure = selection_figure(selection, "mult_adds")
    ax = figure.axes[0]
    ticks = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
    assert ticks and all(float(text) > 0 for text in ticks), ticks  # plain numbers, not 2×10¹
    assert "mult-adds (millions, counted)" in ax.get_xlabel() and "%" in ax.get_ylabel()
    assert "budget 300 M mult-adds" in [text.get_text() for text in ax.get_legend().get_texts()]
    names = [child for child in ax.texts if child.get_text() in {c.model for c in selection.candidates}]
    assert sorted(n.get_text() for n in names) == sorted(c.model for c in selection.front)  # the front only
    renderer = figure.canvas.get_renderer()
    boxes = [Text.get_window_extent(name, renderer) for name in names]
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]


def test_select_cli_prints_the_front_and_plots(cli: Cli, tmp_path: Path) -> None:
    code, out, _ = cli("select", "--params", "0.5", "--models", TINY, "--no-measure", "--plot", str(tmp_path), "--json")
    data = json.loads(out)
    assert code == 0 and "not measured here" in data["note"]
    assert [c["model"] for c in data["front"]] == ["mobilenet_v1_0.25_224"]  # same params: the most accurate
    assert sorted(Path(p).name for p in data["plots"]) == ["accuracy_vs_mult_adds.png", "accuracy_vs_params.png"]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in data["plots"])
    code, out, _ = cli("select", "--mult-adds", "25", "--models", TINY, "--no-measure")
    assert code == 0 and "published" in out and "mobilenet_v1_0.25_160" in out and "0.25_192" not in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["--mult-adds", "1", "--models", TINY],
            "no candidate fits a mult_adds budget of 1; the cheapest is mobilenet_v1_0.25_128",
        ),
        (["--latency-ms", "5"], "a latency budget needs latency measurement"),
        (["--params", "-1"], "budget must be > 0"),
        (["--params", "1", "--families", "resnet"], "families must be one or more of"),
        (["--params", "1", "--families", ""], "families must be one or more of"),
        (["--params", "1", "--models", "zzz*"], "no model with a published top-1 matches"),
    ],
)
def test_select_errors_are_one_line(cli: Cli, argv: list[str], fragment: str) -> None:
    code, out, err = cli("select", *argv, "--no-measure")
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--cache", "{tmp}"], "cache '{tmp}' is a folder"),
        (["--plot", "{tmp}/afile"], "plot '{tmp}/afile' is a file"),
        (["--plot", ""], "plot must be a folder path, got ''"),
        (["--cache", ""], "cache must be a file path, got ''"),
        (["--threads", "1000"], "threads must be an integer from 1 to"),
        (["--repeats", "0"], "repeats must be an integer >= 1, got 0"),
    ],
)
def test_select_paths_and_counts_are_checked_before_measuring(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], fragment: str
) -> None:
    (tmp_path / "afile").write_text("a file, not a folder")

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured despite a bad option")

    monkeypatch.setattr(selection_module, "benchmark", no_measuring)
    code, out, err = cli("select", "--latency-ms", "5", "--models", TINY, "--device", "cpu",
                         *[arg.format(tmp=tmp_path) for arg in argv])  # fmt: skip
    assert code == 2 and out == ""
    assert fragment.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1
