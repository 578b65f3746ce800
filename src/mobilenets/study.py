"""Studies: the MobileNets paper's accuracy claims (its Tables 4–7, Figures 4–5) re-run at small scale.

A :class:`Study` is data: its claim, the paper's numbers it is set beside (registered ImageNet models
whose published results are in ``resources/published.csv``), and a list of :class:`StudyRun` (model,
width, resolution, teacher, options), each trained with the project's trainer for every seed.
:func:`run_study` trains what its output folder does not yet hold: each run is cached in
``out/runs/<run-key>/`` (the trainer's own run folder), finished when its ``report.json`` exists and
its recorded config is the one asked for; a folder holding a checkpoint but no report is resumed.
The results are aggregated over seeds (mean ± sample standard deviation) into ``results.csv``,
``results.md`` and PNG plots.

The accuracy of a run is its LAST epoch's top-1 on the val split: for Fashion-MNIST and CIFAR that
split is the test set, so nothing may be chosen on it (not the best epoch, nor raw vs EMA weights:
the study recipe turns the EMA off, so each run has one set of weights).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .checkpoint import atomic_write
from .cost import profile
from .data import FASHION_MNIST, canonical_source, inspect_source
from .published import published_results
from .train import TrainConfig, resume_config, train
from .train.config import RESUMABLE
from .train.run_files import CHECKPOINT, PREVIOUS, RUN_FILES, lock_run_dir

# The paper's 224:192:160:128 divided by 4: 32 px is the smallest input the models take (the last
# feature map is 1×1 after stride 32), and Fashion-MNIST's 28 px images are upsampled to it.
RESOLUTIONS = (56, 48, 40, 32)
WIDTHS = (1.0, 0.75, 0.5, 0.25)
# The main job's recipe (docs/benchmarks.md; cosine schedule and RMSProp are the defaults) with the EMA
# off: one set of weights per run, so the test-set accuracy reported chooses nothing. Batches of 64,
# not 128: these runs take a few hundred steps, and twice the steps beat the larger batch (α = 0.25 at
# 32 px, 2 epochs of 3,000 images: 67.5 % top-1 against 30 %).
RECIPE: dict[str, Any] = {"augment": False, "warmup_epochs": 0.0, "lr": 0.01, "ema_decay": 0.0, "batch_size": 64}
# --quick unless a study says otherwise: a smoke run, each study in at most 5 minutes on 2 cores.
QUICK: dict[str, Any] = {"epochs": 2, "train_limit": 4000, "val_limit": 2000}
# --quick for the studies of α = 1 at up to 56 px (42 M mult-adds, 50 times α = 0.25 at 32 px).
SMALL_QUICK: dict[str, Any] = {"epochs": 2, "train_limit": 2000, "val_limit": 1000}
FULL_SEEDS, QUICK_SEEDS = 3, 1
MAX_SEEDS = 100
# Config fields that change how a run is executed, not what it computes.
EXECUTION = ("out", *(name for name in RESUMABLE if name != "epochs"))
# Fields that decide the evaluation images and the classes: every run of a study must agree on them.
DATA_FIELDS = ("data", "val_fraction", "val_limit", "in_chans")
# Training time estimate (1 thread + 1 loader process on 2 cores): seconds per training image =
# A + B·M mult-adds, B from docs/benchmarks.md (420 images/s at 11.45 M), A on the safe side (0.31 ms
# at 0.80 M where that page measured 0.22 ms at batch 128); a validation image costs a third of that
# (forward only); a run takes about 3 s to start. See docs/reproduction.md.
SECONDS_PER_IMAGE, SECONDS_PER_MMA, SECONDS_PER_RUN = 0.15e-3, 0.2e-3, 3.0


@dataclass(frozen=True, kw_only=True)
class StudyRun:
    """One point of a study, trained once per seed.

    ``series``: the legend group of the plots (one colour and marker each); ``teacher``: the label of
    an earlier run of the study whose final weights (same seed) it is distilled from; ``published``:
    the registered ImageNet model whose published result (``published.csv``) it stands for;
    ``epochs_scale``: this run trains that many times the study's epochs (a teacher trained longer
    than its students); ``options``: other :class:`~mobilenets.train.TrainConfig` fields.
    """

    label: str
    model: str
    resolution: int
    width_mult: float | None = None
    series: str = ""
    teacher: str | None = None
    published: str | None = None
    epochs_scale: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Study:
    """A claim of the paper, the runs that test it at small scale and their full settings."""

    name: str
    title: str
    claim: str  # the paper's claim and numbers, in words
    runs: tuple[StudyRun, ...]
    full: Mapping[str, Any]  # the full settings: epochs, train_limit, val_limit (None: all images)
    quick: Mapping[str, Any] = field(default_factory=lambda: dict(QUICK))  # the same for --quick
    recipe: Mapping[str, Any] = field(default_factory=lambda: dict(RECIPE))
    axes: tuple[str, ...] = ("mult_adds",)  # the plots' x axes: "mult_adds", "params"
    connect: bool = False  # draw a line through each series on the mult-adds axis (sorted by mult-adds)


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    """A run of a study for one seed, its config and its cache folder's name."""

    run: StudyRun
    seed: int
    config: TrainConfig
    key: str


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What a finished run contributes: its last epoch's val top-1 (%) and its counted cost."""

    label: str
    seed: int
    model: str
    top1: float
    mult_adds: int
    params: int
    classes: tuple[str, ...]
    status: str  # "cached", "trained" or "resumed"


