"""The training loop: data, model, recipe, resume, interruption and the final report.

:class:`Trainer` sets a run up and drives it; what it keeps is split out: :class:`RunState` (where
the run stands), :class:`Optimisation` (optimiser, schedule, gradient scaler) and
:class:`~mobilenets.train.run_files.RunFiles` (the run folder, written by rank 0 only).

Determinism: the data order of epoch e is a seeded shuffle of (seed, e); every random generator is
re-seeded from (seed, e, rank) when an epoch starts and saved in each checkpoint. A run resumed
from the end of an epoch therefore computes exactly what the uninterrupted run computes (bitwise on
the CPU). A run resumed from the middle of an epoch (after SIGINT/SIGTERM) skips the batches
already trained on; it is exact too with ``workers=0``, since loader processes start afresh.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ..checkpoint import read_saved_weights, rng_state, set_rng_state
from ..cost import CostReport, count_cost
from ..data import UNREADABLE, canonical_source, eval_crop_pct, inspect_source, load_dataset
from ..data.batched import (
    ArrayView,
    BatchAugment,
    BatchedEvalLoader,
    BatchedTrainLoader,
    array_view,
    batch_transform,
)
from ..device import default_threads, keep_freed_memory, usable_cores
from ..models.base import check_resolution
from ..registry import create_model, get_entry, name_for
from ..weights import WeightsFile, init_from, model_from, read_weights_source
from . import distributed
from .config import RESUMABLE, RunConfig, TrainConfig
from .distill import soft_target_loss
from .distributed import Dist, ResumableSampler, all_reduce
from .ema import ModelEma
from .evaluate import EvalResult, autocast, evaluate, resolve_input
from .optim import RMSpropTF, build_scheduler, param_groups
from .run_files import BEST, RunFiles, lock_run_dir

SUMS = ("loss_sum", "correct", "seen", "skipped")  # per-epoch training totals, over all processes


class NonFiniteLoss(RuntimeError):
    """The loss, the validation loss, a weight or a BatchNorm statistic became NaN or infinite;
    nothing was saved after the last good checkpoint."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written and the run can be resumed."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass(kw_only=True)
class TrainResult:
    """The outcome of a run: the best weights' evaluation, their cost, the speed, the files."""

    config: TrainConfig
    model: str  # the model trained, named for its width and input size (``config.model`` at 32 px: ..._32)
    run_dir: Path
    evaluation: EvalResult
    best: dict[str, Any]  # epoch, weights ("raw" or "ema"), val_top1
    cost: CostReport
    images_per_s: float
    seconds: float
    skipped: int  # unreadable images left out in the last epoch (training and validation)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.config.data,
            "resolution": self.cost.resolution,
            "best": self.best,
            "evaluation": self.evaluation.to_dict(),
            "mult_adds": self.cost.mult_adds,
            "params": self.cost.params,
            "train_images_per_s": self.images_per_s,
            "seconds": self.seconds,
            "skipped_unreadable": self.skipped,
            "run_dir": str(self.run_dir),
            "files": self.files,
        }

    def format(self) -> str:
        ev, cfg = self.evaluation, self.config
        minutes, seconds = divmod(round(self.seconds), 60)
        lines = [
            f"{self.model} on {cfg.data} at {self.cost.resolution}×{self.cost.resolution}: "
            f"{cfg.epochs} epochs, {minutes} min {seconds:02d} s of training",
            f"  {ev.headline()} on {ev.count:,} val images "
            f"(best epoch {self.best['epoch']}, {self.best['weights']} weights)",
            f"  cost       {self.cost.mult_adds / 1e6:,.2f} M mult-adds, {self.cost.params / 1e6:,.3f} M params",
            f"  speed      {self.images_per_s:,.0f} training images/s",
            f"  files      {self.run_dir}/: {', '.join(self.files)}",
            f"  evaluate   mobilenets eval --weights {self.run_dir / BEST} --data {cfg.data}",
            f"  deploy     mobilenets deploy {self.run_dir}",
        ]
        if self.skipped:
            lines.insert(4, f"  skipped    {self.skipped} unreadable images per epoch (named in the warnings above)")
        return "\n".join(lines)


