"""``mobilenets list``: the registered models."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate

from ..registry import get_entry, list_models


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``list`` command's description and options to its parser."""
    parser.description = "List registered model names, their family, default input size and arguments."
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mobilenet_v1_*_224'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"pattern {args.pattern!r} matches no model (try `mobilenets list`)")
    rows = []
    for name in names:
        entry = get_entry(name)
        rows.append({"model": name, "family": entry.family, **entry.defaults})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(tabulate(rows, headers="keys"))
    return 0
