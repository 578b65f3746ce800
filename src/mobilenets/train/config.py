"""The one object a training run depends on: :class:`TrainConfig`, saved as ``config.json``.

Each field carries its command-line help in its metadata (``help``, and ``metavar`` or ``choices``
where they apply), so ``mobilenets train`` builds its options from the dataclass and restates
nothing. Every value is checked by :meth:`TrainConfig.validate` (types, then ranges).
"""

from __future__ import annotations

import json
import textwrap
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Self

import torch

from ..checkpoint import write_json
from ..data import DEFAULT_CROP_SCALE
from ..device import usable_cores
from ..models.base import MAX_RESOLUTION, MAX_WIDTH_MULT, MIN_RESOLUTION, OUTPUT_STRIDES
from ..registry import CLASSIFICATION, check_task
from ..weights import WEIGHTS_FILES
from .optim import SCHEDULES

AMP_MODES = ("auto", "none", "bf16", "fp16")
# What --resume may change: how the run is executed, and how long it goes on.
RESUMABLE = ("epochs", "workers", "threads", "device")
# The largest global batch accepted: 64k is the largest ImageNet batch trained in the literature
# (with LARS); more only exhausts memory.
MAX_BATCH_SIZE = 65536
# Numbers become float32 tensors (learning rate, decays): larger ones would overflow.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
# Seeds are mixed with the epoch and rank into 64-bit generator seeds: non-negative, below 2**63.
MAX_SEED = 2**63 - 1
TEACHER_RESOLUTION_HELP = (
    f"the teacher's input size in pixels, {MIN_RESOLUTION} to {MAX_RESOLUTION}: training batches are prepared at "
    "the larger of it and --resolution, and each model gets them resized to its own size (default: the resolution "
    "the teacher's weights record they were trained at, else --resolution)"
)
# (option, the option it needs): given without the second, the first would have no effect.
NEEDS = (
    ("freeze_features", "init"),
    ("teacher_model", "teacher"),
    ("teacher_resolution", "teacher"),
    ("distill_alpha", "teacher"),
    ("distill_temperature", "teacher"),
)


def option(default: Any, help: str, **cli: Any) -> Any:
    """A config field with its command-line ``help`` and argparse ``metavar``/``choices``."""
    return field(default=default, metadata={"help": help, **cli})


class RunConfig:
    """What a run's config dataclass shares (:class:`TrainConfig`, the detection trainer's): reading
    and writing ``config.json`` with every value's type checked, and printing."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """A config from ``to_dict``'s form; raise ``ValueError`` on an unknown field or a value of the wrong type."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config has unknown field(s) {unknown}; known: {sorted(known)}")
        check_types(values, cls)
        return cls(**values)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"resume: {str(path)!r} not found; is {str(path.parent)!r} a training run?")
        try:
            values = json.loads(path.read_text())
            if not isinstance(values, dict):
                raise ValueError(f"a JSON object expected, got {type(values).__name__}")
            return cls.from_dict(values)
        except ValueError as err:  # json.JSONDecodeError too
            raise ValueError(f"resume: {str(path)!r}: {err}") from None

    def format(self) -> str:
        """The config as ``name=value`` pairs, wrapped for a terminal."""
        pairs = " ".join(f"{k}={v}" for k, v in self.to_dict().items())
        return textwrap.fill(pairs, width=118, initial_indent="config: ", subsequent_indent="  ")


@dataclass(kw_only=True)
class RunSettings(RunConfig):
    """Where and how a run computes, shared by the configs of the trainers built on the classifier's
    (detection, embeddings); their commands list these options after their own."""

    workers: int | None = option(
        None, "data-loading processes per training process (default: as `mobilenets train`)", metavar="N"
    )
    threads: int | None = option(
        None, "CPU compute threads per process, at most the cores (default: as `mobilenets train`)", metavar="N"
    )
    device: str | None = option(
        None, "torch device, e.g. cpu, cuda, cuda:1 (default: CUDA when available)", metavar="DEVICE"
    )
    amp: str = option("auto", "mixed precision (auto: bf16 on CUDA when supported, none on the CPU)", choices=AMP_MODES)
    channels_last: bool = option(True, "channels-last memory format (faster depthwise convolutions on CPU and GPU)")
    freeze_bn: bool = option(
        False, "keep BatchNorm in inference mode: running statistics used and not updated (fine-tuning)"
    )
    seed: int = option(0, "seed of the initialisation, data order, augmentation and any other random draw")
    deterministic: bool = option(False, "deterministic algorithms only (slower on CUDA)")

    @property
    def freeze_features(self) -> bool:
        """Read by the classifier's loop; only a classifier has a linear probe."""
        return False

    @property
    def resize_from(self) -> int | None:
        """Read by the classifier's loop; progressive resizing is the classifier's."""
        return None

    def settings_checks(self) -> list[tuple[str, bool, str]]:
        """:func:`check_values`' checks of the settings."""
        cores = usable_cores()
        return [
            ("workers", self.workers is None or 0 <= self.workers <= cores, f"an integer in [0, {cores}]"),
            ("threads", self.threads is None or 1 <= self.threads <= cores, f"an integer in [1, {cores}]"),
            ("seed", 0 <= self.seed <= MAX_SEED, f"an integer in [0, {MAX_SEED}]"),
        ]


