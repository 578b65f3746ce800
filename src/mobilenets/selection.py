"""Budget-driven model selection: the most accurate models that fit a latency, mult-adds or size budget.

Candidates are the registered models (every family, every α × resolution) that have a published
ImageNet top-1 (:func:`mobilenets.published.published_results`: other people's measurements, not
ours). Mult-adds and parameters are counted here; latency is measured here, batch 1, in the
chosen runtime, and cached per device, thread count, runtime and runtime version in a JSON file
(``cache_dir()/latency.json`` by default); a noisy measurement (:attr:`~mobilenets.bench.BenchResult.noisy`)
is used for this selection but not cached. The answer is the Pareto front of the candidates within
the budget: those that no other candidate beats in both cost and accuracy.
"""

from __future__ import annotations

import importlib.metadata
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from .bench import (
    QUICK,
    BenchWarning,
    Timing,
    benchmark,
    cache_dir,
    check_runtimes,
    check_threads,
    device_label,
    read_cache,
    update_cache,
    warn_if_busy,
)
from .checkpoint import check_writable_file
from .cost import count_cost
from .device import resolve_device
from .published import published_results
from .registry import create_model, get_entry, list_models

# Budget kind -> (column title, unit of the limit, the unit after a number).
BUDGETS: dict[str, tuple[str, str, str]] = {
    "latency_ms": ("latency", "ms, p50 measured here, batch 1", "ms"),
    "mult_adds": ("mult-adds", "millions, counted", "M mult-adds"),
    "params": ("params", "millions, counted", "M params"),
}
# Where a point's name may go, in points from it, nearest first: left and above first, where a
# Pareto front leaves room (nothing is both cheaper and more accurate than its members).
LABEL_OFFSETS = [
    (dx * radius, dy * radius)
    for radius in (6, 16, 28, 42)
    for dx, dy in ((-1, 1), (-1, 0), (0, 1), (1, -1), (1, 0), (0, -1), (1, 1), (-1, -1))
]
DEFAULT_RUNTIME = "eager"  # what latency is measured in unless told
PUBLISHED_NOTE = "top-1: published ImageNet figures (papers and released checkpoints), not measured here"


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A model with its published top-1 (%), counted cost and, when measured, its p50 latency (ms)."""

    model: str
    family: str
    resolution: int
    top1: float
    source: str
    mult_adds: int
    params: int
    latency_ms: float | None = None

    def cost(self, budget: str) -> float | None:
        """The candidate's cost in a budget's unit (ms, millions of mult-adds, millions of params)."""
        return {"latency_ms": self.latency_ms, "mult_adds": self.mult_adds / 1e6, "params": self.params / 1e6}[budget]


@dataclass(kw_only=True)
class Selection:
    """Every candidate, those within the budget, and the Pareto front among those (cheapest first)."""

    budget: str
    limit: float
    runtime: str | None
    device: str | None
    candidates: list[Candidate]
    within: list[Candidate]
    front: list[Candidate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "limit": self.limit,
            "runtime": self.runtime,
            "device": self.device,
            "note": PUBLISHED_NOTE,
            "front": [asdict(c) for c in self.front],
            "within": [c.model for c in self.within],
            "candidates": [asdict(c) for c in self.candidates],
        }


def candidate_names(families: Sequence[str] | None = None, pattern: str = "*") -> list[str]:
    """Registered models matching ``pattern`` in ``families`` (default: all) that have a published top-1."""
    published = published_results()
    names = [n for n in list_models(pattern) if n in published and published[n].top1 is not None]
    if families is not None:
        known = sorted({get_entry(n).family for n in list_models()})
        unknown = sorted(set(families) - set(known))
        if unknown or not families:
            raise ValueError(f"families must be one or more of {known}, got {unknown or list(families)}")
        names = [n for n in names if get_entry(n).family in families]
    if not names:
        raise ValueError(f"no model with a published top-1 matches pattern {pattern!r} in families {families or 'all'}")
    return names


def runtime_version(runtime: str) -> str:
    """The package and version that a runtime's figures depend on."""
    packages = {"onnx": "onnxruntime", "openvino": "openvino", "executorch": "executorch"}
    package = packages.get(runtime.split("-")[0], "torch")
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{package} (not installed)"


