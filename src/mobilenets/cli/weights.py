"""``mobilenets weights``: the weights catalogue, with each file's provenance and how to get it."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from tabulate import tabulate

from ..registry import (
    IMPORTABLE,
    NOT_IMPORTABLE,
    PRESENT,
    PretrainedWeights,
    get_entry,
    packaged_file,
    weights_catalogue,
    weights_status,
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``weights`` command's description and options to its parser."""
    parser.description = (
        "List the published weights files known for the registered models: where each comes from, its licence, "
        "SHA-256, the input it was evaluated with and its published accuracy, and whether it is present (shipped "
        "in an installed package: --weights pretrained loads it), importable (fetch it from its source, then "
        "`mobilenets convert` imports it) or not importable yet. Nothing is downloaded."
    )
    parser.add_argument(
        "pattern",
        nargs="?",
        default="*",
        help="shell-style filter on the weights' or model's name, e.g. 'mobilenet_v2_*'",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (every field) instead of a table")
    parser.set_defaults(handler=run)


def next_step(weights: PretrainedWeights, status: str) -> str:
    """What to do to use ``weights``: where it is, which command imports it, or why it cannot be."""
    if status == PRESENT:
        return f"present at {packaged_file(weights)}: load it with `--weights pretrained`"
    if status == IMPORTABLE:
        return f"fetch it, then `mobilenets convert {weights.file} --catalogue {weights.name} --out OUT.safetensors`"
    return weights.note or f"this project reads no {weights.library} files of {get_entry(weights.model).family} yet"


def run(args: argparse.Namespace) -> int:
    found = weights_catalogue(args.pattern)
    if not found:
        raise ValueError(f"pattern {args.pattern!r} matches no weights or model (try `mobilenets weights`)")
    rows: list[dict[str, Any]] = []
    for weights in found:
        status = weights_status(weights)
        rows.append({**asdict(weights), "status": status, "next_step": next_step(weights, status)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        {
            "weights": row["name"],
            "model": row["model"],
            "status": row["status"],
            "licence": row["licence"],
            "top-1": row["top1"] if row["top1"] is not None else "not known here",
            "SHA-256": row["sha256"][:12] + "..." if row["sha256"] else "not known here",
            "source": row["source"],
        }
        for row in rows
    ]
    print(tabulate(table, headers="keys"))
    # How to use them: one line per present or importable file, one per reason for the others.
    lines = [f"{row['name']}: {row['next_step']}" for row in rows if row["status"] != NOT_IMPORTABLE]
    reasons = sorted({row["next_step"] for row in rows if row["status"] == NOT_IMPORTABLE})
    print("", *lines, *(f"not importable: {reason}" for reason in reasons), sep="\n")
    return 0
