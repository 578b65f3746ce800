"""Training and evaluation of object detectors: :func:`train_detector`, :func:`evaluate_detector`.

:class:`DetectionTrainer` is the classifier's :class:`~mobilenets.train.loop.Trainer` with
detection's data (lists of images and box targets), model, optimiser, step and evaluation (COCO mAP
on the val split): the run folder, atomic checkpoints, exact resume, the stop on SIGINT/SIGTERM or a
non-finite loss and torchrun data parallelism are the classifier's. The best weights are those of
the highest mAP@[.5:.95]; they record what rebuilds the detector (model, its arguments, classes,
normalisation, data), so that ``detect eval`` and ``detect predict`` need only the file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import read_saved_weights, write_json
from ..cost import CostReport, count_cost
from ..data.detection import DEFAULT_DETECTION_DATA, collate_detection, load_detection_dataset
from ..detect import Detector, load_detector, save_drawn
from ..device import resolve_device, usable_cores
from ..models.base import MAX_RESOLUTION, MIN_RESOLUTION
from ..registry import DETECTION, check_task, create_model, get_entry, same_architecture
from . import distributed
from .config import MAX_BATCH_SIZE, RunSettings, check_types, check_values, option
from .detection_metrics import DetectionMetrics, coco_evaluate, plot_precision_recall
from .distributed import Dist
from .evaluate import autocast
from .loop import Optimisation, Trainer, resume_config, train
from .optim import param_groups
from .records import _save
from .run_files import BEST, CHECKPOINT, PREVIOUS

# The default run: SSDLite on the packaged ImageNet MobileNetV2, 3 epochs of the built-in scenes, which
# trains on two CPU cores in minutes (docs/detection.md measures it). The scenes' objects (24-160 px in
# 320 px scenes) stay 14 px or more at 192 px, which costs (192/320)² = 36 % of 320's mult-adds.
DEFAULT_DETECTOR = "ssdlite320_mobilenet_v2_1.0"
BUILTIN_RESOLUTION = 192
RANDOM_INIT = "random"  # --init value: random initialisation even where a packaged backbone exists
PREDICTIONS = "predictions"  # the run's folder of validation images drawn with the best weights' boxes
PR_CURVE = "precision_recall.png"


def canonical_detection_source(source: str) -> str:
    """``source`` as a run records it: the built-in set's name unchanged, a folder as an absolute path."""
    return source if source == DEFAULT_DETECTION_DATA else os.path.abspath(source)