def measure_latencies(
    names: Sequence[str],
    runtime: str = DEFAULT_RUNTIME,
    *,
    device: torch.device | str | None = None,
    threads: int | None = None,
    timing: Timing = QUICK,
    cache_file: str | Path | None = None,
    refresh: bool = False,
) -> dict[str, float]:
    """``{name: p50 ms}`` at batch 1, from the cache where present (unless ``refresh``), else measured and,
    unless noisy, cached."""
    device = resolve_device(device)
    threads = check_threads(threads)
    check_runtimes([runtime], device)
    path = cache_dir() / "latency.json" if cache_file is None else cache_file
    path = check_writable_file(path, "cache", make_folder=True)
    prefix = f"{device_label(device, threads)}|{runtime}|{runtime_version(runtime)}|batch 1|"
    cached = {} if refresh else read_cache(path)
    if any(prefix + name not in cached for name in names):
        warn_if_busy(threads, device)
    latencies = {}
    for name in names:
        key = prefix + name
        if key not in cached:
            result = benchmark(
                create_model(name), [runtime], batches=[1], threads=threads, device=device, timing=timing
            )[0]
            cached[key] = result.p50_ms
            if result.noisy:
                warnings.warn(f"{name}: latency not cached, measured again next time", BenchWarning, stacklevel=2)
            else:
                update_cache(path, {key: result.p50_ms})  # saved one by one: an interrupted run keeps its work
        latencies[name] = cached[key]
    return latencies


def build_candidates(names: Sequence[str], latencies: dict[str, float] | None = None) -> list[Candidate]:
    """Candidates for ``names``: published top-1, counted cost, latency from ``latencies`` when given."""
    published = published_results()
    candidates = []
    for name in names:
        model = create_model(name)
        report = count_cost(model)
        ref = published[name]
        latency = latencies.get(name) if latencies else None
        candidates.append(
            Candidate(
                model=name,
                family=model.meta.family,
                resolution=model.meta.resolution,
                top1=ref.top1,
                source=ref.source,
                mult_adds=report.mult_adds,
                params=report.params,
                latency_ms=latency,
            )
        )
    return candidates


def pareto_front(candidates: Sequence[Candidate], cost: Callable[[Candidate], float]) -> list[Candidate]:
    """The candidates no other one dominates (no higher cost, no lower top-1, better in one), cheapest first.

    Of exactly equal candidates only the first is kept.
    """
    front: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (cost(c), -c.top1)):
        if not front or candidate.top1 > front[-1].top1:
            front.append(candidate)
    return front


