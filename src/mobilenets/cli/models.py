"""``mobilenets list``: the registered models."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate

from ..registry import TASKS, get_entry, list_aliases, list_models


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``list`` command's description and options to its parser."""
    parser.description = (
        "List registered model names, their task, family, default input size and arguments. A registered "
        "classifier family and width also takes any resolution >= 32 in its name (mobilenet_v1_0.25_32)."
    )
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mobilenet_v1_*_224'")
    parser.add_argument("--task", choices=TASKS, help="only the models of this task (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--aliases", action="store_true", help="list torchvision's and timm's names accepted for ours instead"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.aliases:
        return _aliases(args.pattern, args.json)
    names = list_models(args.pattern, task=args.task)
    if not names:
        task = f" of task {args.task}" if args.task else ""
        raise ValueError(f"pattern {args.pattern!r} matches no model{task} (try `mobilenets list`)")
    rows = []
    for name in names:
        entry = get_entry(name)
        row = {"model": name, "task": entry.task, "family": entry.family, **entry.defaults}
        rows.append({**row, "resolution": entry.resolution})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(tabulate(rows, headers="keys"))
    return 0


def _aliases(pattern: str, as_json: bool) -> int:
    aliases = list_aliases(pattern)
    if not aliases:
        raise ValueError(f"pattern {pattern!r} matches no alias (try `mobilenets list --aliases`)")
    rows = [{"alias": alias, "model": name} for alias, name in aliases.items()]
    print(json.dumps(rows, indent=2) if as_json else tabulate(rows, headers="keys"))
    return 0
