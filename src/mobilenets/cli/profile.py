"""``mobilenets profile``: count mult-adds and parameters of a model, or of the α × resolution grid."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate

from ..cost import CONVENTIONS, profile
from ..published import published_results

GRID_WIDTHS = ("1.0", "0.75", "0.5", "0.25")
GRID_RESOLUTIONS = (224, 192, 160, 128)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``profile`` command's description and options to its parser."""
    parser.description = (
        "Count a model's mult-adds and parameters by running it once at the given resolution, "
        "per layer and per layer type (the paper's Table 2). " + CONVENTIONS + "."
    )
    parser.add_argument("model", nargs="?", help="registered model name (see `mobilenets list`)")
    parser.add_argument("--width-mult", type=float, metavar="A", help="width multiplier α > 0 (default: the model's)")
    parser.add_argument(
        "--resolution", type=int, metavar="R", help="input size in pixels, >= 32 (default: the model's)"
    )
    parser.add_argument("--per-layer", action="store_true", help="also print every conv and FC layer")
    parser.add_argument("--json", action="store_true", help="print JSON (integers) instead of tables")
    parser.add_argument(
        "--grid",
        action="store_true",
        help="profile the 16 MobileNet V1 models α ∈ {1, 0.75, 0.5, 0.25} × resolution ∈ {224, 192, 160, 128}",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.grid:
        if args.model or args.width_mult is not None or args.resolution is not None:
            raise ValueError("--grid takes no model, --width-mult or --resolution")
        return _grid(args.json)
    if not args.model:
        raise ValueError("model is required (or use --grid); see `mobilenets list`")
    overrides = {} if args.width_mult is None else {"width_mult": args.width_mult}
    report = profile(args.model, resolution=args.resolution, **overrides)
    print(json.dumps(report.to_dict(args.per_layer), indent=2) if args.json else report.format(args.per_layer))
    return 0


def _grid(as_json: bool) -> int:
    reports = [profile(f"mobilenet_v1_{a}_{r}") for a in GRID_WIDTHS for r in GRID_RESOLUTIONS]
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    published = published_results()
    rows = []
    for report in reports:
        ref = published.get(report.model)
        rows.append(
            [
                report.model,
                f"{report.mult_adds / 1e6:.1f}",
                f"{report.params / 1e6:.2f}",
                ref.mult_adds_m if ref else "",
                ref.params_m if ref else "",
                ref.top1 if ref else "",
            ]
        )
    headers = ["model", "M mult-adds", "M params", "published M mult-adds", "published M params", "published top-1"]
    print(tabulate(rows, headers, disable_numparse=True, colalign=("left",) + ("right",) * 5))
    print(
        "\nM mult-adds and M params: counted here. Published: the TF-slim 2018 checkpoints (ImageNet top-1 not "
        "measured here); their params also count BN β, moving mean and variance, and their α = 0.75 and 0.25-192 "
        "mult-adds disagree with the paper and with counting (docs/cost-model.md).\n" + CONVENTIONS
    )
    return 0
