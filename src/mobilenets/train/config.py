"""The one object a training run depends on: :class:`TrainConfig`, saved as ``config.json``."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..checkpoint import write_json
from ..data import DEFAULT_CROP_SCALE
from .optim import SCHEDULES

AMP_MODES = ("auto", "none", "bf16", "fp16")
# What --resume may change: how the run is executed, and how long it goes on.
RESUMABLE = ("epochs", "workers", "threads", "device")


@dataclass
class TrainConfig:
    """A training run. ``None`` means "choose from the model and the data" (see ``docs/training.md``).

    The optimiser defaults are the paper's recipe: RMSProp with decay and momentum 0.9 and
    TensorFlow's epsilon semantics, weight decay 4e-5 but none on depthwise filters, BN or biases,
    no label smoothing, an EMA of the weights; augmentation is its "reduced distortion" crop.
    """

    # What to train, on what, where the run's files go.
    model: str = "mobilenet_v1_0.25_128"
    data: str = "fashion-mnist"
    out: str = "runs/train"
    resolution: int | None = None  # None: the images' own size (>= 32) for Fashion-MNIST/CIFAR, else the model's
    in_chans: int | None = None  # None: 1 for grey sources, 3 otherwise
    width_mult: float | None = None
    dropout: float | None = None
    output_stride: int | None = None
    # Start from these weights ('pretrained', a file from `train`, a state dict); None: random initialisation.
    init: str | None = None
    freeze_features: bool = False  # train the classifier only (a linear probe); frozen BatchNorm statistics too
    # Optimisation.
    epochs: int = 10
    batch_size: int = 128  # global: split over the processes of a torchrun job
    lr: float = 0.01
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    lr_decay: float = 0.98  # per epoch, for schedule="exponential"
    rms_decay: float = 0.9
    momentum: float = 0.9
    eps: float = 1e-3
    weight_decay: float = 4e-5
    depthwise_weight_decay: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.9999  # 0: no EMA
    grad_clip: float = 0.0  # max global gradient norm; 0: no clipping
    # Distillation from a trained teacher (None: none): weights from `train`, 'pretrained' or a state dict.
    teacher: str | None = None
    teacher_model: str | None = None  # None: the name the teacher's weights file records
    distill_alpha: float = 0.5  # weight of the teacher's soft targets; 1 - alpha on the labels
    distill_temperature: float = 4.0
    # Data.
    augment: bool = True
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE
    crop_pct: float | None = None
    hflip: bool = True
    val_fraction: float = 0.1
    train_limit: int | None = None
    val_limit: int | None = None
    workers: int | None = None  # None: 1 loader process per training process when the CPU has spare cores
    threads: int | None = None  # CPU compute threads; None: $OMP_NUM_THREADS, else the cores minus the loaders
    # Execution.
    device: str | None = None  # None: CUDA when available
    amp: str = "auto"  # auto: bf16 on CUDA when supported, none on CPU
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    freeze_bn: bool = False
    seed: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        self.crop_scale = tuple(self.crop_scale)

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first field out of its range; return self."""
        checks: list[tuple[str, bool, str]] = [
            ("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, f"in [0, epochs={self.epochs}]"),
            ("schedule", self.schedule in SCHEDULES, f"one of {list(SCHEDULES)}"),
            ("lr_decay", 0 < self.lr_decay <= 1, "in (0, 1]"),
            ("rms_decay", 0 <= self.rms_decay < 1, "in [0, 1)"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("eps", self.eps > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("depthwise_weight_decay", self.depthwise_weight_decay >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1) (0: no EMA)"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0: no clipping)"),
            ("distill_alpha", 0 <= self.distill_alpha <= 1, "in [0, 1]"),
            ("distill_temperature", self.distill_temperature > 0, "> 0"),
            ("val_fraction", 0 < self.val_fraction < 1, "in (0, 1)"),
            ("train_limit", self.train_limit is None or self.train_limit >= 1, "an integer >= 1"),
            ("val_limit", self.val_limit is None or self.val_limit >= 1, "an integer >= 1"),
            ("workers", self.workers is None or self.workers >= 0, "an integer >= 0"),
            ("threads", self.threads is None or self.threads >= 1, "an integer >= 1"),
            ("amp", self.amp in AMP_MODES, f"one of {list(AMP_MODES)}"),
            ("in_chans", self.in_chans in (None, 1, 3), "1 or 3"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")
        return self

    def model_overrides(self) -> dict[str, Any]:
        """The model arguments this config sets (``create_model`` keyword arguments)."""
        names = ("width_mult", "dropout", "output_stride")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["crop_scale"] = list(self.crop_scale)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config has unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"resume: {str(path)!r} not found; is {str(path.parent)!r} a training run?")
        return cls.from_dict(json.loads(path.read_text()))

    def format(self) -> str:
        """The config as ``name=value`` pairs, wrapped for a terminal."""
        pairs = " ".join(f"{k}={v}" for k, v in self.to_dict().items())
        return textwrap.fill(pairs, width=118, initial_indent="config: ", subsequent_indent="  ")
