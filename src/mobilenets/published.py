"""Published ImageNet results (from the papers and the released checkpoints), shipped as data.

These are other people's measurements, copied from ``shared/paper/tables.md``; nothing here was
measured by this project. ``source`` says where each row comes from.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, kw_only=True)
class PublishedResult:
    model: str
    source: str
    top1: float | None
    top5: float | None
    mult_adds_m: float | None
    params_m: float | None


def _number(text: str) -> float | None:
    return float(text) if text else None


@cache
def published_results() -> dict[str, PublishedResult]:
    """``{registered model name: PublishedResult}`` for every model with a published result."""
    text = resources.files("mobilenets.resources").joinpath("published.csv").read_text(encoding="utf-8")
    return {
        row["model"]: PublishedResult(
            model=row["model"],
            source=row["source"],
            top1=_number(row["top1"]),
            top5=_number(row["top5"]),
            mult_adds_m=_number(row["mult_adds_m"]),
            params_m=_number(row["params_m"]),
        )
        for row in csv.DictReader(text.splitlines())
    }


def published_accuracy(model: str) -> dict[str, Any]:
    """``top1``, ``top5`` and ``accuracy_source`` of ``model``'s published result, as a weights
    catalogue entry (:class:`~mobilenets.registry.PretrainedWeights`) records them."""
    result = published_results()[model]
    return {"top1": result.top1, "top5": result.top5, "accuracy_source": f"{result.source} (published.csv)"}