@dataclass(kw_only=True)
class DetectConfig(RunSettings):
    """A detection training run, saved as ``config.json``. ``None`` means "choose from the model and the data".

    The optimiser is torchvision's detection recipe for SSDLite: SGD with momentum 0.9, weight decay
    4e-5 (not on BatchNorm or biases), linear warm-up then cosine decay to 0, stepped per batch.
    """

    model: str = option(DEFAULT_DETECTOR, "registered detector name (see `mobilenets list`)", metavar="NAME")
    data: str = option(
        DEFAULT_DETECTION_DATA,
        f"'{DEFAULT_DETECTION_DATA}' (built in: Fashion-MNIST items placed on backgrounds), a COCO-format folder "
        "or a Pascal VOC folder",
        metavar="SOURCE",
    )
    out: str = option("runs/detect", "folder for the run's checkpoints, metrics, plots and report", metavar="RUN_DIR")
    resolution: int | None = option(
        None,
        f"input size in pixels, {MIN_RESOLUTION} to {MAX_RESOLUTION} (default: {BUILTIN_RESOLUTION} on the built-in "
        "scenes, the model's own on COCO and VOC folders)",
        metavar="R",
    )
    init: str | None = option(
        None,
        "start from 'pretrained' (the packaged ImageNet MobileNetV2's backbone), a classifier's weights file (its "
        "backbone), a detector's from `mobilenets detect train` (all of it; the class heads start fresh when the "
        f"class count differs) or '{RANDOM_INIT}' (default: 'pretrained' where the project ships the backbone's "
        f"weights, MobileNetV2 at α = 1, else '{RANDOM_INIT}')",
        metavar="WEIGHTS",
    )
    epochs: int = option(3, "epochs to train (with --resume: may extend the run)", metavar="N")
    batch_size: int = option(
        32, f"global batch size, split over torchrun processes, at most {MAX_BATCH_SIZE}", metavar="B"
    )
    lr: float = option(0.02, "peak learning rate (reached after warm-up)")
    warmup_epochs: float = option(1.0, "linear learning-rate warm-up, in epochs", metavar="E")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(4e-5, "L2 weight decay on conv and linear weights (not BN, biases)", metavar="L2")
    grad_clip: float = option(0.0, "clip the global gradient norm to NORM; 0: no clipping", metavar="NORM")
    augment: bool = option(True, "box-aware augmentation for training (--no-augment: the images as they are)")
    train_limit: int | None = option(None, "train on at most N images (quick runs)", metavar="N")
    val_limit: int | None = option(None, "validate on at most N images (quick runs)", metavar="N")
    eval_every: int = option(1, "compute the validation mAP every N epochs (and after the last)", metavar="N")
    predictions: int = option(
        4, f"validation images drawn with the best weights' boxes into RUN_DIR/{PREDICTIONS}/", metavar="N"
    )

    def validate(self) -> DetectConfig:
        """Raise ``ValueError`` naming the first field of the wrong type or out of its range; return self."""
        check_types(vars(self), type(self))
        check_values(
            self,
            [
                ("model", self.model.strip() != "", "a detector's name, not empty"),
                ("out", self.out.strip() != "", "a folder path, not empty"),
                (
                    "resolution",
                    self.resolution is None or MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION,
                    f"in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]",
                ),
                (
                    "init",
                    self.init is None or self.init.strip() != "",
                    f"a weights file, 'pretrained' or '{RANDOM_INIT}', not empty",
                ),
                ("epochs", self.epochs >= 1, "an integer >= 1"),
                ("batch_size", 1 <= self.batch_size <= MAX_BATCH_SIZE, f"an integer in [1, {MAX_BATCH_SIZE}]"),
                ("lr", self.lr > 0, "> 0"),
                ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, f"in [0, epochs={self.epochs}]"),
                ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                ("weight_decay", self.weight_decay >= 0, ">= 0"),
                ("grad_clip", self.grad_clip >= 0, ">= 0 (0: no clipping)"),
                ("train_limit", self.train_limit is None or self.train_limit >= 1, "an integer >= 1"),
                ("val_limit", self.val_limit is None or self.val_limit >= 1, "an integer >= 1"),
                ("eval_every", self.eval_every >= 1, "an integer >= 1"),
                ("predictions", self.predictions >= 0, "an integer >= 0"),
                *self.settings_checks(),
            ],
        )
        return self


@dataclass(kw_only=True)
class DetectResult:
    """The outcome of a detection run: the best weights' COCO metrics, their cost, the speed, the files."""

    config: DetectConfig
    model: str
    run_dir: Path
    metrics: DetectionMetrics
    final_map: float  # mAP@[.5:.95] of the last epoch's weights
    best: dict[str, Any]  # epoch, val_map
    cost: CostReport
    images_per_s: float
    seconds: float
    val_images: int
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.config.data,
            "resolution": self.cost.resolution,
            "best": self.best,
            "final_map": self.final_map,
            "metrics": self.metrics.to_dict(),
            "val_images": self.val_images,
            "mult_adds": self.cost.mult_adds,
            "params": self.cost.params,
            "train_images_per_s": self.images_per_s,
            "seconds": self.seconds,
            "run_dir": str(self.run_dir),
            "files": self.files,
        }

    def format(self) -> str:
        m, cfg, best = self.metrics, self.config, self.run_dir / BEST
        minutes, seconds = divmod(round(self.seconds), 60)
        return "\n".join(
            [
                f"{self.model} on {cfg.data} at {self.cost.resolution}×{self.cost.resolution}: "
                f"{cfg.epochs} epochs, {minutes} min {seconds:02d} s of training",
                f"  mAP        {100 * m.map:.2f} @[.5:.95], {100 * m.map50:.2f} @.5, {100 * m.map75:.2f} @.75 on "
                f"{self.val_images:,} val images (best epoch {self.best['epoch']}; last epoch "
                f"{100 * self.final_map:.2f})",
                f"  cost       {self.cost.mult_adds / 1e6:,.2f} M mult-adds, {self.cost.params / 1e6:,.3f} M params",
                f"  speed      {self.images_per_s:,.1f} training images/s",
                f"  pictures   {self.run_dir / PREDICTIONS}/ (validation images with the best weights' boxes), "
                f"{self.run_dir / PR_CURVE}, {self.run_dir / 'curves.png'}",
                f"  files      {self.run_dir}/: {', '.join(self.files)}",
                f"  evaluate   mobilenets detect eval --weights {best}",
                f"  predict    mobilenets detect predict --weights {best} IMAGES --out DIR",
            ]
        )


