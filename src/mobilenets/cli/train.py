"""``mobilenets train``: train a model with the paper's recipe, resume a run, print a short report.

Every option defaults to :class:`mobilenets.train.TrainConfig`'s value; the defaults are the quick
Fashion-MNIST run. Under ``torchrun --nproc_per_node=N -m mobilenets train ...`` each process
runs this command and only rank 0 writes and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any

from ..train import NonFiniteLoss, TrainConfig, TrainingInterrupted, resume_config, train
from ..train.distributed import is_main_process

_DEFAULTS = TrainConfig()

# (config field, argparse keyword arguments, help). Booleans get --x / --no-x.
OPTIONS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("model", {"metavar": "NAME"}, "registered model name (see `mobilenets list`)"),
    (
        "data",
        {"metavar": "SOURCE"},
        "'fashion-mnist', an image folder (train/ and val/ class subfolders, or "
        "class subfolders split by --val-fraction) or a CIFAR-10/100 python-format folder",
    ),
    ("out", {"metavar": "RUN_DIR"}, "folder for the run's checkpoints, metrics, plots and report"),
    (
        "resolution",
        {"type": int, "metavar": "R"},
        "input size in pixels (default: the images' own size, at "
        "least 32, for Fashion-MNIST and CIFAR; the model's for image folders)",
    ),
    ("in_chans", {"type": int, "choices": (1, 3)}, "input channels (default: 1 for Fashion-MNIST, else 3)"),
    ("width_mult", {"type": float, "metavar": "A"}, "width multiplier α (default: the model's)"),
    ("dropout", {"type": float, "metavar": "P"}, "dropout before the classifier (default: the model's)"),
    ("output_stride", {"type": int, "choices": (8, 16, 32)}, "output stride by dilation (default: 32)"),
    (
        "init",
        {"metavar": "WEIGHTS"},
        "fine-tune: start from 'pretrained' (the packaged ImageNet weights of mobilenet_v2_1.0_224), a weights file "
        "or checkpoint from `mobilenets train`, or a state dict in our or torchvision's names; the classifier is "
        "taken too when it has the data's class count, else it starts fresh (default: random initialisation)",
    ),
    (
        "freeze_features",
        {},
        "train the classifier only, on the frozen features of --init (a linear probe: fast, for few images); "
        "their BatchNorm statistics stay as loaded",
    ),
    ("epochs", {"type": int, "metavar": "N"}, "epochs to train (with --resume: may extend the run)"),
    ("batch_size", {"type": int, "metavar": "B"}, "global batch size, split over torchrun processes"),
    ("lr", {"type": float}, "peak learning rate (reached after warm-up)"),
    ("warmup_epochs", {"type": float, "metavar": "E"}, "linear learning-rate warm-up, in epochs"),
    ("schedule", {"choices": ("exponential", "cosine")}, "after warm-up: ×--lr-decay per epoch, or cosine to 0"),
    ("lr_decay", {"type": float, "metavar": "F"}, "per-epoch factor of the exponential schedule (papers: 0.98)"),
    ("rms_decay", {"type": float, "metavar": "D"}, "RMSProp decay of the mean square"),
    ("momentum", {"type": float}, "RMSProp momentum"),
    ("eps", {"type": float}, "RMSProp epsilon, inside the square root as in TensorFlow"),
    ("weight_decay", {"type": float, "metavar": "L2"}, "L2 weight decay on conv and FC weights (not BN, biases)"),
    ("depthwise_weight_decay", {"type": float, "metavar": "L2"}, "L2 weight decay on depthwise filters"),
    ("label_smoothing", {"type": float, "metavar": "S"}, "label smoothing (the paper used none)"),
    (
        "teacher",
        {"metavar": "WEIGHTS"},
        "distil from this trained teacher: a weights file or checkpoint from `mobilenets train`, 'pretrained', or a "
        "state dict (then give --teacher-model); it must classify the same classes from the same input channels",
    ),
    ("teacher_model", {"metavar": "NAME"}, "the teacher's registered name (default: the one its weights file records)"),
    ("distill_alpha", {"type": float, "metavar": "A"}, "weight of the teacher's soft targets, 1 - A on the labels"),
    ("distill_temperature", {"type": float, "metavar": "T"}, "softmax temperature of the soft targets"),
    ("ema_decay", {"type": float, "metavar": "D"}, "decay of the EMA of the weights; 0 turns the EMA off"),
    ("grad_clip", {"type": float, "metavar": "NORM"}, "clip the global gradient norm to NORM; 0: no clipping"),
    ("augment", {}, "random resized crops and flips for training (--no-augment: the evaluation transform)"),
    (
        "crop_scale",
        {"type": float, "nargs": 2, "metavar": ("LOW", "HIGH")},
        "area fraction range of the random resized crop (the paper's 'reduced distortion')",
    ),
    (
        "crop_pct",
        {"type": float, "metavar": "F"},
        "evaluation: central crop fraction (default: 1 for Fashion-MNIST and CIFAR, 0.875 for image folders)",
    ),
    ("hflip", {}, "random horizontal flips for training"),
    ("val_fraction", {"type": float, "metavar": "F"}, "share of each class held out when --data is one folder"),
    ("train_limit", {"type": int, "metavar": "N"}, "train on a random (seeded) subset of N images"),
    ("val_limit", {"type": int, "metavar": "N"}, "validate on a random (seeded) subset of N images"),
    (
        "workers",
        {"type": int, "metavar": "N"},
        "data-loading processes per training process (default: 1 on the CPU, none on a single core; up to 4 with CUDA)",
    ),
    (
        "threads",
        {"type": int, "metavar": "N"},
        "CPU compute threads per process (default: $OMP_NUM_THREADS if set, else the cores per process minus "
        "the loader processes; more threads than free cores slows training down many times)",
    ),
    ("device", {"metavar": "DEVICE"}, "torch device, e.g. cpu, cuda, cuda:1 (default: CUDA when available)"),
    (
        "amp",
        {"choices": ("auto", "none", "bf16", "fp16")},
        "mixed precision (auto: bf16 on CUDA when supported, "
        "none on the CPU; fp16 uses a gradient scaler and needs CUDA)",
    ),
    ("channels_last", {}, "channels-last memory format (faster depthwise convolutions on CPU and GPU)"),
    ("compile", {}, "torch.compile the model for training"),
    ("sync_bn", {}, "synchronise BatchNorm statistics over torchrun processes (CUDA)"),
    ("freeze_bn", {}, "keep BatchNorm in inference mode: running statistics used and not updated (fine-tuning)"),
    ("seed", {"type": int}, "seed of the initialisation, data order and augmentation"),
    ("deterministic", {}, "deterministic algorithms only (slower on CUDA)"),
)
_BOOLEANS = {f.name for f in fields(TrainConfig) if f.type in ("bool", bool)}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` command's description and options to its parser."""
    parser.description = (
        "Train a model with the MobileNets recipe (RMSProp with TensorFlow's epsilon, warm-up then exponential "
        "or cosine decay, EMA of the weights, no weight decay on depthwise filters, BN or biases). Writes a "
        "checkpoint every epoch, tracks the best weights, and ends with a short report. Run under "
        "`torchrun --nproc_per_node=N -m mobilenets train ...` for data-parallel training."
    )
    for name, kwargs, text in OPTIONS:
        flag = "--" + name.replace("_", "-")
        default = getattr(_DEFAULTS, name)
        default = " ".join(map(str, default)) if isinstance(default, tuple) else default
        shown = "" if default is None else f" (default: {default})"
        if name in _BOOLEANS:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text + shown)
        else:
            parser.add_argument(flag, default=None, help=text + ("" if "default:" in text else shown), **kwargs)
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with its saved config; only --epochs, "
        "--workers, --threads and --device may be given with it",
    )
    parser.add_argument("--json", action="store_true", help="print the final report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    given = {name: getattr(args, name) for name, _, _ in OPTIONS if getattr(args, name) is not None}
    if args.resume:
        if "out" in given and given.pop("out") != args.resume:
            raise ValueError("--out must not differ from --resume RUN_DIR: a resumed run stays in its folder")
        config = resume_config(args.resume, **given)
    else:
        config = TrainConfig(**given)
    main = is_main_process()
    try:
        result = train(config, resume=bool(args.resume))
    except NonFiniteLoss as err:
        if main:
            print(f"mobilenets train: stopped: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        if main:
            print(f"mobilenets train: {err}", file=sys.stderr)
        return 128 + err.signum
    if main:
        print(json.dumps(result.to_dict(), indent=2) if args.json else "\n" + result.format())
    return 0