@dataclass(kw_only=True)
class TrainConfig(RunConfig):
    """A training run. ``None`` means "choose from the model and the data" (see ``docs/training.md``).

    The optimiser defaults are the paper's recipe: RMSProp with decay and momentum 0.9 and
    TensorFlow's epsilon semantics, weight decay 4e-5 but none on depthwise filters, BN or biases,
    no label smoothing, an EMA of the weights; augmentation is its "reduced distortion" crop.
    """

    # What to train, on what, where the run's files go.
    model: str = option("mobilenet_v1_0.25_128", "registered model name (see `mobilenets list`)", metavar="NAME")
    data: str = option(
        "fashion-mnist",
        "'fashion-mnist', an image folder (train/ and val/ class subfolders, or class subfolders split by "
        "--val-fraction), a CIFAR-10/100 python-format folder, or multi-label data (sigmoid outputs, mean AP): "
        "'fashion-mnist-multilabel' or a manifest train.csv/.jsonl (val.csv beside it, or split by --val-fraction; "
        "see docs/applications.md)",
        metavar="SOURCE",
    )
    out: str = option("runs/train", "folder for the run's checkpoints, metrics, plots and report", metavar="RUN_DIR")
    resolution: int | None = option(
        None,
        f"input size in pixels, {MIN_RESOLUTION} to {MAX_RESOLUTION} (default: the images' own size, at least "
        f"{MIN_RESOLUTION}, for Fashion-MNIST and CIFAR; the model's for image folders)",
        metavar="R",
    )
    in_chans: int | None = option(None, "input channels (default: 1 for Fashion-MNIST, else 3)", choices=(1, 3))
    width_mult: float | None = option(
        None, f"width multiplier α, at most {MAX_WIDTH_MULT:g} (default: the model's)", metavar="A"
    )
    dropout: float | None = option(None, "dropout before the classifier (default: the model's)", metavar="P")
    output_stride: int | None = option(None, "output stride by dilation (default: 32)", choices=OUTPUT_STRIDES)
    init: str | None = option(
        None,
        "fine-tune: start from 'pretrained' (the packaged ImageNet weights of mobilenet_v2_1.0_224) or "
        f"{WEIGHTS_FILES}; the classifier is taken too when it has the data's class count, else it starts "
        "fresh (default: random initialisation)",
        metavar="WEIGHTS",
    )
    freeze_features: bool = option(
        False,
        "train the classifier only, on the frozen features of --init (a linear probe: fast, for few images); "
        "their BatchNorm statistics stay as loaded",
    )
    qat: bool = option(
        False,
        "quantization-aware training for phones: fine-tune --init's weights (a classifier of the data's classes) "
        "through int8 fake quantization as XNNPACK runs it (float32; no EMA), then write the int8 model as "
        "RUN/model-qat-int8.pte (ExecuTorch), .onnx (ONNX Runtime) and .xml (OpenVINO) and compare their accuracy "
        "with post-training int8 of --init; a short run with a small --lr "
        "suffices; needs the mobile extra",
    )
    # Optimisation.
    epochs: int = option(10, "epochs to train (with --resume: may extend the run)", metavar="N")
    batch_size: int = option(
        128,
        f"global batch size, split over torchrun processes, at most {MAX_BATCH_SIZE} (clipped to the training "
        "set's size)",
        metavar="B",
    )
    lr: float = option(0.01, "peak learning rate (reached after warm-up)")
    warmup_epochs: float = option(1.0, "linear learning-rate warm-up, in epochs", metavar="E")
    schedule: str = option("cosine", "after warm-up: ×--lr-decay per epoch, or cosine to 0", choices=SCHEDULES)
    lr_decay: float = option(0.98, "per-epoch factor of the exponential schedule (papers: 0.98)", metavar="F")
    rms_decay: float = option(0.9, "RMSProp decay of the mean square", metavar="D")
    momentum: float = option(0.9, "RMSProp momentum")
    eps: float = option(1e-3, "RMSProp epsilon, inside the square root as in TensorFlow")
    weight_decay: float = option(4e-5, "L2 weight decay on conv and FC weights (not BN, biases)", metavar="L2")
    depthwise_weight_decay: float = option(0.0, "L2 weight decay on depthwise filters", metavar="L2")
    label_smoothing: float = option(0.0, "label smoothing (the paper used none)", metavar="S")
    ema_decay: float = option(0.9999, "decay of the EMA of the weights; 0 turns the EMA off", metavar="D")
    grad_clip: float = option(0.0, "clip the global gradient norm to NORM; 0: no clipping", metavar="NORM")
    # Distillation from a trained teacher (None: none).
    teacher: str | None = option(
        None,
        f"distil from this trained teacher: 'pretrained' or {WEIGHTS_FILES} (a file that does not record its "
        "model needs --teacher-model); it must classify the same classes from the same input channels",
        metavar="WEIGHTS",
    )
    teacher_model: str | None = option(
        None, "the teacher's registered name (default: the one its weights file records)", metavar="NAME"
    )
    teacher_resolution: int | None = option(None, TEACHER_RESOLUTION_HELP, metavar="R")
    distill_alpha: float = option(0.5, "weight of the teacher's soft targets, 1 - A on the labels", metavar="A")
    distill_temperature: float = option(4.0, "softmax temperature of the soft targets", metavar="T")
    # Data.
    augment: bool = option(True, "random resized crops and flips for training (--no-augment: the evaluation transform)")
    crop_scale: tuple[float, float] = option(
        DEFAULT_CROP_SCALE,
        "area fraction range of the random resized crop (the paper's 'reduced distortion')",
        metavar=("LOW", "HIGH"),
    )
    crop_pct: float | None = option(
        None,
        "evaluation: central crop fraction (default: 1 for Fashion-MNIST and CIFAR, 0.875 for image folders)",
        metavar="F",
    )
    hflip: bool = option(True, "random horizontal flips for training")
    resize_from: int | None = option(
        None,
        f"progressive resizing: over the first half of the epochs the training images grow linearly from R pixels "
        f"(at least {MIN_RESOLUTION}) to --resolution, the rest train at --resolution; evaluation is always at "
        "--resolution (fewer pixels, faster early epochs)",
        metavar="R",
    )
    batched_augment: bool = option(
        True,
        "Fashion-MNIST and CIFAR (held in memory): transform whole training batches with tensor operations on the "
        "training device, without loader processes (--no-batched-augment: per-image transforms in loader processes)",
    )
    val_fraction: float = option(0.1, "share of each class held out when --data is one folder", metavar="F")
    train_limit: int | None = option(None, "train on a random (seeded) subset of N images", metavar="N")
    val_limit: int | None = option(None, "validate on a random (seeded) subset of N images", metavar="N")
    eval_every: int = option(
        1,
        "evaluate on the validation images every N epochs and after the last; the best weights are chosen among "
        "the evaluated epochs (a large N: only the last, for short runs where evaluation would take a large share)",
        metavar="N",
    )
    workers: int | None = option(
        None,
        "data-loading processes per training process (default: 1 on the CPU, none on a single core; up to 4 with CUDA)",
        metavar="N",
    )
    threads: int | None = option(
        None,
        "CPU compute threads per process, at most the cores (default: $OMP_NUM_THREADS if set, else the cores per "
        "process minus the loader processes; more threads than free cores slows training down many times)",
        metavar="N",
    )
    # Execution.
    device: str | None = option(
        None, "torch device, e.g. cpu, cuda, cuda:1 (default: CUDA when available)", metavar="DEVICE"
    )
    amp: str = option(
        "auto",
        "mixed precision (auto: bf16 on CUDA when supported, none on the CPU; fp16 uses a gradient scaler and "
        "needs CUDA)",
        choices=AMP_MODES,
    )
    channels_last: bool = option(True, "channels-last memory format (faster depthwise convolutions on CPU and GPU)")
    compile: bool = option(False, "torch.compile the model for training")
    sync_bn: bool = option(False, "synchronise BatchNorm statistics over torchrun processes (CUDA)")
    freeze_bn: bool = option(
        False, "keep BatchNorm in inference mode: running statistics used and not updated (fine-tuning)"
    )
    seed: int = option(0, "seed of the initialisation, data order and augmentation")
    deterministic: bool = option(False, "deterministic algorithms only (slower on CUDA)")

    def __post_init__(self) -> None:
        if isinstance(self.crop_scale, list):
            self.crop_scale = tuple(self.crop_scale)

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first field of the wrong type or out of its range; return self."""
        check_types(vars(self), type(self))
        cores = usable_cores()
        weights = "a weights file or 'pretrained', not empty"
        checks: list[tuple[str, bool, str]] = [
            ("out", self.out.strip() != "", "a folder path, not empty"),
            (
                "resolution",
                self.resolution is None or MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION,
                f"in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]",
            ),
            (
                "width_mult",
                self.width_mult is None or 0 < self.width_mult <= MAX_WIDTH_MULT,
                f"in (0, {MAX_WIDTH_MULT:g}]",
            ),
            ("dropout", self.dropout is None or 0 <= self.dropout < 1, "in [0, 1)"),
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", 1 <= self.batch_size <= MAX_BATCH_SIZE, f"an integer in [1, {MAX_BATCH_SIZE}]"),
            ("lr", self.lr > 0, "> 0"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, f"in [0, epochs={self.epochs}]"),
            ("lr_decay", 0 < self.lr_decay <= 1, "in (0, 1]"),
            ("rms_decay", 0 <= self.rms_decay < 1, "in [0, 1)"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("eps", self.eps > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("depthwise_weight_decay", self.depthwise_weight_decay >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1) (0: no EMA)"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0: no clipping)"),
            (
                "teacher_resolution",
                self.teacher_resolution is None or MIN_RESOLUTION <= self.teacher_resolution <= MAX_RESOLUTION,
                f"in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]",
            ),
            ("distill_alpha", 0 <= self.distill_alpha <= 1, "in [0, 1]"),
            ("distill_temperature", self.distill_temperature > 0, "> 0"),
            (
                "resize_from",
                self.resize_from is None or MIN_RESOLUTION <= self.resize_from <= MAX_RESOLUTION,
                f"in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]",
            ),
            ("crop_pct", self.crop_pct is None or 0 < self.crop_pct <= 1, "in (0, 1]"),
            ("val_fraction", 0 < self.val_fraction < 1, "in (0, 1)"),
            ("train_limit", self.train_limit is None or self.train_limit >= 1, "an integer >= 1"),
            ("val_limit", self.val_limit is None or self.val_limit >= 1, "an integer >= 1"),
            ("eval_every", self.eval_every >= 1, "an integer >= 1"),
            ("workers", self.workers is None or 0 <= self.workers <= cores, f"an integer in [0, {cores}] (the cores)"),
            ("threads", self.threads is None or 1 <= self.threads <= cores, f"an integer in [1, {cores}] (the cores)"),
            ("seed", 0 <= self.seed <= MAX_SEED, f"an integer in [0, {MAX_SEED}]"),
            ("init", self.init is None or self.init.strip() != "", weights),
            ("qat", not self.qat or self.init is not None, "used with init, the trained weights it fine-tunes"),
            ("teacher", self.teacher is None or self.teacher.strip() != "", weights),
        ]
        check_values(self, checks)
        check_task(self.model, CLASSIFICATION)
        defaults = {f.name: f.default for f in fields(self)}
        for name, needed in NEEDS:
            if getattr(self, name) != defaults[name] and getattr(self, needed) is None:
                raise ValueError(f"{name} is only used with {needed}, got {getattr(self, name)!r} without it")
        return self

    def model_overrides(self) -> dict[str, Any]:
        """The model arguments this config sets (``create_model`` keyword arguments)."""
        names = ("width_mult", "dropout", "output_stride")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["crop_scale"] = list(self.crop_scale)
        return out


def field_types(cls: type = TrainConfig) -> dict[str, Any]:
    """Each field's type (``int``, ``float | None``, ``tuple[float, float]``...) of a config dataclass."""
    return typing.get_type_hints(cls)