def init_detector(model: nn.Module, source: str | None) -> str:
    """Load ``source`` into ``model`` and say what was loaded: a detector's weights file from
    ``detect train`` (every tensor whose shape fits: the class heads start fresh for another class
    count), else a classifier's weights or 'pretrained' into the backbone; 'random' loads nothing,
    ``None`` is 'pretrained' where the backbone has packaged weights, else 'random'."""
    from ..models.detection import has_pretrained_backbone, init_backbone  # the detectors' module

    if source is None:
        if not has_pretrained_backbone(model):
            return f"init: random initialisation (no packaged weights for {model.meta.name}'s backbone)"
        source = "pretrained"
    if source == RANDOM_INIT:
        return "init: random initialisation"
    if source != "pretrained" and not Path(source).is_file():
        raise FileNotFoundError(f"init {source!r} is not a file; give 'pretrained' or a weights file")
    state, info = read_saved_weights(source) if source != "pretrained" else ({}, {})
    if info.get("task") == DETECTION:
        if not same_architecture(info["model"], model.meta.name):
            raise ValueError(f"init {source!r} holds a {info['model']!r} detector, not a {model.meta.name!r}")
        own = model.state_dict()
        fits = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
        model.load_state_dict(fits, strict=False)
        fresh = f"; {len(own) - len(fits)} start fresh (another class count)" if len(fits) < len(own) else ""
        return f"init: {len(fits)} of {len(own)} tensors from the detector {source}{fresh}"
    return f"init: {init_backbone(model, source)}"