def select_models(
    budget: str,
    limit: float,
    families: Sequence[str] | None = None,
    pattern: str = "*",
    runtime: str = DEFAULT_RUNTIME,
    device: torch.device | str | None = None,
    threads: int | None = None,
    measure: bool = True,
    timing: Timing = QUICK,
    cache_file: str | Path | None = None,
    refresh: bool = False,
) -> Selection:
    """The Pareto-optimal candidates whose ``budget`` cost (see :data:`BUDGETS`) is at most ``limit``.

    ``measure=False`` skips latency measurement (not allowed with a latency budget).
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {list(BUDGETS)}, got {budget!r}")
    if not 0 < limit < math.inf:
        raise ValueError(f"the {budget} budget must be > 0 and finite, got {limit}")
    if budget == "latency_ms" and not measure:
        raise ValueError("a latency budget needs latency measurement")
    names = candidate_names(families, pattern)
    label = None
    latencies = None
    if measure:
        device = resolve_device(device)
        threads = check_threads(threads)
        label = device_label(device, threads)
        latencies = measure_latencies(
            names, runtime, device=device, threads=threads, timing=timing, cache_file=cache_file, refresh=refresh
        )
    candidates = build_candidates(names, latencies)
    within = [c for c in candidates if c.cost(budget) <= limit]
    if not within:
        cheapest = min(candidates, key=lambda c: c.cost(budget))
        raise ValueError(
            f"no candidate fits a {budget} budget of {limit:g}; the cheapest is {cheapest.model} "
            f"at {cheapest.cost(budget):.4g} ({BUDGETS[budget][1]})"
        )
    front = pareto_front(within, lambda c: c.cost(budget))
    return Selection(
        budget=budget,
        limit=limit,
        runtime=runtime if measure else None,
        device=label,
        candidates=candidates,
        within=within,
        front=front,
    )


def format_selection(selection: Selection) -> str:
    """The front as a table, with how many candidates fit and what the figures are."""
    rows = [
        [
            c.model,
            f"{c.top1:.1f}",
            c.source,
            f"{c.mult_adds / 1e6:.1f}",
            f"{c.params / 1e6:.2f}",
            f"{c.latency_ms:.2f}" if c.latency_ms is not None else "-",
        ]
        for c in selection.front
    ]
    headers = ["model", "published top-1", "source", "M mult-adds", "M params", "latency ms"]
    table = tabulate(
        rows, headers, disable_numparse=True, colalign=("left", "right", "left", "right", "right", "right")
    )
    title, unit, _ = BUDGETS[selection.budget]
    measured = f"latency: p50 at batch 1, {selection.runtime}, {selection.device}" if selection.device else ""
    return "\n".join(
        [
            f"Pareto-optimal within {title} ≤ {selection.limit:g} ({unit}): {len(selection.front)} of "
            f"{len(selection.within)} fitting candidates ({len(selection.candidates)} in all)",
            "",
            table,
            "",
            PUBLISHED_NOTE + "; mult-adds and params counted here" + (f"; {measured}" if measured else ""),
        ]
    )


def check_plot_folder(out_dir: str | Path) -> Path:
    """``out_dir`` as a folder plots can be written into (created if missing); ``ValueError`` naming it if not."""
    if not str(out_dir).strip():
        raise ValueError(f"plot must be a folder path, got {str(out_dir)!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"plot {str(out_dir)!r} is a file; give a folder to write the PNGs into")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"plot {str(out_dir)!r} cannot be made a folder: {err.strerror}") from err
    return out_dir


def _plain_log_ticks(axis, low: float, high: float) -> None:
    """Log-scale ticks labelled as plain numbers (20, 50, 100; not 2×10¹): at 1, 2, 5 × 10^k, or at
    every 1…9 × 10^k when the data span too little for four of those."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def count(subs: tuple[float, ...]) -> int:
        return sum(low <= tick <= high for tick in LogLocator(subs=subs).tick_values(low, high))

    subs = (1.0, 2.0, 5.0) if count((1.0, 2.0, 5.0)) >= 4 else tuple(float(s) for s in range(1, 10))
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _label_points(ax, figure, points: list[tuple[str, float, float]]) -> None:
    """Name each ``(name, x, y)`` point at the first of :data:`LABEL_OFFSETS` where its text stays inside
    the axes and covers neither a name placed before nor any of ``points`` (else the first offset)."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    figure.canvas.draw()  # settles the layout and the autoscaled limits the boxes are measured in
    renderer = figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pad = 4  # pixels around each marked point
    placed = [
        Bbox.from_extents(px - pad, py - pad, px + pad, py + pad)
        for px, py in ax.transData.transform([(x, y) for _, x, y in points])
    ]
    for name, x, y in points:
        for dx, dy in LABEL_OFFSETS:
            label = ax.annotate(
                name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                ha="center" if dx == 0 else "left" if dx > 0 else "right",
                va="center" if dy == 0 else "bottom" if dy > 0 else "top",
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 3},
            )  # fmt: skip
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)  # the text alone, not its leader line
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                break
            label.remove()
        else:
            label = ax.annotate(name, (x, y), xytext=LABEL_OFFSETS[0], textcoords="offset points", fontsize=7)
        label.update_positions(renderer)
        placed.append(Text.get_window_extent(label, renderer))


def selection_figure(selection: Selection, axis: str):
    """A matplotlib ``Figure`` (off-screen, no pyplot) of published top-1 against the ``axis`` cost (a key
    of :data:`BUDGETS`, log scale, plain numbers): every candidate by family, the fitting Pareto front
    circled and named; on the budget's own axis the front as a line and the budget with its unit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 6))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for family in sorted({c.family for c in selection.candidates}):
        points = [c for c in selection.candidates if c.family == family]
        ax.scatter([c.cost(axis) for c in points], [c.top1 for c in points], label=family, alpha=0.6, s=18)
    title, unit, short = BUDGETS[axis]
    costs = [c.cost(axis) for c in selection.candidates]
    ax.set_xscale("log")
    ax.set_xlim(min(costs) / 1.15, max(costs) * 1.15)
    if axis == selection.budget:  # the front is sorted by this cost
        ax.plot([c.cost(axis) for c in selection.front], [c.top1 for c in selection.front], "k--", lw=1)
        ax.axvline(selection.limit, color="red", lw=1.2, label=f"budget {selection.limit:g} {short}")
        ax.axvspan(selection.limit, max(ax.get_xlim()[1], selection.limit), color="red", alpha=0.06)
    front = selection.front
    ax.scatter(
        [c.cost(axis) for c in front], [c.top1 for c in front], facecolors="none", edgecolors="k", s=60,
        label="Pareto-optimal within the budget (named)",
    )  # fmt: skip
    _plain_log_ticks(ax.xaxis, *ax.get_xlim())
    ax.set_xlabel(f"{title} ({unit}), log scale")
    ax.set_ylabel("ImageNet top-1 (%, published, not measured here)")
    where = f" — {selection.runtime}, {selection.device}" if axis == "latency_ms" else ""
    ax.set_title(f"Published top-1 vs {title}{where}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    _label_points(ax, figure, [(c.model, c.cost(axis), c.top1) for c in front])
    return figure


def plot_selection(selection: Selection, out_dir: str | Path) -> list[Path]:
    """Write :func:`selection_figure` PNGs of published top-1 vs mult-adds and vs params (the paper's
    Figures 4 and 5) and, when measured, vs latency into ``out_dir`` (created). Returns the files."""
    out_dir = check_plot_folder(out_dir)
    files = []
    for axis in ["mult_adds", "params"] + (["latency_ms"] if selection.device else []):
        path = out_dir / f"accuracy_vs_{axis}.png"
        selection_figure(selection, axis).savefig(path, dpi=120)
        files.append(path)
    return files
