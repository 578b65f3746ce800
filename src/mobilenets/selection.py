"""Budget-driven model selection: the most accurate models that fit a latency, mult-adds or size budget.

Candidates are the registered models (every family, every α × resolution) that have a published
ImageNet top-1 (:func:`mobilenets.published.published_results`: other people's measurements, not
ours). Mult-adds and parameters are counted here; latency is measured here, batch 1, in the
chosen runtime, and cached per device, thread count, runtime and runtime version in a JSON file
(``cache_dir()/latency.json`` by default). The answer is the Pareto front of the candidates within
the budget: those that no other candidate beats in both cost and accuracy.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from .bench import (
    QUICK,
    Timing,
    benchmark,
    cache_dir,
    check_runtimes,
    check_threads,
    device_label,
    read_cache,
    update_cache,
)
from .cost import count_cost
from .device import resolve_device
from .published import published_results
from .registry import create_model, get_entry, list_models

# Budget kind -> (column title, unit of the limit).
BUDGETS: dict[str, tuple[str, str]] = {
    "latency_ms": ("latency", "ms, p50 measured here, batch 1"),
    "mult_adds": ("mult-adds", "millions, counted"),
    "params": ("params", "millions, counted"),
}
NAMED_POINTS = 20
PUBLISHED_NOTE = "top-1: published ImageNet figures (papers and released checkpoints), not measured here"


@dataclass(frozen=True)
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


@dataclass
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
    if families:
        known = sorted({get_entry(n).family for n in list_models()})
        unknown = sorted(set(families) - set(known))
        if unknown:
            raise ValueError(f"families must be among {known}, got {unknown}")
        names = [n for n in names if get_entry(n).family in families]
    if not names:
        raise ValueError(f"no model with a published top-1 matches pattern {pattern!r} in families {families or 'all'}")
    return names


def runtime_version(runtime: str) -> str:
    """The package and version that a runtime's figures depend on."""
    package = {"onnx": "onnxruntime", "openvino": "openvino"}.get(runtime.split("-")[0], "torch")
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{package} (not installed)"


def measure_latencies(
    names: Sequence[str],
    runtime: str = "eager",
    device: torch.device | str | None = None,
    threads: int | None = None,
    timing: Timing = QUICK,
    cache_file: str | Path | None = None,
    refresh: bool = False,
) -> dict[str, float]:
    """``{name: p50 ms}`` at batch 1, from the cache where present (unless ``refresh``), else measured and cached."""
    device = resolve_device(device)
    threads = check_threads(threads)
    check_runtimes([runtime], device)
    path = Path(cache_file) if cache_file else cache_dir() / "latency.json"
    prefix = f"{device_label(device, threads)}|{runtime}|{runtime_version(runtime)}|batch 1|"
    cached = {} if refresh else read_cache(path)
    latencies = {}
    for name in names:
        key = prefix + name
        if key not in cached:
            result = benchmark(create_model(name), [runtime], [1], threads, device, timing)[0]
            cached[key] = result.p50_ms
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
                name, model.meta.family, model.meta.resolution, ref.top1, ref.source,
                report.mult_adds, report.params, latency,
            )
        )  # fmt: skip
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
    runtime: str = "eager",
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
    if not limit > 0:
        raise ValueError(f"the {budget} budget must be > 0, got {limit}")
    if budget == "latency_ms" and not measure:
        raise ValueError("a latency budget needs latency measurement")
    names = candidate_names(families, pattern)
    label = None
    latencies = None
    if measure:
        device = resolve_device(device)
        threads = check_threads(threads)
        label = device_label(device, threads)
        latencies = measure_latencies(names, runtime, device, threads, timing, cache_file, refresh)
    candidates = build_candidates(names, latencies)
    within = [c for c in candidates if c.cost(budget) <= limit]
    if not within:
        cheapest = min(candidates, key=lambda c: c.cost(budget))
        raise ValueError(
            f"no candidate fits a {budget} budget of {limit:g}; the cheapest is {cheapest.model} "
            f"at {cheapest.cost(budget):.4g} ({BUDGETS[budget][1]})"
        )
    front = pareto_front(within, lambda c: c.cost(budget))
    return Selection(budget, limit, runtime if measure else None, label, candidates, within, front)


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
    title, unit = BUDGETS[selection.budget]
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


def plot_selection(selection: Selection, out_dir: str | Path) -> list[Path]:
    """Write PNGs of published top-1 vs mult-adds and vs params (the paper's Figures 4 and 5) and, when
    measured, vs latency; each marks the fitting Pareto front and the budget. Returns the files."""
    from matplotlib.figure import Figure  # drawn off-screen: no pyplot, no global backend

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    axes_wanted = ["mult_adds", "params"] + (["latency_ms"] if selection.device else [])
    front = {c.model for c in selection.front}
    families = sorted({c.family for c in selection.candidates})
    files = []
    for axis in axes_wanted:
        figure = Figure(figsize=(8, 5.5))
        ax = figure.subplots()
        for family in families:
            points = [c for c in selection.candidates if c.family == family]
            ax.scatter([c.cost(axis) for c in points], [c.top1 for c in points], label=family, alpha=0.7)
        if axis == selection.budget:  # the front is sorted by this cost
            front_x, front_y = [c.cost(axis) for c in selection.front], [c.top1 for c in selection.front]
            ax.plot(front_x, front_y, "k--", lw=1, label="Pareto front (fits)")
            ax.axvline(selection.limit, color="red", lw=1, label=f"budget {selection.limit:g}")
        # Every point named when few; else only the front, which is what the reader is looking for.
        named = selection.candidates if len(selection.candidates) <= NAMED_POINTS else selection.front
        for c in named:
            weight = "bold" if c.model in front else "normal"
            ax.annotate(c.model, (c.cost(axis), c.top1), fontsize=6, fontweight=weight, alpha=0.8)
        title, unit = BUDGETS[axis]
        ax.set_xscale("log")
        ax.set_xlabel(f"{title} ({unit})")
        ax.set_ylabel("ImageNet top-1 % (published, not measured here)")
        where = f" — {selection.runtime}, {selection.device}" if axis == "latency_ms" else ""
        ax.set_title(f"Published top-1 vs {title}{where}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        figure.tight_layout()
        path = out_dir / f"accuracy_vs_{axis}.png"
        figure.savefig(path, dpi=120)
        files.append(path)
    return files