def _is_a(value: Any, kind: Any) -> bool:
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        return any(_is_a(value, k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(map(_is_a, value, args))
    if kind is float:  # an integer is a number too, a bool is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return f"{len(typing.get_args(kind))} numbers"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "None"}
    return names[kind]


def check_types(values: dict[str, Any], cls: type = TrainConfig) -> None:
    """Raise ``ValueError`` naming the first of ``values`` (field name: value) of the wrong type for
    config dataclass ``cls``."""
    kinds = field_types(cls)
    for name, value in values.items():
        if name in kinds and not _is_a(value, kinds[name]):
            raise ValueError(f"{name} must be {_describe(kinds[name])}, got {value!r}")


def check_values(config: Any, checks: list[tuple[str, bool, str]]) -> None:
    """Raise ``ValueError`` naming the first field of the dataclass ``config`` that fails its check in
    ``checks`` ((name, ok, what is allowed)), is a float beyond float32, or is not one of its choices."""
    for name, ok, allowed in checks:
        value = getattr(config, name)
        if isinstance(value, float) and not abs(value) <= FLOAT32_MAX:  # NaN too
            largest = f"the largest float32 is {FLOAT32_MAX:.3g}"
            raise ValueError(f"{name} must be a finite number {allowed}, got {value!r} ({largest})")
        if not ok:
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
    for f in fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value not in choices and not (value is None and f.default is None):
            raise ValueError(f"{f.name} must be one of {list(choices)}, got {value!r}")