def as_targets(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The data's targets as detectors take them: plain box and label tensors on ``device``."""
    return [
        {
            "boxes": t["boxes"].as_subclass(torch.Tensor).to(device, non_blocking=True),
            "labels": t["labels"].to(device, non_blocking=True),
        }
        for t in targets
    ]


@torch.no_grad()
def detect_all(model: nn.Module, loader: DataLoader, *, device: torch.device) -> list[dict[str, Any]]:
    """Run ``model`` (in eval mode) over ``loader``; one ``{"image_id", "boxes", "scores", "labels"}``
    (CPU tensors) per image. In float32 even when training uses mixed precision: boxes decoded from
    bf16 regressions would move by about a pixel at 320 px, which mAP@.95 notices."""
    was_training = model.training
    model.eval()
    detections = []
    for images, targets in loader:
        outputs = model([image.to(device, non_blocking=True) for image in images])
        for output, target in zip(outputs, targets, strict=True):
            detections.append(
                {"image_id": int(target["image_id"])} | {k: output[k].float().cpu() for k in ("boxes", "scores")}
            )
            detections[-1]["labels"] = output["labels"].cpu()
    model.train(was_training)
    return detections


def evaluate_detector(
    model: nn.Module,
    loader: DataLoader,
    dataset: Any,
    *,
    device: torch.device,
    env: Dist | None = None,
) -> DetectionMetrics:
    """COCO metrics of ``model`` on ``loader``'s images of ``dataset`` (its ``coco`` ground truth and
    ``classes``); under ``torchrun`` each process detects its share and all gather them."""
    detections = detect_all(model, loader, device=device)
    if env is not None and env.enabled:
        shares: list[Any] = [None] * env.world_size
        distributed.dist.all_gather_object(shares, detections)
        detections = [d for share in shares for d in share]
    return coco_evaluate(dataset.coco, detections, list(dataset.classes))


def draw_predictions(model: nn.Module, dataset: Any, folder: Path, *, count: int, device: torch.device) -> int:
    """Write the first ``count`` images of ``dataset`` with ``model``'s boxes drawn (those scoring at
    least the default threshold) as PNGs into ``folder``; return how many."""
    folder.mkdir(parents=True, exist_ok=True)
    detector = Detector(model, list(dataset.classes), device=device)
    count = min(count, len(dataset))
    for index in range(count):
        pixels, target = dataset[index]
        detections = detector.detect(pixels.as_subclass(torch.Tensor))
        save_drawn(pixels, detections, detector.classes, folder / f"val_{int(target['image_id'])}.png")
    return count


def plot_detection_curves(records: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Training loss, validation mAP (@[.5:.95] and @.5, the epochs evaluated) and learning rate per epoch, as a PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    loss_ax, map_ax, lr_ax = fig.subplots(1, 3)
    loss_ax.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train")
    evaluated = [r for r in records if "val_map" in r]
    for key, label in (("val_map", "mAP@[.5:.95]"), ("val_map50", "mAP@.5")):
        map_ax.plot([r["epoch"] for r in evaluated], [100 * r[key] for r in evaluated], marker="o", label=label)
    lr_ax.plot(epochs, [r["lr"] for r in records], marker="o")
    for ax, name in ((loss_ax, "training loss (sum of the detector's)"), (map_ax, "val mAP (%)"), (lr_ax, "lr")):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.set_ylim(bottom=0)
    map_ax.set_ylim(0, 100)
    map_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)


class DetectionTrainer(Trainer):
    """One detection run; see :func:`train_detector`."""

    command = "mobilenets detect train"
    canonical_data = staticmethod(canonical_detection_source)
    collate = staticmethod(collate_detection)

    config: DetectConfig

    def _build_data(self) -> None:
        cfg = self.config
        check_task(cfg.model, DETECTION)
        entry = get_entry(cfg.model)
        builtin = BUILTIN_RESOLUTION if cfg.data == DEFAULT_DETECTION_DATA else None
        self.in_chans, self.resolution = 3, cfg.resolution or builtin or entry.resolution
        self.mean, self.std = entry.mean, entry.std
        common = {"resolution": self.resolution, "seed": cfg.seed}
        self.train_set = load_detection_dataset(cfg.data, "train", train=cfg.augment, limit=cfg.train_limit, **common)
        self.val_set = load_detection_dataset(cfg.data, "val", train=False, limit=cfg.val_limit, **common)
        self.classes = list(self.train_set.classes)
        if list(self.val_set.classes) != self.classes:
            raise ValueError(f"data {cfg.data!r}: its train and val splits name different classes")
        for split in (self.train_set, self.val_set):
            if any(split.skipped.values()):
                counts = ", ".join(f"{n} {reason}" for reason, n in split.skipped.items() if n)
                self.notes.append(f"data: {split.split} split: skipped {counts}")
        self._build_loaders()

    def _build_model(self, resume: bool) -> None:
        cfg = self.config
        self.name = cfg.model
        self.model_args = {"num_classes": len(self.classes) + 1, "resolution": self.resolution}  # + background
        net = create_model(self.name, **self.model_args)
        if not resume:  # a resumed run takes every weight from its checkpoint
            self.notes.append(init_detector(net, cfg.init))
        self.cost = count_cost(net)
        self.net = net.to(self.device, memory_format=self.memory_format)
        optimizer = torch.optim.SGD(
            param_groups(self.net, cfg.weight_decay, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum
        )
        self.optimisation = Optimisation.warmup_cosine(
            optimizer, cfg, steps_per_epoch=self.steps_per_epoch, device=self.device, amp=self.amp
        )
        self.ema = None
        self.model = self._parallel()

    @property
    def info(self) -> dict[str, Any]:
        return {
            "task": DETECTION,
            "model": self.name,
            "model_args": self.model_args,
            "classes": self.classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "data": self.config.data,
        }

    def _step(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> torch.Tensor:
        """One optimiser step; returns (loss × images, 0, images, 0) for the batch (the loop's sums)."""
        images = [image.as_subclass(torch.Tensor).to(self.device, non_blocking=True) for image in images]
        with autocast(self.device, self.amp):
            losses = self.model(images, as_targets(targets, self.device))
        loss = sum(losses.values()).float()
        self.optimisation.step(loss, self.net.parameters(), self.config.grad_clip)
        count = torch.tensor(float(len(images)), device=self.device)
        return torch.stack([loss.detach() * count, torch.zeros_like(count), count, torch.zeros_like(count)]).double()

    def _evaluate(self, model: nn.Module) -> DetectionMetrics:
        return evaluate_detector(model, self.val_loader, self.val_set, device=self.device, env=self.env)

    def _end_epoch(self) -> None:
        cfg, progress = self.config, self.progress
        p = progress.partial
        epoch = progress.epoch + 1
        metrics = self._evaluate(self.net) if epoch % cfg.eval_every == 0 or epoch == cfg.epochs else None
        self._check_finite({}, f"at the end of epoch {epoch}")
        progress.epoch, progress.step_in_epoch = epoch, 0
        rate = p["seen"] / max(p["seconds"], 1e-9)
        progress.elapsed += p["seconds"]
        progress.images_per_s.append(rate)
        record: dict[str, Any] = {"epoch": epoch, "lr": self.optimisation.lr, "train_loss": p["loss_sum"] / p["seen"]}
        if metrics is not None:
            record.update(val_map=metrics.map, val_map50=metrics.map50, val_map75=metrics.map75)
            if metrics.map > progress.best.get("val_map", -1.0):
                progress.best = {"epoch": epoch, "weights": "raw", "val_map": metrics.map}
                self.files.save_best(self.net.state_dict(), {**self.info, **progress.best})
        record.update(images_per_s=rate, epoch_seconds=p["seconds"])
        if self.files.metrics:
            self.files.metrics.append(record)
            plot_detection_curves(self.files.metrics.records, self.run_dir / "curves.png", self.files.title)
        self._save_checkpoint()
        evaluated = "" if metrics is None else f", val mAP {100 * metrics.map:.2f} (@.5 {100 * metrics.map50:.2f})"
        self.log(
            f"epoch {epoch}/{cfg.epochs}: train loss {record['train_loss']:.4f}{evaluated}, "
            f"lr {record['lr']:.3g}, {rate:,.1f} img/s, {p['seconds']:.1f} s"
        )
        if self.stop["signum"] and epoch < cfg.epochs:
            raise self._interrupted(self.stop["signum"], f"at the end of epoch {epoch}")

    def _finish(self) -> DetectResult:
        """Evaluate the best weights, draw their boxes on a few validation images, write the
        precision-recall curves and ``report.json``."""
        if self.env.enabled:
            distributed.dist.barrier()
        state, _ = read_saved_weights(self.files.best)
        model = create_model(self.name, **self.model_args).to(self.device, memory_format=self.memory_format)
        model.load_state_dict(state)
        metrics = self._evaluate(model)
        names = [BEST, CHECKPOINT, "config.json", "metrics.csv", "metrics.jsonl", "curves.png"]
        if self.files.previous.is_file():
            names.insert(2, PREVIOUS)
        if self.env.is_main:
            plot_precision_recall(metrics, self.run_dir / PR_CURVE)
            drawn = draw_predictions(
                model, self.val_set, self.run_dir / PREDICTIONS, count=self.config.predictions, device=self.device
            )
            names += [PR_CURVE] + ([f"{PREDICTIONS}/ ({drawn} images)"] if drawn else [])
        records = self.files.records
        final = next((r["val_map"] for r in reversed(records) if "val_map" in r), metrics.map)
        result = DetectResult(
            config=self.config,
            model=self.name,
            run_dir=self.run_dir,
            metrics=metrics,
            final_map=final,
            best=self.progress.best,
            cost=self.cost,
            images_per_s=float(np.mean(self.progress.images_per_s)),
            seconds=self.progress.elapsed,
            val_images=len(self.val_set),
            files=[*names, "report.json"],
        )
        if self.env.is_main:
            write_json(self.run_dir / "report.json", result.to_dict())
        return result


def train_detector(config: DetectConfig, resume: bool = False) -> DetectResult:
    """Train ``config.model`` on ``config.data`` into ``config.out`` (see :func:`mobilenets.train.train`:
    the same guarantees, errors and ``torchrun`` use); with ``resume``, continue the run there."""
    return train(config, resume, trainer=DetectionTrainer)


def evaluate_detection_weights(
    weights: str | os.PathLike,
    data: str | None = None,
    *,
    split: str = "val",
    limit: int | None = None,
    batch_size: int = 8,
    workers: int = 0,
    device: str | None = None,
) -> tuple[DetectionMetrics, dict[str, Any]]:
    """COCO metrics of a detector's weights from ``detect train`` on a split of ``data`` (default:
    the data it was trained on), and the file's info."""
    cores = usable_cores()
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be an integer in [1, {MAX_BATCH_SIZE}], got {batch_size!r}")
    if not isinstance(workers, int) or not 0 <= workers <= cores:
        raise ValueError(f"workers must be an integer in [0, {cores}] (the cores), got {workers!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    model, classes = load_detector(weights)
    _, info = read_saved_weights(weights)
    data = data if data is not None else info["data"]
    resolution = info["model_args"].get("resolution", model.meta.resolution)
    dataset = load_detection_dataset(data, split, train=False, resolution=resolution, limit=limit)
    if list(dataset.classes) != classes:
        raise ValueError(
            f"weights {str(weights)!r} detect {len(classes)} classes ({', '.join(classes[:4])}...), data {data!r} "
            f"has {len(dataset.classes)} others"
        )
    target = resolve_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_detection)
    started = time.perf_counter()
    metrics = evaluate_detector(model.to(target), loader, dataset, device=target)
    info = {**info, "data": data, "split": split, "images": len(dataset), "seconds": time.perf_counter() - started}
    return metrics, info


def resume_detection_config(run_dir: str | Path, **changes: Any) -> DetectConfig:
    """The config of the detection run in ``run_dir``, with ``changes`` to the fields that may change on resume."""
    return resume_config(run_dir, config_type=DetectConfig, **changes)


__all__ = [
    "DEFAULT_DETECTOR",
    "DetectConfig",
    "DetectResult",
    "DetectionTrainer",
    "evaluate_detection_weights",
    "evaluate_detector",
    "init_detector",
    "resume_detection_config",
    "train_detector",
]