@dataclass(frozen=True, kw_only=True)
class Row:
    """A study run aggregated over seeds (accuracy in %, std None for one seed)."""

    label: str
    series: str
    model: str
    resolution: int
    seeds: int
    top1_mean: float
    top1_std: float | None
    mult_adds: int
    params: int
    published: str | None
    published_top1: float | None
    published_source: str | None


def _v1(label: str, alpha: float, resolution: int, **kw: Any) -> StudyRun:
    return StudyRun(label=label, model="mobilenet_v1_1.0_224", width_mult=alpha, resolution=resolution, **kw)


def _grid_runs(widths: tuple[float, ...], resolutions: tuple[int, ...]) -> tuple[StudyRun, ...]:
    return tuple(
        _v1(
            f"{alpha:g} MobileNet-{res}",
            alpha,
            res,
            series=f"α = {alpha:g}",
            published=f"mobilenet_v1_{alpha}_{224 * res // RESOLUTIONS[0]}",
        )
        for alpha in widths
        for res in resolutions
    )


STUDIES: dict[str, Study] = {
    study.name: study
    for study in (
        Study(
            name="separable-vs-full",
            title="Depthwise separable vs full convolutions (Table 4)",
            claim=(
                "Table 4: MobileNet with full convolutions reaches 71.7 % at 4866 M mult-adds and 29.3 M params; "
                "with depthwise separable ones 70.6 % at 569 M and 4.2 M: about 1 point lost for 8.6× less "
                "compute and 7× fewer parameters. Here at α = 0.25, 32 px."
            ),
            runs=(
                StudyRun(
                    label="Conv MobileNet",
                    model="mobilenet_v1_conv_1.0_224",
                    width_mult=0.25,
                    resolution=32,
                    series="full convolutions",
                    published="mobilenet_v1_conv_1.0_224",
                ),
                _v1("MobileNet", 0.25, 32, series="depthwise separable", published="mobilenet_v1_1.0_224"),
            ),
            full={"epochs": 4, "train_limit": 15000, "val_limit": None},
        ),
        Study(
            name="thin-vs-shallow",
            title="Thinner vs shallower at the same cost (Table 5)",
            claim=(
                "Table 5: 0.75 MobileNet reaches 68.4 % at 325 M mult-adds and 2.6 M params, the shallow "
                "MobileNet (the five 14×14×512 separable layers removed) 65.3 % at 307 M and 2.9 M: making "
                "the model thinner is 3 points better than making it shallower. Here at 56 px, where the "
                "five layers run on 4×4 maps (at 32 px on 2×2, where a 3×3 filter sees little but its centre)."
            ),
            runs=(
                _v1("0.75 MobileNet", 0.75, 56, series="thinner (α = 0.75)", published="mobilenet_v1_0.75_224"),
                StudyRun(
                    label="Shallow MobileNet",
                    model="mobilenet_v1_shallow_1.0_224",
                    resolution=56,
                    series="shallower (α = 1)",
                    published="mobilenet_v1_shallow_1.0_224",
                ),
            ),
            full={"epochs": 3, "train_limit": 6000, "val_limit": 5000},
            quick=dict(SMALL_QUICK),
        ),
        Study(
            name="width",
            title="Width multiplier α (Table 6)",
            claim=(
                "Table 6: at 224 px, α = 1, 0.75, 0.5, 0.25 reach 70.6, 68.4, 63.7, 50.6 % at 569, 325, 149, "
                "41 M mult-adds: accuracy drops off smoothly until the architecture is made too small at "
                "α = 0.25. Here at 56 px (224 / 4)."
            ),
            runs=_grid_runs(WIDTHS, RESOLUTIONS[:1]),
            full={"epochs": 2, "train_limit": 6000, "val_limit": 5000},
            quick=SMALL_QUICK,
        ),
        Study(
            name="resolution",
            title="Resolution multiplier ρ (Table 7)",
            claim=(
                "Table 7: α = 1 at 224, 192, 160, 128 px reaches 70.6, 69.1, 67.2, 64.4 % at 569, 418, 290, "
                "186 M mult-adds: accuracy drops off smoothly with resolution. Here at 56, 48, 40, 32 px "
                "(the paper's sizes / 4)."
            ),
            runs=_grid_runs(WIDTHS[:1], RESOLUTIONS),
            full={"epochs": 2, "train_limit": 5000, "val_limit": 5000},
            quick=SMALL_QUICK,
            connect=True,
        ),
        Study(
            name="grid",
            title="Accuracy vs mult-adds and params over α × resolution (Figures 4–5)",
            claim=(
                "Figures 4–5: over the 16 models α ∈ {1, 0.75, 0.5, 0.25} × {224, 192, 160, 128} px, "
                "accuracy is roughly log-linear in mult-adds (jumping at α = 0.25), and at equal params "
                "higher resolution is better. Here at 56, 48, 40, 32 px; published points are slim's."
            ),
            runs=_grid_runs(WIDTHS, RESOLUTIONS),
            full={"epochs": 2, "train_limit": 3000, "val_limit": 5000},
            quick=SMALL_QUICK,
            axes=("mult_adds", "params"),
            connect=True,
        ),
        Study(
            name="distillation",
            title="Distillation from a wider teacher (Table 12)",
            claim=(
                "Table 12 (face attributes): MobileNets distilled from a large baseline (86.9 % mean AP, "
                "1600 M mult-adds) match or beat it: 0.5 MobileNet-224 88.1 %, 0.25 MobileNet-224 87.2 %. "
                "Here small students at 32 px, with and without α = 1 as the teacher (trained first, same seed, "
                "three times as many epochs as its students, so that it is the better model as the paper's is)."
            ),
            runs=(
                _v1("teacher 1.0 MobileNet", 1.0, 32, series="teacher", epochs_scale=3),
                _v1("0.5 MobileNet", 0.5, 32, series="no teacher"),
                _v1("0.5 MobileNet, distilled", 0.5, 32, series="distilled", teacher="teacher 1.0 MobileNet"),
                _v1("0.25 MobileNet", 0.25, 32, series="no teacher"),
                _v1("0.25 MobileNet, distilled", 0.25, 32, series="distilled", teacher="teacher 1.0 MobileNet"),
            ),
            full={"epochs": 3, "train_limit": 6000, "val_limit": 5000},
        ),
        Study(
            name="family",
            title="MobileNet V1, MobileNetV2, ShuffleNet, ShuffleNet V2 at matched mult-adds",
            claim=(
                "ShuffleNet V2 Table 8, 40 M group: ShuffleNet V2 0.5× 60.3 % (41 M), ShuffleNet 0.5× g=3 "
                "56.8 % (38 M), 0.4 MobileNetV2 56.6 % (43 M), 0.25 MobileNet 50.6 % (41 M): at matched "
                "mult-adds the later designs are more accurate. Here at 56 px, 2.5–2.9 M mult-adds each."
            ),
            runs=(
                _v1("0.25 MobileNet", 0.25, 56, series="MobileNet V1", published="mobilenet_v1_0.25_224"),
                StudyRun(
                    label="0.25 MobileNetV2",
                    model="mobilenet_v2_1.0_224",
                    width_mult=0.25,
                    resolution=56,
                    series="MobileNetV2",
                    published="mobilenet_v2_0.35_192",
                ),
                StudyRun(
                    label="ShuffleNet 0.5× (g=3)",
                    model="shufflenet_g3_0.5",
                    resolution=56,
                    series="ShuffleNet",
                    published="shufflenet_g3_0.5",
                ),
                StudyRun(
                    label="ShuffleNet V2 0.5×",
                    model="shufflenet_v2_0.5",
                    resolution=56,
                    series="ShuffleNet V2",
                    published="shufflenet_v2_0.5",
                ),
            ),
            full={"epochs": 3, "train_limit": 10000, "val_limit": None},
        ),
    )
}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"study {name!r} is unknown; known: {', '.join(STUDIES)} (see `mobilenets study --list`)")
    return STUDIES[name]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def _identity(values: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a run's result: its config without the execution fields, the teacher named by its
    run folder (so that a study folder may move)."""
    out = {k: v for k, v in values.items() if k not in EXECUTION}
    if out.get("teacher"):
        out["teacher"] = Path(out["teacher"]).parent.name
    return out


def plan(
    study: Study, *, out: str | Path, data: str = FASHION_MNIST, seeds: int | None = None, quick: bool = False
) -> list[PlannedRun]:
    """Every run of ``study`` for each seed (0 … seeds-1), teachers first; ``ValueError`` naming a bad
    option, an unknown teacher or runs that disagree on the data."""
    seeds = (QUICK_SEEDS if quick else FULL_SEEDS) if seeds is None else seeds
    if not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"seeds must be an integer in [1, {MAX_SEEDS}], got {seeds!r}")
    known = {f.name for f in fields(TrainConfig)}
    settings = study.quick if quick else study.full
    labels = [r.label for r in study.runs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"study {study.name!r}: run labels must differ, got {labels}")
    planned: list[PlannedRun] = []
    for seed in range(seeds):
        keys: dict[str, PlannedRun] = {}
        for run in study.runs:
            unknown = sorted(set(run.options) - known)
            if unknown:
                raise ValueError(f"study {study.name!r}, run {run.label!r}: unknown option(s) {unknown}")
            values = {**study.recipe, **settings, "data": canonical_source(data), **run.options}
            values |= {"model": run.model, "resolution": run.resolution, "seed": seed}
            values["epochs"] = values["epochs"] * run.epochs_scale
            if run.width_mult is not None:
                values["width_mult"] = run.width_mult
            if run.teacher is not None:
                if run.teacher not in keys:
                    raise ValueError(
                        f"study {study.name!r}, run {run.label!r}: teacher {run.teacher!r} must be an earlier run"
                    )
                values["teacher"] = str(Path(keys[run.teacher].config.out).absolute() / CHECKPOINT)
            config = TrainConfig(**values).validate()
            digest = hashlib.sha256(json.dumps(_identity(config.to_dict()), sort_keys=True).encode()).hexdigest()
            key = f"{_slug(run.label)}-seed{seed}-{digest[:10]}"
            config = replace(config, out=str(Path(out) / "runs" / key))
            keys[run.label] = PlannedRun(run=run, seed=seed, config=config, key=key)
        planned.extend(keys.values())
    first = planned[0]
    for other in planned[1:]:
        for name in DATA_FIELDS:
            if getattr(other.config, name) != getattr(first.config, name):
                raise ValueError(
                    f"study {study.name!r}: runs {first.run.label!r} and {other.run.label!r} disagree on "
                    f"{name} ({getattr(first.config, name)!r} vs {getattr(other.config, name)!r}); a study "
                    "compares runs evaluated on the same images"
                )
    return planned


def _recorded_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _check_recorded(planned: PlannedRun, run_dir: Path) -> None:
    recorded = _recorded_config(run_dir)
    if recorded is not None and _identity(recorded) != _identity(planned.config.to_dict()):
        raise ValueError(
            f"{str(run_dir)!r} holds a run of another config than the study asks; remove it or choose another --out"
        )


def _result(planned: PlannedRun, status: str) -> RunResult:
    """A finished run's last epoch (never its best) and its counted cost, from its files."""
    run_dir = Path(planned.config.out)
    report = json.loads((run_dir / "report.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = records[-1]
    if last["epoch"] != planned.config.epochs:
        raise ValueError(f"{str(run_dir)!r}: its last epoch is {last['epoch']}, not {planned.config.epochs}")
    return RunResult(
        label=planned.run.label,
        seed=planned.seed,
        model=report["model"],
        top1=100 * last["val_top1"],
        mult_adds=report["mult_adds"],
        params=report["params"],
        classes=tuple(report["evaluation"]["classes"]),
        status=status,
    )


def run_planned(planned: PlannedRun, execution: Mapping[str, Any]) -> RunResult:
    """Train ``planned`` unless its folder holds it finished; resume it from a checkpoint. The trainer's
    own lines go to ``train.log`` in the run folder."""
    run_dir = Path(planned.config.out)
    _check_recorded(planned, run_dir)
    if (run_dir / "report.json").is_file():
        return _result(planned, "cached")
    resume = (run_dir / CHECKPOINT).is_file() or (run_dir / PREVIOUS).is_file()
    if not resume:
        # Stopped before its first checkpoint: nothing trained to keep, and a fresh run refuses these.
        with lock_run_dir(run_dir):
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
    config = resume_config(run_dir, **execution) if resume else replace(planned.config, **execution)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "a") as log, contextlib.redirect_stdout(log):
        train(config, resume=resume)
    return _result(planned, "resumed" if resume else "trained")


def aggregate(study: Study, results: list[RunResult]) -> list[Row]:
    """One row per run of ``study`` that has results: mean and sample std (None for one seed) of top-1 over seeds,
    beside its counted cost and its published counterpart; ``ValueError`` if runs classify different classes."""
    classes = {r.classes for r in results}
    if len(classes) > 1:
        raise ValueError(f"study {study.name!r}: its runs classify different classes ({len(classes)} sets)")
    published = published_results()
    rows = []
    for run in study.runs:
        mine = [r for r in results if r.label == run.label]
        if not mine:
            continue
        top1 = [r.top1 for r in mine]
        ref = published.get(run.published) if run.published else None
        rows.append(
            Row(
                label=run.label,
                series=run.series,
                model=mine[0].model,
                resolution=run.resolution,
                seeds=len(mine),
                top1_mean=statistics.fmean(top1),
                top1_std=statistics.stdev(top1) if len(top1) > 1 else None,
                mult_adds=mine[0].mult_adds,
                params=mine[0].params,
                published=run.published,
                published_top1=ref.top1 if ref else None,
                published_source=ref.source if ref else None,
            )
        )
    return rows


def _accuracy(row: Row) -> str:
    std = "–" if row.top1_std is None else f"{row.top1_std:.2f}"
    return f"{row.top1_mean:.2f} ± {std}"


def results_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, [f.name for f in fields(Row)], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({f.name: "" if getattr(row, f.name) is None else getattr(row, f.name) for f in fields(Row)})
    return buffer.getvalue()


def results_markdown(study: Study, rows: list[Row], *, settings: str) -> str:
    """The study's claim, its settings and a table of accuracy beside counted mult-adds and params."""
    table = [
        [
            row.label,
            row.model,
            row.resolution,
            f"{row.mult_adds / 1e6:,.2f}",
            f"{row.params / 1e6:,.3f}",
            _accuracy(row),
            row.seeds,
            "" if row.published_top1 is None else f"{row.published_top1:.1f} ({row.published}, {row.published_source})",
        ]
        for row in rows
    ]
    headers = ["run", "model", "px", "M mult-adds", "M params", "top-1 % (mean ± std)", "seeds", "published top-1 %"]
    return "\n\n".join(
        [
            f"# {study.title}",
            f"**Claim.** {study.claim}",
            f"**Settings.** {settings}",
            tabulate(table, headers, tablefmt="github", disable_numparse=True),
            "top-1: the last epoch's accuracy on the val split (for Fashion-MNIST its test set; nothing is "
            "selected on it), mean ± sample std over seeds. Mult-adds and params counted by `mobilenets.cost` "
            "for one image at the run's input size. Published: ImageNet top-1 of the counterpart at full size.",
        ]
    )


MARKERS = "osD^vP*Xph"


def study_figure(study: Study, rows: list[Row], axis: str, *, data: str = FASHION_MNIST):
    """Top-1 on ``data`` (mean, error bars: std over seeds) against ``axis`` ("mult_adds" or "params", log scale),
    one colour and marker per series; the published ImageNet top-1 of each run's counterpart on the right
    axis, at the run's own cost."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .selection import _plain_log_ticks

    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    right = ax.twinx() if any(row.published_top1 is not None for row in rows) else None
    series = list(dict.fromkeys(row.series for row in rows))
    line = "-" if study.connect and axis == "mult_adds" else "none"  # a series' params are all one value
    for i, name in enumerate(series):
        mine = sorted((row for row in rows if row.series == name), key=lambda row: getattr(row, axis))
        xs = [getattr(row, axis) / 1e6 for row in mine]
        color, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
        ax.errorbar(
            xs,
            [row.top1_mean for row in mine],
            yerr=[row.top1_std or 0.0 for row in mine],
            color=color,
            marker=marker,
            linestyle=line,
            capsize=3,
            label=name or None,
        )
        points = [(x, row.published_top1) for x, row in zip(xs, mine, strict=True) if row.published_top1]
        if right is not None and points:
            # Larger and hollow: a ring around our marker where the two axes happen to put them together.
            right.plot(
                *zip(*points, strict=True),
                color=color,
                marker=marker,
                ms=13,
                mfc="none",
                mew=1.2,
                ls=":" if line == "-" else "none",
            )
    if len(rows) <= 8:  # more names would cover each other; the legend and results.md name them
        for row in rows:
            xy = (getattr(row, axis) / 1e6, row.top1_mean)
            ax.annotate(row.label, xy, xytext=(5, 5), textcoords="offset points", fontsize=7)
    costs = [getattr(row, axis) / 1e6 for row in rows]
    ax.set_xscale("log")
    ax.set_xlim(min(costs) / 1.3, max(costs) * 1.3)
    _plain_log_ticks(ax.xaxis, *ax.get_xlim())
    unit = {"mult_adds": "mult-adds (millions, one image)", "params": "parameters (millions)"}[axis]
    ax.set_xlabel(f"{unit}, log scale")
    ax.set_ylabel(f"top-1 on {Path(data).name} val, last epoch (%; error bars: std over seeds)")
    ax.margins(y=0.15)
    if right is not None:
        right.set_ylabel("published ImageNet top-1 of the counterpart (%; hollow markers)")
        right.margins(y=0.15)
    ax.set_title(study.title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if right is not None:
        ring = Line2D([], [], color="0.3", marker="o", ms=11, mfc="none", ls=":" if line == "-" else "none")
        handles, names = [*handles, ring], [*names, "published ImageNet top-1 (right axis)"]
    if handles:
        ax.legend(handles, names, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def estimate_seconds(study: Study, *, quick: bool, seeds: int | None = None, val_images: int = 10000) -> float:
    """Rough training time of ``study`` on 2 cores (see ``SECONDS_PER_*``) with ``val_images`` to
    evaluate each epoch when the settings do not limit them (Fashion-MNIST's test set: 10,000)."""
    seeds = (QUICK_SEEDS if quick else FULL_SEEDS) if seeds is None else seeds
    settings = study.quick if quick else study.full
    train_images = settings.get("train_limit") or 60000
    val = settings.get("val_limit") or val_images
    cost = {}
    total = 0.0
    for run in study.runs:
        overrides = {"width_mult": run.width_mult} if run.width_mult is not None else {}
        cost[run.label] = profile(run.model, run.resolution, num_classes=10, in_chans=1, **overrides).mult_adds / 1e6
        teacher = cost[run.teacher] / 3 if run.teacher else 0.0
        per_image = SECONDS_PER_IMAGE + SECONDS_PER_MMA * (cost[run.label] + teacher)
        total += SECONDS_PER_RUN + settings["epochs"] * run.epochs_scale * per_image * (train_images + val / 3)
    return total * seeds


@dataclass(kw_only=True)
class StudyResult:
    rows: list[Row]
    results: list[RunResult]
    files: list[Path]


def run_study(
    study: Study,
    *,
    out: str | Path,
    data: str = FASHION_MNIST,
    seeds: int | None = None,
    quick: bool = False,
    execution: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> StudyResult:
    """Train what ``out`` lacks of ``study`` (see :func:`plan`), then write ``results.csv``,
    ``results.md`` and ``accuracy_vs_<axis>.png`` into ``out``. ``execution``: workers, threads or device
    for the trainer (they do not change the results); ``log`` gets one line per run."""
    planned = plan(study, out=out, data=data, seeds=seeds, quick=quick)
    inspect_source(planned[0].config.data)  # a missing folder is refused before any run folder is made
    out = Path(out)
    results = []
    for i, item in enumerate(planned, 1):
        start = time.perf_counter()
        result = run_planned(item, execution or {})
        results.append(result)
        log(
            f"[{i}/{len(planned)}] {item.run.label} ({result.model}) seed {item.seed}: {result.status}, "
            f"top-1 {result.top1:.2f} %, {time.perf_counter() - start:.1f} s"
        )
    rows = aggregate(study, results)
    first = planned[0].config
    seeds_used = len({p.seed for p in planned})
    base_epochs = (study.quick if quick else study.full)["epochs"]
    longer = "".join(f" ({r.label}: {base_epochs * r.epochs_scale})" for r in study.runs if r.epochs_scale != 1)
    settings = (
        f"data {first.data}, {base_epochs} epoch(s){longer} on {first.train_limit or 'all'} training images, "
        f"{first.val_limit or 'all'} val images, {seeds_used} seed(s){', --quick' if quick else ''}; recipe "
        + ", ".join(f"{k}={v}" for k, v in study.recipe.items())
    )
    files = [out / "results.csv", out / "results.md"]
    atomic_write(files[0], results_csv(rows).encode())
    atomic_write(files[1], (results_markdown(study, rows, settings=settings) + "\n").encode())
    for axis in study.axes:
        buffer = io.BytesIO()
        study_figure(study, rows, axis, data=first.data).savefig(buffer, format="png", dpi=110)
        files.append(out / f"accuracy_vs_{axis}.png")
        atomic_write(files[-1], buffer.getvalue())
    return StudyResult(rows=rows, results=results, files=files)


def _settings(values: Mapping[str, Any]) -> str:
    images = lambda n: "all" if n is None else f"{n:,}"  # noqa: E731
    return f"{values['epochs']} × {images(values.get('train_limit'))}, val {images(values.get('val_limit'))}"


def describe_studies() -> list[dict[str, Any]]:
    """Each study's name, runs, settings (epochs × training images, val images) and estimated minutes on
    2 cores (quick: 1 seed; full: the default seeds)."""
    return [
        {
            "study": s.name,
            "runs": len(s.runs),
            "quick": _settings(s.quick),
            "quick min": math.ceil(estimate_seconds(s, quick=True) / 60),
            f"full ({FULL_SEEDS} seeds)": _settings(s.full),
            "full min": math.ceil(estimate_seconds(s, quick=False) / 60),
            "title": s.title,
        }
        for s in STUDIES.values()
    ]