def default_workers(env: Dist) -> int:
    """Loader processes per training process: up to 4 with CUDA, 1 on the CPU, none on one core."""
    cores = usable_cores() // env.world_size
    return min(4, max(0, cores - 1)) if env.device.type == "cuda" else min(1, max(0, cores - 1))


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` ("auto": bf16 on CUDA when supported, none on the CPU)."""
    if mode == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("amp must be 'bf16' or 'none' on the CPU; 'fp16' needs CUDA")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 63-bit seed for one process's epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: loader processes leave it to the trainer, which
    # finishes its step and writes a checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _stop_on_signals() -> Iterator[dict[str, int]]:
    """Record SIGINT/SIGTERM in the yielded dict instead of dying; a second SIGINT interrupts at once."""
    flag: dict[str, int] = {"signum": 0}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: Any) -> None:
        if flag["signum"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass(kw_only=True)
class RunState:
    """Where a run stands: epochs done, steps done in the current one and its running totals
    (``SUMS`` and seconds), the best epoch so far, the training time and speed of each epoch."""

    epoch: int = 0
    step_in_epoch: int = 0
    partial: dict[str, float] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "weights": "raw", "val_top1": -1.0})
    elapsed: float = 0.0  # seconds
    images_per_s: list[float] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in fields(self):
            setattr(self, f.name, state[f.name])


@dataclass(kw_only=True)
class Optimisation:
    """The optimiser, its per-step learning-rate schedule and the gradient scaler (fp16 only)."""

    optimizer: RMSpropTF
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    @classmethod
    def build(
        cls,
        net: nn.Module,
        cfg: TrainConfig,
        *,
        steps_per_epoch: int,
        device: torch.device,
        amp: torch.dtype | None,
    ) -> Optimisation:
        """The paper's recipe for ``net``: RMSProp (TensorFlow's arithmetic), no weight decay on BN,
        biases or (unless asked) depthwise filters; warm-up then ``cfg.schedule``, stepped per batch."""
        optimizer = RMSpropTF(
            param_groups(net, cfg.weight_decay, cfg.depthwise_weight_decay),
            lr=cfg.lr,
            decay=cfg.rms_decay,
            momentum=cfg.momentum,
            eps=cfg.eps,
        )
        scheduler = build_scheduler(
            optimizer,
            steps_per_epoch=steps_per_epoch,
            epochs=cfg.epochs,
            warmup_epochs=cfg.warmup_epochs,
            schedule=cfg.schedule,
            decay=cfg.lr_decay,
        )
        return cls(
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=torch.amp.GradScaler(device.type, enabled=amp is torch.float16),
        )

    @classmethod
    def warmup_cosine(
        cls,
        optimizer: torch.optim.Optimizer,
        cfg: Any,
        *,
        steps_per_epoch: int,
        device: torch.device,
        amp: torch.dtype | None,
    ) -> Optimisation:
        """``optimizer`` with ``cfg.warmup_epochs`` of linear warm-up then cosine decay to 0 over
        ``cfg.epochs``, stepped per batch (the detection and embedding recipes)."""
        scheduler = build_scheduler(
            optimizer,
            steps_per_epoch=steps_per_epoch,
            epochs=cfg.epochs,
            warmup_epochs=cfg.warmup_epochs,
            schedule="cosine",
            decay=1.0,
        )
        return cls(
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=torch.amp.GradScaler(device.type, enabled=amp is torch.float16),
        )

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, loss: torch.Tensor, params: Iterator[nn.Parameter], grad_clip: float) -> None:
        """Back-propagate ``loss``, clip the gradients' global norm to ``grad_clip`` (0: none), step."""
        self.scaler.scale(loss).backward()
        if grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


class Trainer:
    """One training run; see :func:`train`."""

    command = "mobilenets train"  # the command that resumes the run, as an interruption names it
    canonical_data = staticmethod(canonical_source)  # the data source as the run records it
    evaluator = staticmethod(evaluate)  # scores a model on the val loader (a task's own for another task)
    collate: Any = None  # the loaders' collate_fn (None: torch's default, stacking images and labels)
    run_files = RunFiles  # the run folder's writer

    def __init__(self, config: TrainConfig, resume: bool, env: Dist) -> None:
        # The data path is recorded absolute: the run's config and weights find it from any folder.
        self.config = replace(config.validate(), data=self.canonical_data(config.data))
        self.env = env
        self.device = env.device
        self.run_dir = Path(config.out)
        self.files = self.run_files(self.run_dir, write=env.is_main)
        self.amp = amp_dtype(config.amp, self.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        if not resume:
            self.files.refuse_existing()
        checkpoint = self.files.read_checkpoint() if resume else None
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = not config.deterministic
        torch.manual_seed(config.seed)
        self.notes: list[str] = []  # what the set-up did, printed after the config when the run starts
        # Training steps allocate and free the same large blocks every step (docs/benchmarks.md).
        self.keeps_freed_memory = self.device.type == "cpu" and keep_freed_memory()
        self._build_data()
        self._build_model(resume)
        self.progress = RunState()
        if checkpoint:
            self._load(checkpoint)

    # --- set-up ------------------------------------------------------------------------------

    def _build_data(self) -> None:
        cfg = self.config
        info = inspect_source(cfg.data)
        self.in_chans, self.resolution = resolve_input(
            cfg.model, info, in_chans=cfg.in_chans, resolution=cfg.resolution
        )
        self.crop_pct = eval_crop_pct(info, cfg.crop_pct)
        if cfg.resize_from is not None and cfg.resize_from >= self.resolution:
            raise ValueError(
                f"resize_from must be below the resolution {self.resolution} it grows to, got {cfg.resize_from}"
            )
        self._read_teacher()
        entry = get_entry(cfg.model)
        self.mean, self.std = entry.mean, entry.std
        common = {
            "crop_scale": cfg.crop_scale,
            "crop_pct": self.crop_pct,
            "hflip": cfg.hflip,
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "in_chans": self.in_chans,
            "mean": self.mean,
            "std": self.std,
        }
        self.train_set = load_dataset(
            cfg.data, "train", train=cfg.augment, limit=cfg.train_limit, resolution=self.train_resolution, **common
        )
        val_set = load_dataset(cfg.data, "val", train=False, limit=cfg.val_limit, resolution=self.resolution, **common)
        self.classes: list[str] = list(self.train_set.classes)
        self.val_set = val_set
        self._build_loaders()

    def _build_loaders(self) -> None:
        """Batch size, loader processes, threads, the resumable sampler and the loaders of
        ``self.train_set`` and ``self.val_set``."""
        cfg, env = self.config, self.env
        if cfg.batch_size % env.world_size:
            raise ValueError(f"batch_size must be a multiple of the {env.world_size} processes, got {cfg.batch_size}")
        batch_size = min(cfg.batch_size, len(self.train_set) // env.world_size * env.world_size)
        if batch_size == 0:
            raise ValueError(
                f"data {cfg.data!r}: its {len(self.train_set)} training images are fewer than the "
                f"{env.world_size} processes"
            )
        if batch_size < cfg.batch_size:
            self.notes.append(
                f"batch_size: {cfg.batch_size} is more than the {len(self.train_set)} training images; "
                f"batches of {batch_size} instead"
            )
        self.local_batch = batch_size // env.world_size
        # In-memory array sets are batched unless turned off; only a classification config has the
        # option (the detection and embedding trainers keep per-image loading).
        arrays = array_view(self.train_set)
        arrays = arrays if arrays and getattr(cfg, "batched_augment", False) else None
        self.workers = 0 if arrays else cfg.workers if cfg.workers is not None else default_workers(env)
        # Batched runs leave free the cores loader processes would take: on 2 cores shared with other
        # jobs, 2 threads trained 17× slower than 1 (docs/benchmarks.md); --threads to use them.
        spare = default_workers(env) if arrays else self.workers
        if env.device.type == "cpu":
            torch.set_num_threads(cfg.threads or default_threads(spare, processes=env.world_size))
        self.sampler = ResumableSampler(self.train_set, env, cfg.seed)
        self.loader_generator = torch.Generator()
        val_shard = Subset(self.val_set, distributed.shard(len(self.val_set), env))
        if arrays:
            self._batched_loaders(arrays, val_shard)
        else:
            self.train_loader = self._loader(self.train_set, self.sampler, drop_last=True)
            self.val_loader = self._loader(val_shard, None, drop_last=False)
        self.steps_per_epoch = self.sampler.num_samples // self.local_batch

    def _batched_loaders(self, train: ArrayView, val_shard: Dataset) -> None:
        """Loaders for an in-memory array set: whole batches transformed on the training device."""
        cfg = self.config
        if cfg.augment:
            augment = BatchAugment(
                resolution=self.train_resolution,
                in_chans=self.in_chans,
                mean=self.mean,
                std=self.std,
                crop_scale=cfg.crop_scale,
                hflip=cfg.hflip,
            )
        else:  # the training set's transform is then the evaluation one
            plain = batch_transform(train.transform)

            def augment(batch: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
                return plain(batch)

        self.train_loader = BatchedTrainLoader(
            train.images,
            train.labels,
            sampler=self.sampler,
            batch_size=self.local_batch,
            augment=augment,
            epoch_generator=self.loader_generator,
            device=self.device,
            memory_format=self.memory_format,
        )
        val = array_view(val_shard)
        self.val_loader = BatchedEvalLoader(
            val.images,
            val.labels,
            transform=batch_transform(val.transform),
            out_elements=self.in_chans * self.resolution**2,
            min_batch=self.local_batch,
            device=self.device,
        )
        given = " (--workers is not used)" if cfg.workers else ""
        self.notes.append(
            f"data: batched augmentation: the images are held on {self.device} and each batch is "
            f"{'cropped, flipped and ' if cfg.augment else 'resized and '}normalised there at once, without "
            f"loader processes{given}; --no-batched-augment: per-image transforms in loader processes"
        )

    def _loader(self, dataset: Dataset, sampler: ResumableSampler | None, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.local_batch,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            generator=self.loader_generator,
            worker_init_fn=_ignore_sigint if self.workers else None,
            collate_fn=self.collate,
        )

    def _read_teacher(self) -> None:
        """Read the teacher's weights (once: the teacher is built from them after the data) and choose
        the inputs' sizes: ``teacher_resolution`` (--teacher-resolution, else the size its weights
        record they were trained at, else the student's) and ``train_resolution``, the larger of it
        and the student's, at which training batches are prepared (``_forward`` resizes them to each
        model's own, so that the larger model sees real detail)."""
        cfg = self.config
        self.teacher_weights: WeightsFile | None = None
        self.teacher_resolution = self.train_resolution = self.resolution
        if cfg.teacher is None:
            return
        self.teacher_weights = read_weights_source(cfg.teacher, cfg.teacher_model or "")
        recorded = self.teacher_weights.info.get("model_args", {}).get("resolution")
        if cfg.teacher_resolution is not None:
            self.teacher_resolution, why = cfg.teacher_resolution, "--teacher-resolution"
        elif recorded is not None:
            try:
                self.teacher_resolution = check_resolution(recorded)
            except ValueError as err:
                raise ValueError(f"teacher {cfg.teacher!r} records an input size out of range: {err}") from None
            why = "the size its weights record it was trained at"
        else:
            why = "the student's: its weights record no training size"
        self.train_resolution = max(self.resolution, self.teacher_resolution)
        size = self.teacher_resolution
        self.teacher_input = f"fed {size}×{size} images ({why})"
        if size != self.resolution:
            smaller, who = min(size, self.resolution), "student" if size > self.resolution else "teacher"
            made = f"training batches made at {self.train_resolution} px"
            self.teacher_input += f"; {made}, resized to {smaller} px for the {who}"

    def _build_teacher(self) -> nn.Module:
        """The distillation teacher: frozen, in eval mode, on this process's device."""
        cfg = self.config
        teacher = model_from(
            self.teacher_weights,
            cfg.teacher_model,
            defaults={"num_classes": len(self.classes), "in_chans": self.in_chans},
        )
        meta = teacher.meta
        if (meta.num_classes, meta.in_chans) != (len(self.classes), self.in_chans):
            raise ValueError(
                f"teacher {cfg.teacher!r} classifies {meta.num_classes} classes from {meta.in_chans}-channel input; "
                f"the data has {len(self.classes)} classes and the student takes {self.in_chans} channels"
            )
        cost = count_cost(teacher, self.teacher_resolution)
        self.notes.append(
            f"distill: teacher {meta.name} from {cfg.teacher} ({cost.mult_adds / 1e6:,.2f} M mult-adds), "
            f"{self.teacher_input}; alpha {cfg.distill_alpha}, temperature {cfg.distill_temperature}"
        )
        return teacher.to(self.device, memory_format=self.memory_format).eval().requires_grad_(False)

    def _build_model(self, resume: bool) -> None:
        cfg = self.config
        self.model_args = {
            "num_classes": len(self.classes),
            "in_chans": self.in_chans,
            "resolution": self.resolution,
            **cfg.model_overrides(),
        }
        # The run's name says what it trains: mobilenet_v1_0.25_128 trained at 32 px is mobilenet_v1_0.25_32.
        self.name = name_for(cfg.model, **self.model_args)
        net = create_model(self.name, **self.model_args)
        if cfg.init and not resume:  # a resumed run takes every weight from its checkpoint
            try:
                head = init_from(net, cfg.init)
            except ValueError as err:
                raise ValueError(
                    f"init: {err} (the model is built for {self.in_chans}-channel input: --model, --width-mult and "
                    "--in-chans must be those of the weights)"
                ) from None
            fresh = f"(a fresh {len(self.classes)}-class classifier)"
            self.notes.append(f"init: weights from {cfg.init} {'and its classifier' if head else fresh}")
        if cfg.freeze_features:
            net.features.requires_grad_(False)
        self.cost = count_cost(net)
        self.teacher = self._build_teacher() if cfg.teacher else None
        if cfg.sync_bn and self.device.type == "cpu":
            raise ValueError("sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); use freeze_bn instead")
        if cfg.sync_bn and self.env.enabled:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net.to(self.device, memory_format=self.memory_format)
        self.optimisation = Optimisation.build(
            self.net, cfg, steps_per_epoch=self.steps_per_epoch, device=self.device, amp=self.amp
        )
        self.ema = ModelEma(self.net, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.criterion = nn.CrossEntropyLoss(
            reduction="sum", ignore_index=UNREADABLE, label_smoothing=cfg.label_smoothing
        )
        model = self._parallel()
        self.model = torch.compile(model) if cfg.compile else model

    def _parallel(self) -> nn.Module:
        """``self.net``, wrapped for data parallelism when the run has several processes."""
        if not self.env.enabled:
            return self.net
        return DistributedDataParallel(
            self.net, device_ids=[self.device.index] if self.device.index is not None else None
        )

    @property
    def info(self) -> dict[str, Any]:
        """What a weights file records so that the model can be rebuilt and fed the same way."""
        return {
            "model": self.name,
            "model_args": self.model_args,
            "classes": self.classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "data": self.config.data,
            "val_fraction": self.config.val_fraction,
            "crop_pct": self.crop_pct,
        }

    # --- state -------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "config": self.config.to_dict(),
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            **self.optimisation.state_dict(),
            "rng": rng_state(),
            "progress": self.progress.state_dict(),
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.optimisation.load_state_dict(state)
        self.progress.load_state_dict(state["progress"])
        # Only the main process's generators are saved; they matter only mid-epoch, since every
        # epoch starts by re-seeding.
        if self.env.is_main and self.progress.step_in_epoch:
            set_rng_state(state["rng"])

    def _save_checkpoint(self) -> None:
        self.files.save_checkpoint(self._state(), self.progress.epoch)

    def _non_finite(self, what: str, where: str) -> NonFiniteLoss:
        kept = (
            f"the last good checkpoint, {self.files.checkpoint} (epoch {self.files.saved_epoch}), is kept"
            if self.files.saved_epoch is not None
            else "no checkpoint had been written yet"
        )
        return NonFiniteLoss(
            f"{what} became NaN or infinite {where}; training stopped and {kept}. "
            "Try a lower --lr, --grad-clip or --amp none."
        )

    def _check_finite(self, losses: dict[str, float], where: str) -> None:
        """Raise :class:`NonFiniteLoss` if any of ``losses`` or of the model's (or EMA's) weights and
        BatchNorm statistics is NaN or infinite on any process; call before writing any checkpoint."""
        models = {"weights or BatchNorm statistics": self.net} | ({"EMA weights": self.ema.module} if self.ema else {})
        flags = [torch.tensor(not math.isfinite(value), device=self.device) for value in losses.values()]
        for model in models.values():
            tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
            flags.append(~torch.stack([t.isfinite().all() for t in tensors]).all())
        bad = all_reduce(torch.stack(flags).float(), self.env, distributed.dist.ReduceOp.MAX).tolist()
        names = [name for name, flag in zip([*losses, *models], bad, strict=True) if flag]
        if names:
            raise self._non_finite(" and ".join(names), where)

    def _add_to_partial(self, sums: torch.Tensor) -> None:
        """Sum this process's running totals over the job into the epoch's totals."""
        all_reduce(sums, self.env)
        for key, value in zip(SUMS, sums.tolist(), strict=True):
            self.progress.partial[key] += value

    # --- the loop ----------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.env.is_main:
            print(message, flush=True)

    def run(self) -> TrainResult:
        cfg = self.config
        self.files.start(cfg, self.progress.epoch, title=f"{self.name} on {cfg.data}", resolution=self.resolution)
        self.log(cfg.format())
        self.log(
            f"{self.name}: {self.cost.mult_adds / 1e6:,.2f} M mult-adds, {self.cost.params / 1e6:,.3f} M params at "
            f"{self.resolution}×{self.resolution}×{self.in_chans}; {len(self.train_set):,} train / "
            f"{len(self.val_set):,} val images, {len(self.classes)} classes; {self.env.world_size} process(es) on "
            f"{self.device} ({torch.get_num_threads()} threads), {self.workers} loader process(es) each, amp {self.amp}"
            + ("; freed memory kept for reuse" if self.keeps_freed_memory else "")
        )
        for note in self.notes:
            self.log(note)
        with _stop_on_signals() as stop:
            self.stop = stop
            while self.progress.epoch < cfg.epochs:
                self._train_epoch()
                self._end_epoch()
        return self._finish()

    def _train_epoch(self) -> None:
        cfg, env, progress = self.config, self.env, self.progress
        resuming_mid_epoch = progress.step_in_epoch > 0
        if not resuming_mid_epoch:
            torch.manual_seed(epoch_seed(cfg.seed, progress.epoch, env.rank))
            progress.partial = dict.fromkeys([*SUMS, "seconds"], 0.0)
        self.loader_generator.manual_seed(epoch_seed(cfg.seed, progress.epoch, env.rank) ^ 1)
        self.sampler.set_epoch(progress.epoch, skip=progress.step_in_epoch * self.local_batch)
        self.model.train()
        if cfg.freeze_bn:
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        if cfg.freeze_features:
            self.net.features.eval()  # frozen layers: BatchNorm uses and keeps its running statistics
        # Running sums on the device, read back only every `sync_every` steps (each read waits for the GPU).
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, correct, seen, skipped
        sync_every = 1 if self.device.type == "cpu" else 25
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=progress.step_in_epoch,
            desc=f"epoch {progress.epoch + 1}/{cfg.epochs}",
            disable=None if env.is_main else True,
            leave=False,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        for images, labels in self.train_loader:
            sums += self._step(images, labels)
            progress.step_in_epoch += 1
            bar.update(1)
            last = progress.step_in_epoch == self.steps_per_epoch
            if progress.step_in_epoch % sync_every == 0 or last:
                seen = sums[2].item()
                seconds = time.perf_counter() - start
                bar.set_postfix(**self._bar_figures(sums, last), img_s=f"{seen * env.world_size / seconds:.0f}")
                self._check(sums, last, seconds)
        bar.close()
        self._add_to_partial(sums)
        progress.partial["seconds"] += time.perf_counter() - start

    def _forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``labels`` on the device, the model's float32 outputs for ``images`` and the teacher's
        (None without a teacher), both under the run's autocast; ``images`` (N, C, R, R) at
        ``train_resolution``, each model's input resized to its own size where it differs."""
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        labels = labels.to(self.device, non_blocking=True)
        student_input = self._resized(images, self.epoch_resolution())
        teacher_input = self._resized(images, self.teacher_resolution) if self.teacher is not None else None
        teacher_outputs = None
        with autocast(self.device, self.amp):
            outputs = self.model(student_input).float()
            if teacher_input is not None:
                with torch.no_grad():
                    teacher_outputs = self.teacher(teacher_input).float()
        return labels, outputs, teacher_outputs

    def epoch_resolution(self) -> int:
        """The student's training input size in the current epoch: ``--resolution``, or with
        ``--resize-from R`` R growing linearly to it over the first half of the epochs (rounded down)."""
        start, epochs = self.config.resize_from, self.config.epochs
        if start is None or self.progress.epoch >= epochs / 2:
            return self.resolution
        return int(start + (self.resolution - start) * self.progress.epoch / (epochs / 2))

    def _resized(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """``images`` (N, C, H, W) resized to (N, C, size, size), bilinear and antialiased, in the
        run's memory format; as they are when already of that size."""
        if images.shape[-2:] == (size, size):
            return images
        resized = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        return resized.contiguous(memory_format=self.memory_format)

    def _teacher_not_finite(self, why: str) -> ValueError:
        """The error for a teacher whose outputs became NaN or infinite at the current step."""
        return ValueError(
            f"teacher {self.config.teacher!r} gave NaN or infinite outputs at epoch {self.progress.epoch + 1}, "
            f"step {self.progress.step_in_epoch + 1}: {why}"
        )

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimiser step; returns (loss sum, correct, images counted, unreadable) for the batch."""
        cfg = self.config
        labels, logits, teacher_logits = self._forward(images, labels)
        valid = labels != UNREADABLE
        count = valid.sum()
        loss_sum = self.criterion(logits, labels)
        if teacher_logits is not None:
            soft = soft_target_loss(logits, teacher_logits, cfg.distill_temperature)
            loss_sum = (1 - cfg.distill_alpha) * loss_sum + cfg.distill_alpha * soft[valid].sum()
        self.optimisation.step(loss_sum / count.clamp(min=1), self.net.parameters(), cfg.grad_clip)
        if self.ema:
            self.ema.update(self.net)
        correct = ((logits.detach().argmax(1) == labels) & valid).sum()
        return torch.stack([loss_sum.detach(), correct, count, (~valid).sum()]).double()

    def _check(self, sums: torch.Tensor, last: bool, seconds: float) -> None:
        """Stop on a non-finite loss or a signal, agreeing across processes."""
        flags = torch.tensor([float(not math.isfinite(sums[0].item())), float(self.stop["signum"])], device=self.device)
        all_reduce(flags, self.env, distributed.dist.ReduceOp.MAX)
        nonfinite, signum = bool(flags[0]), int(flags[1])
        where = f"at epoch {self.progress.epoch + 1}, step {self.progress.step_in_epoch}"
        if nonfinite:
            raise self._non_finite("loss", where)
        if signum and not last:
            self._check_finite({}, where)
            self._add_to_partial(sums)
            self.progress.partial["seconds"] += seconds
            self._save_checkpoint()
            raise self._interrupted(signum, where)

    def _interrupted(self, signum: int, where: str) -> TrainingInterrupted:
        return TrainingInterrupted(
            signum,
            f"{signal.Signals(signum).name} received: checkpoint written {where}; "
            f"continue with `{self.command} --resume {self.run_dir}`",
        )

    def _evaluate(self, model: nn.Module) -> EvalResult:
        return self.evaluator(
            model,
            self.val_loader,
            classes=self.classes,
            device=self.device,
            env=self.env,
            amp_dtype=self.amp,
            channels_last=self.config.channels_last,
        )

    # --- what the task measures (a trainer for another task overrides these) ----------------------

    SCORE = "val_top1"  # the epoch record's figure that picks the best weights (higher is better)

    def _bar_figures(self, sums: torch.Tensor, last: bool) -> dict[str, str]:
        """The progress bar's figures from the epoch's running ``SUMS`` so far (``last``: at its end)."""
        loss_sum, correct, seen, _ = sums.tolist()
        return {"loss": f"{loss_sum / max(seen, 1):.4f}", "acc": f"{correct / max(seen, 1):.3f}"}

    def _score(self, result: EvalResult) -> float:
        """``SCORE`` of an evaluation."""
        return result.top1

    def _train_figures(self) -> tuple[dict[str, float], str]:
        """The finished epoch's training figures (from its running totals) for its record, and the log
        line's words for them."""
        p = self.progress.partial
        train_loss, train_top1 = p["loss_sum"] / max(p["seen"], 1), p["correct"] / max(p["seen"], 1)
        return {"train_loss": train_loss, "train_top1": train_top1}, (
            f"train loss {train_loss:.4f} top-1 {100 * train_top1:.2f} %"
        )

    def _val_figures(self, raw: EvalResult, ema: EvalResult | None) -> tuple[dict[str, float], str]:
        """The evaluation figures of the raw weights (and of their EMA) for the epoch's record, and the
        log line's words for them."""
        figures = {"val_loss": raw.loss, "val_top1": raw.top1, "val_top5": raw.top5}
        if ema:
            figures.update(ema_val_loss=ema.loss, ema_val_top1=ema.top1, ema_val_top5=ema.top5)
        ema_text = f" (EMA {100 * ema.top1:.2f} %)" if ema else ""
        return figures, f"val loss {raw.loss:.4f} top-1 {100 * raw.top1:.2f} %{ema_text}"

    def _end_epoch(self) -> None:
        cfg, progress = self.config, self.progress
        p = progress.partial
        epoch, size = progress.epoch + 1, self.epoch_resolution()
        evaluated = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
        raw = self._evaluate(self.net) if evaluated else None
        ema = self._evaluate(self.ema.module) if evaluated and self.ema else None
        if raw is not None and raw.count == 0:
            raise ValueError(
                f"data {cfg.data!r}: none of its {len(self.val_set)} validation images could be read (see the "
                "warnings above); a run needs readable validation images to judge its epochs"
            )
        losses = ({"validation loss": raw.loss} if raw else {}) | ({"EMA validation loss": ema.loss} if ema else {})
        self._check_finite(losses, f"at the end of epoch {epoch}")
        progress.epoch, progress.step_in_epoch = epoch, 0
        rate = p["seen"] / max(p["seconds"], 1e-9)
        progress.elapsed += p["seconds"]
        progress.images_per_s.append(rate)
        figures, text = self._train_figures()
        if raw is not None:
            val_figures, val_text = self._val_figures(raw, ema)
            figures, text = figures | val_figures, f"{text}, {val_text}"
        record: dict[str, Any] = {"epoch": epoch, "lr": self.optimisation.lr, **figures}
        if cfg.resize_from is not None:
            record["train_resolution"] = size
            text += f", trained at {size} px"
        skipped = int(p["skipped"] + (raw.skipped if raw else 0))
        record.update(images_per_s=rate, epoch_seconds=p["seconds"], skipped=skipped)
        if raw is not None:
            candidates = {"raw": (raw, self.net)} | ({"ema": (ema, self.ema.module)} if ema else {})
            which = max(candidates, key=lambda k: self._score(candidates[k][0]))
            score = self._score(candidates[which][0])
            if score > progress.best.get(self.SCORE, -1.0):
                progress.best = {"epoch": epoch, "weights": which, self.SCORE: score}
                self.files.save_best(candidates[which][1].state_dict(), {**self.info, **progress.best})
        self.files.add_record(record)
        self._save_checkpoint()
        skipped_text = f", {skipped} unreadable images skipped" if skipped else ""
        self.log(
            f"epoch {epoch}/{cfg.epochs}: {text}, lr {record['lr']:.3g}, {rate:,.0f} img/s, "
            f"{p['seconds']:.1f} s{skipped_text}"
        )
        if self.stop["signum"] and epoch < cfg.epochs:
            raise self._interrupted(self.stop["signum"], f"at the end of epoch {epoch}")

    def _finish(self) -> TrainResult:
        """Evaluate the best weights in full, write the confusion matrix and report.json."""
        if self.env.enabled:
            distributed.dist.barrier()
        state, _ = read_saved_weights(self.files.best)
        model = create_model(self.name, **self.model_args).to(self.device, memory_format=self.memory_format)
        model.load_state_dict(state)
        evaluation = self._evaluate(model)
        records = self.files.records
        result = TrainResult(
            config=self.config,
            model=self.name,
            run_dir=self.run_dir,
            evaluation=evaluation,
            best=self.progress.best,
            cost=self.cost,
            images_per_s=float(np.mean(self.progress.images_per_s)),
            seconds=self.progress.elapsed,
            skipped=records[-1]["skipped"] if records else 0,
            files=self.files.names(),
        )
        self.files.finish(evaluation, result.to_dict())
        return result


def trainer_for(config: TrainConfig) -> type[Trainer]:
    """The trainer for ``config``: ``QatTrainer`` for quantization-aware training, ``MultiLabelTrainer`` for
    multi-label data, else :class:`Trainer`."""
    from .multilabel import MultiLabelTrainer  # they subclass Trainer
    from .qat import QatTrainer

    if config.qat:
        return QatTrainer
    return MultiLabelTrainer if inspect_source(config.data).multilabel else Trainer


def train(config: TrainConfig, resume: bool = False, *, trainer: type[Trainer] | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.data``, writing the run to ``config.out``.

    With ``resume``, continue the run whose checkpoint is in ``config.out`` (see :func:`resume_config`).
    Works as a single process or as one process of a ``torchrun`` job (only rank 0 writes files, and
    holds the run folder's lock for the whole run). Raises :class:`NonFiniteLoss` or
    :class:`TrainingInterrupted` (after writing a checkpoint); ``ValueError`` for a bad value or a
    folder in use; ``OSError`` naming the file when one cannot be written.
    ``trainer``: a subclass of :class:`Trainer` for another task (detection), with its own config
    and result; by default the one for the data's task (:func:`trainer_for`). On the CPU it has glibc
    keep freed memory for reuse from then on, in the whole process (:func:`~mobilenets.device.keep_freed_memory`).
    """
    config.validate()
    env = distributed.setup(config.device)
    threads = torch.get_num_threads()
    try:
        with lock_run_dir(Path(config.out)) if env.is_main else nullcontext():
            return (trainer or trainer_for(config))(config, resume, env).run()
    finally:
        torch.set_num_threads(threads)
        sys.stdout.flush()
        distributed.teardown(env)


def resume_config(run_dir: str | Path, *, config_type: type[RunConfig] = TrainConfig, **changes: Any) -> Any:
    """The config (a ``config_type``) of the run in ``run_dir``, with ``changes`` to the fields that may
    change on resume."""
    if not str(run_dir).strip():  # Path("") would be the working folder
        raise ValueError(f"resume must be a training run's folder, got {str(run_dir)!r}")
    not_allowed = sorted(set(changes) - set(RESUMABLE))
    if not_allowed:
        raise ValueError(
            f"resume continues the saved run: only {', '.join(RESUMABLE)} may change, got {', '.join(not_allowed)}"
        )
    config = config_type.load(Path(run_dir) / "config.json")
    for key, value in changes.items():
        setattr(config, key, value)
    config.out = str(run_dir)
    return config
