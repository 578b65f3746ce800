"""``mobilenets select``: the most accurate models that fit a latency, mult-adds or size budget."""

from __future__ import annotations

import argparse
import json

from ..bench import QUICK, RUNTIMES, Timing
from ..selection import (
    DEFAULT_RUNTIME,
    PUBLISHED_NOTE,
    check_plot_folder,
    format_selection,
    plot_selection,
    select_models,
)
from .bench import bench_warnings, comma_list

REPEATS = 20  # timed calls per model, after 3 untimed ones
# Options that only change how latency is measured: refused with --no-measure (their defaults are None or False).
MEASURING = ("runtime", "threads", "device", "repeats", "quick", "refresh", "cache")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``select`` command's description and options to its parser."""
    parser.description = (
        "Among the registered models with a published ImageNet top-1 (every family, every α × resolution), "
        "print those that fit the budget and that no other fitting model beats in both cost and accuracy. "
        "Mult-adds and params are counted; latency is measured on this machine (batch 1) and cached per device, "
        f"thread count and runtime (a noisy measurement is not cached). {PUBLISHED_NOTE}."
    )
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--latency-ms", type=float, metavar="X", help="budget: p50 latency in ms, measured here")
    budget.add_argument("--mult-adds", type=float, metavar="M", help="budget: millions of mult-adds per image")
    budget.add_argument("--params", type=float, metavar="P", help="budget: millions of parameters")
    parser.add_argument(
        "--runtime", choices=RUNTIMES, help=f"runtime latency is measured in (default {DEFAULT_RUNTIME})"
    )
    parser.add_argument(
        "--families", type=comma_list(str), metavar="F,...", help="comma-separated families (default: all)"
    )
    parser.add_argument("--models", default="*", metavar="PATTERN", help="shell-style filter on model names")
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads, at most the cores this process may use (default: all)"
    )
    parser.add_argument("--device", metavar="D", help="cpu or cuda[:i] (default: cuda when available)")
    parser.add_argument("--no-measure", action="store_true", help="skip latency measurement (not with --latency-ms)")
    parser.add_argument(
        "--repeats", type=int, metavar="N", help=f"timed calls per model (default {REPEATS}; not with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.repeats} timed calls per model: a smoke test")
    parser.add_argument("--refresh", action="store_true", help="measure again, ignoring cached latencies")
    parser.add_argument(
        "--cache", metavar="FILE", help="latency cache (default: $MOBILENETS_CACHE or ~/.cache/mobilenets/latency.json)"
    )
    parser.add_argument("--plot", metavar="DIR", help="write accuracy vs mult-adds / params / latency PNGs into DIR")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    budget, limit = next(
        (key, value)
        for key, value in (("latency_ms", args.latency_ms), ("mult_adds", args.mult_adds), ("params", args.params))
        if value is not None
    )
    if args.no_measure:
        measuring = [name for name in MEASURING if getattr(args, name) is not None and getattr(args, name) is not False]
        if measuring:
            raise ValueError(f"--{measuring[0]} is only used when latency is measured, not with --no-measure")
    if args.quick and args.repeats is not None:
        raise ValueError("--quick sets the timed calls itself: give --quick or --repeats, not both")
    timing = QUICK if args.quick else Timing(warmup=3, repeats=REPEATS if args.repeats is None else args.repeats)
    if args.plot is not None:
        check_plot_folder(args.plot)  # before anything is measured
    with bench_warnings("select"):
        selection = select_models(
            budget,
            limit,
            families=args.families,
            pattern=args.models,
            runtime=DEFAULT_RUNTIME if args.runtime is None else args.runtime,
            device=args.device,
            threads=args.threads,
            measure=not args.no_measure,
            timing=timing,
            cache_file=args.cache,
            refresh=args.refresh,
        )
    plots = plot_selection(selection, args.plot) if args.plot is not None else []
    if args.json:
        print(json.dumps(selection.to_dict() | {"plots": [str(p) for p in plots]}, indent=2))
    else:
        print(format_selection(selection))
        for path in plots:
            print(f"wrote {path}")
    return 0
