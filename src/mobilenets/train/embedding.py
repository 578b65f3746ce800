"""Training and evaluation of embedding models: :func:`train_embedding`, :func:`evaluate_embedding_weights`.

The last ``--held-out`` classes of the data are held out of training: the model trains on the
other classes of the train split and is evaluated (:mod:`~mobilenets.train.verification`: TAR at
FAR 1e-4 and 1e-3, recall@1/5) on the held-out classes of the val split, images and classes it has
never seen. Two losses, weighted by ``distill_alpha`` when a teacher is given:

* **distillation** (MobileNets §4.6): the squared distance between the L2-normalised embeddings of
  the student and of a trained teacher (its pooled features, or its embedding when it is an
  embedding model), ``|s - t|² = 2 - 2 cos(s, t)``. A teacher of another width than ``dim`` is
  mapped by a *fixed* random orthogonal projection (seeded by ``seed``, saved in the checkpoint):
  it keeps the teacher's angles as well as a linear map to ``dim`` dimensions can without
  training, and cannot collapse, where a learned projection could shrink the target space
  towards whatever the student finds easiest to match.
* **triplet with semi-hard negatives** (FaceNet, Schroff et al. 2015): for each anchor-positive
  pair in the batch, the closest negative farther than the positive (the farthest negative when
  none is), hinged at ``margin`` in squared distance. Batches are random, so each class needs
  several images per batch: a batch of B from K classes has about B / K of each.

The run folder is the classifier's (checkpoints, exact resume, stop on a signal or non-finite
loss); ``best.safetensors`` holds the last epoch's weights, since the evaluation classes must not
choose among epochs; ``curves.png`` plots each epoch's training loss, held-out TAR at FAR 1e-3 and
recall@1, and learning rate; ``roc.png`` the final ROC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import read_saved_weights, write_json
from ..cost import CostReport, count_cost
from ..data import UNREADABLE, inspect_source, load_dataset
from ..data.sources import LabelledSubset
from ..device import resolve_device
from ..embed import load_embedder, output_dim
from ..models.base import MAX_RESOLUTION, MAX_WIDTH_MULT, MIN_RESOLUTION
from ..models.embedding import DEFAULT_DIM, EMBEDDING, MAX_DIM, EmbeddingNet, create_embedding_model
from ..registry import CLASSIFICATION, DETECTION, check_task, get_entry, name_for
from ..weights import PRETRAINED, WEIGHTS_FILES, init_from
from . import distributed
from .config import MAX_BATCH_SIZE, TEACHER_RESOLUTION_HELP, RunSettings, check_types, check_values, option
from .evaluate import autocast, resolve_input
from .loop import Optimisation, Trainer, resume_config, train
from .optim import param_groups
from .run_files import BEST, RunFiles
from .verification import Verification, plot_roc, verify

ROC = "roc.png"


@dataclass(kw_only=True)
class EmbedConfig(RunSettings):
    """An embedding training run, saved as ``config.json``. ``None`` means "choose from the model and the data".

    The optimiser is AdamW with linear warm-up then cosine decay, stepped per batch: metric-learning
    losses on normalised embeddings have gradients of very uneven scale, which Adam evens out.
    """

    model: str = option("mobilenet_v1_0.25_128", "registered classification backbone (see `mobilenets list`)")
    data: str = option(
        "fashion-mnist", "'fashion-mnist', an image folder or a CIFAR-10/100 folder (as `train`)", metavar="SOURCE"
    )
    out: str = option("runs/embed", "folder for the run's checkpoints, metrics, ROC and report", metavar="RUN_DIR")
    held_out: int = option(
        3, "the last N classes are held out of training and evaluated on (Fashion-MNIST: 7-9)", metavar="N"
    )
    dim: int = option(DEFAULT_DIM, f"embedding dimension, at most {MAX_DIM}", metavar="D")
    resolution: int | None = option(
        None, f"input size in pixels, {MIN_RESOLUTION} to {MAX_RESOLUTION} (default: as `train`)", metavar="R"
    )
    in_chans: int | None = option(None, "input channels (default: 1 for Fashion-MNIST, else 3)", choices=(1, 3))
    width_mult: float | None = option(
        None, f"width multiplier α, at most {MAX_WIDTH_MULT:g} (default: the model's)", metavar="A"
    )
    init: str | None = option(
        None,
        f"start from weights: {WEIGHTS_FILES} from `embed train` (all of the model) or from `train`, or 'pretrained' "
        "(the backbone only; the projection starts fresh) (default: random initialisation)",
        metavar="WEIGHTS",
    )
    teacher: str | None = option(
        None,
        f"distil from this trained teacher: {WEIGHTS_FILES} from `train` (its pooled features), from `embed train` "
        "(its embedding) or 'pretrained' (with --teacher-model); it must take the same input channels",
        metavar="WEIGHTS",
    )
    teacher_model: str | None = option(
        None, "the teacher's registered name (default: the one its weights file records)", metavar="NAME"
    )
    teacher_resolution: int | None = option(None, TEACHER_RESOLUTION_HELP, metavar="R")
    distill_alpha: float = option(
        1.0, "with --teacher: weight of the distillation loss, 1 - A on the triplet loss", metavar="A"
    )
    margin: float = option(0.2, "triplet margin, in squared distance of unit vectors (FaceNet: 0.2)", metavar="M")
    epochs: int = option(10, "epochs to train (with --resume: may extend the run)", metavar="N")
    batch_size: int = option(128, f"global batch size, at most {MAX_BATCH_SIZE}", metavar="B")
    lr: float = option(1e-3, "peak learning rate of AdamW (reached after warm-up)")
    warmup_epochs: float = option(1.0, "linear learning-rate warm-up, in epochs", metavar="E")
    weight_decay: float = option(1e-4, "AdamW weight decay on conv and linear weights (not BN, biases)", metavar="L2")
    grad_clip: float = option(0.0, "clip the global gradient norm to NORM; 0: no clipping", metavar="NORM")
    augment: bool = option(True, "random resized crops and flips for training (--no-augment: none)")
    train_limit: int | None = option(None, "train on a random (seeded) subset of N images", metavar="N")
    val_limit: int | None = option(
        None, "evaluate on a random (seeded) subset of N images (all pairs: N (N - 1) / 2)", metavar="N"
    )

    def validate(self) -> EmbedConfig:
        """Raise ``ValueError`` naming the first field of the wrong type or out of its range; return self."""
        check_types(vars(self), type(self))
        check_values(
            self,
            [
                ("out", self.out.strip() != "", "a folder path, not empty"),
                ("held_out", self.held_out >= 2, "an integer >= 2 (verification needs several classes)"),
                ("dim", 1 <= self.dim <= MAX_DIM, f"an integer in [1, {MAX_DIM}]"),
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
                ("init", self.init is None or self.init.strip() != "", "a weights file or 'pretrained'"),
                ("teacher", self.teacher is None or self.teacher.strip() != "", "a weights file or 'pretrained'"),
                ("teacher_model", self.teacher_model is None or self.teacher is not None, "given with --teacher"),
                (
                    "teacher_resolution",
                    self.teacher_resolution is None or MIN_RESOLUTION <= self.teacher_resolution <= MAX_RESOLUTION,
                    f"in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]",
                ),
                (
                    "teacher_resolution",
                    self.teacher_resolution is None or self.teacher is not None,
                    "given with --teacher",
                ),
                ("distill_alpha", 0 <= self.distill_alpha <= 1, "in [0, 1]"),
                ("distill_alpha", self.teacher is not None or self.distill_alpha == 1, "given only with --teacher"),
                ("margin", self.margin > 0, "> 0"),
                ("epochs", self.epochs >= 1, "an integer >= 1"),
                ("batch_size", 2 <= self.batch_size <= MAX_BATCH_SIZE, f"an integer in [2, {MAX_BATCH_SIZE}]"),
                ("lr", self.lr > 0, "> 0"),
                ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, f"in [0, epochs={self.epochs}]"),
                ("weight_decay", self.weight_decay >= 0, ">= 0"),
                ("grad_clip", self.grad_clip >= 0, ">= 0 (0: no clipping)"),
                ("train_limit", self.train_limit is None or self.train_limit >= 2, "an integer >= 2"),
                ("val_limit", self.val_limit is None or self.val_limit >= 2, "an integer >= 2"),
                *self.settings_checks(),
            ],
        )
        check_task(self.model, CLASSIFICATION)
        return self

    def model_overrides(self) -> dict[str, Any]:
        return {"width_mult": self.width_mult} if self.width_mult is not None else {}


# --- losses ------------------------------------------------------------------------------------


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per image ``|normalise(student) - normalise(teacher)|²``: (N, D), (N, D) -> (N,), in [0, 4]."""
    return (F.normalize(student, dim=1) - F.normalize(teacher, dim=1)).pow(2).sum(1)


def semi_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over the batch's anchor-positive pairs of ``max(0, d(a, p) - d(a, n) + margin)``, ``d`` the
    squared distance of the normalised ``embeddings`` (N, D) and ``n`` the semi-hard negative of
    (a, p): the closest negative farther than p, else the farthest negative. Pairs of a class
    without negatives in the batch, and unreadable images, are left out; 0 when no pair is left."""
    x = F.normalize(embeddings, dim=1)
    distance = (2 - 2 * x @ x.T).clamp(min=0)
    valid = labels != UNREADABLE
    same = (labels[:, None] == labels[None, :]) & valid[:, None] & valid[None, :]
    negative = ~same & valid[:, None] & valid[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    anchor, pos = positive.nonzero(as_tuple=True)
    d_ap = distance[anchor, pos]
    d_an = distance[anchor]
    neg = negative[anchor]
    far = torch.finfo(distance.dtype).max
    outside = torch.where(neg & (d_an > d_ap[:, None]), d_an, far).min(1).values
    inside = torch.where(neg, d_an, -far).max(1).values
    chosen = torch.where(outside < far, outside, inside)
    usable = neg.any(1)
    losses = F.relu(d_ap - chosen + margin)[usable]
    return losses.mean() if len(losses) else embeddings.sum() * 0


def orthogonal_projection(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """A fixed (out_dim, in_dim) matrix with orthonormal rows (or columns, when out_dim > in_dim),
    drawn from ``seed``: teacher features (N, in_dim) @ its transpose -> (N, out_dim)."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(max(in_dim, out_dim), min(in_dim, out_dim), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # a uniformly distributed orthogonal matrix (Mezzadri 2007)
    return (q if out_dim >= in_dim else q.T).float()


def init_embedding(net: EmbeddingNet, source: str) -> str:
    """Load ``source`` into ``net`` and say what was loaded: all of an embedding model from
    ``embed train`` (of the same model and ``dim``), else a classifier's weights into the backbone."""
    if source != PRETRAINED and not Path(source).is_file():
        raise FileNotFoundError(f"init {source!r} is not a file; give 'pretrained' or a weights file")
    state, info = read_saved_weights(source) if source != PRETRAINED else ({}, {})
    if info.get("task") == EMBEDDING:
        if (info["model"], info["dim"]) != (net.meta.name, net.dim):
            raise ValueError(
                f"init {source!r} holds a {info['dim']}-d {info['model']!r} embedding model, not a {net.dim}-d "
                f"{net.meta.name!r}"
            )
        net.load_state_dict(state)
        return f"init: the embedding model {source}"
    try:
        init_from(net.backbone, source)
    except ValueError as err:
        raise ValueError(f"init: {err} (--model, --width-mult and --in-chans must be those of the weights)") from None
    return f"init: backbone from {source}, a fresh projection"


# --- data --------------------------------------------------------------------------------------


def _labels(dataset: Dataset) -> torch.Tensor:
    """The labels of an array source or an image folder, without decoding its images."""
    if hasattr(dataset, "labels"):
        return torch.as_tensor(dataset.labels)
    return torch.tensor([label for _, label in dataset.samples])


def class_subset(dataset: Dataset, classes: range, *, limit: int | None, seed: int) -> LabelledSubset:
    """The images of ``dataset`` whose label is in ``classes``, at most ``limit`` of them (a seeded
    random choice, in the data's order)."""
    labels = _labels(dataset)
    indices = ((labels >= classes.start) & (labels < classes.stop)).nonzero().squeeze(1)
    if limit is not None and limit < len(indices):
        chosen = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:limit]
        indices = indices[chosen.sort().values]
    return LabelledSubset(dataset, indices.tolist())


@torch.no_grad()
def embed_loader(
    model: nn.Module, loader: DataLoader, *, device: torch.device, amp: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, D) float32, labels (N,)) of ``loader``'s readable images, on the CPU."""
    was_training = model.training
    model.eval()
    out, labels = [], []
    for images, batch_labels in loader:
        with autocast(device, amp):
            out.append(model(images.to(device, non_blocking=True)).float().cpu())
        labels.append(batch_labels)
    model.train(was_training)
    embeddings, labels_ = torch.cat(out), torch.cat(labels)
    readable = labels_ != UNREADABLE
    return embeddings[readable], labels_[readable]


# --- the trainer -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class EmbedResult:
    """The outcome of an embedding run: verification on the held-out classes, cost, speed, files."""

    config: EmbedConfig
    model: str
    run_dir: Path
    verification: Verification
    cost: CostReport
    images_per_s: float
    seconds: float
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.config.data,
            "dim": self.config.dim,
            "teacher": self.config.teacher,
            "resolution": self.cost.resolution,
            "verification": self.verification.to_dict(),
            "mult_adds": self.cost.mult_adds,
            "params": self.cost.params,
            "train_images_per_s": self.images_per_s,
            "seconds": self.seconds,
            "run_dir": str(self.run_dir),
            "files": self.files,
        }

    def format(self) -> str:
        cfg = self.config
        minutes, seconds = divmod(round(self.seconds), 60)
        how = f"distilled from {cfg.teacher}" if cfg.teacher else "triplet loss"
        return "\n".join(
            [
                f"{self.model} → {cfg.dim}-d embedding on {cfg.data} at {self.cost.resolution}×{self.cost.resolution} "
                f"({how}): {cfg.epochs} epochs, {minutes} min {seconds:02d} s of training",
                "  held-out classes, val split:",
                self.verification.format(),
                f"  cost       {self.cost.mult_adds / 1e6:,.2f} M mult-adds, {self.cost.params / 1e6:,.3f} M params",
                f"  speed      {self.images_per_s:,.0f} training images/s",
                f"  files      {self.run_dir}/: {', '.join(self.files)}",
                f"  evaluate   mobilenets embed eval --weights {self.run_dir / BEST}",
                f"  embed      mobilenets embed images --weights {self.run_dir / BEST} IMAGES --out FILE",
            ]
        )


class EmbeddingRunFiles(RunFiles):
    """An embedding run's files: the held-out classes' ROC where a classifier's run has its confusion matrix."""

    def names(self) -> list[str]:
        return [ROC if name == "confusion.png" else name for name in super().names()]

    def finish(self, evaluation: Verification, report: dict[str, Any]) -> None:  # type: ignore[override]
        if self.write:
            title = f"{report['model']} on held-out classes of {report['data']}"
            plot_roc({report["model"]: evaluation}, self.dir / ROC, title)
            write_json(self.dir / "report.json", report)


class EmbeddingTrainer(Trainer):
    """One embedding run; see :func:`train_embedding`."""

    command = "mobilenets embed train"
    run_files = EmbeddingRunFiles
    config: EmbedConfig

    def _build_data(self) -> None:
        cfg = self.config
        info = inspect_source(cfg.data)
        self.in_chans, self.resolution = resolve_input(
            cfg.model, info, in_chans=cfg.in_chans, resolution=cfg.resolution
        )
        self._read_teacher()
        entry = get_entry(cfg.model)
        self.mean, self.std = entry.mean, entry.std
        common = {"in_chans": self.in_chans, "mean": self.mean, "std": self.std, "seed": cfg.seed}
        train_split = load_dataset(cfg.data, "train", train=cfg.augment, resolution=self.train_resolution, **common)
        val_split = load_dataset(cfg.data, "val", train=False, resolution=self.resolution, **common)
        classes = list(train_split.classes)
        if cfg.held_out > len(classes) - 2:
            raise ValueError(
                f"held_out must leave at least 2 of the {len(classes)} classes of {cfg.data!r} to train on, "
                f"got {cfg.held_out}"
            )
        self.first_held_out = len(classes) - cfg.held_out
        self.classes = classes[: self.first_held_out]
        self.held_out_classes = classes[self.first_held_out :]
        self.train_set = class_subset(train_split, range(self.first_held_out), limit=cfg.train_limit, seed=cfg.seed)
        self.val_set = class_subset(
            val_split, range(self.first_held_out, len(classes)), limit=cfg.val_limit, seed=cfg.seed
        )
        if len(self.val_set) < 2:
            raise ValueError(
                f"data {cfg.data!r}: its val split holds {len(self.val_set)} images of the held-out classes"
            )
        self._build_loaders()
        # Verification compares all pairs: every process embeds the whole evaluation set.
        self.val_loader = self._loader(self.val_set, None, drop_last=False)
        self.notes.append(
            f"classes: training on {', '.join(self.classes)}; evaluating on {', '.join(self.held_out_classes)} "
            f"(held out, {len(self.val_set):,} val images)"
        )

    def _build_model(self, resume: bool) -> None:
        cfg = self.config
        self.model_args = {"in_chans": self.in_chans, "resolution": self.resolution, **cfg.model_overrides()}
        self.name = name_for(cfg.model, num_classes=0, **self.model_args)
        net = create_embedding_model(self.name, dim=cfg.dim, **self.model_args)
        if cfg.init and not resume:  # a resumed run takes every weight from its checkpoint
            self.notes.append(init_embedding(net, cfg.init))
        self.cost = count_cost(net)
        self.teacher, self.projection = self._load_teacher() if cfg.teacher else (None, None)
        self.net = net.to(self.device, memory_format=self.memory_format)
        optimizer = torch.optim.AdamW(param_groups(self.net, cfg.weight_decay, cfg.weight_decay), lr=cfg.lr)
        self.optimisation = Optimisation.warmup_cosine(
            optimizer, cfg, steps_per_epoch=self.steps_per_epoch, device=self.device, amp=self.amp
        )
        self.ema = None
        self.model = self._parallel()
        self.last_verification: Verification | None = None

    def _load_teacher(self) -> tuple[nn.Module, torch.Tensor | None]:
        """The frozen teacher (in eval mode, on this device) and the fixed projection of its outputs
        to ``dim`` (None when they already have ``dim`` dimensions)."""
        cfg = self.config
        teacher = load_embedder(self.teacher_weights, cfg.teacher_model, defaults={"in_chans": self.in_chans})
        if teacher.meta.in_chans != self.in_chans:
            raise ValueError(
                f"teacher {cfg.teacher!r} takes {teacher.meta.in_chans}-channel input; the student takes "
                f"{self.in_chans} channels (--in-chans): give a teacher trained on the same kind of images"
            )
        width = output_dim(teacher)
        projection = None if width == cfg.dim else orthogonal_projection(width, cfg.dim, cfg.seed).to(self.device)
        mapped = "" if projection is None else f", mapped to {cfg.dim} by a fixed orthogonal projection"
        cost = count_cost(teacher, self.teacher_resolution)
        self.notes.append(
            f"distill: teacher {teacher.meta.name} from {cfg.teacher} ({cost.mult_adds / 1e6:,.2f} M mult-adds), "
            f"{self.teacher_input}; {width}-d outputs{mapped}, alpha {cfg.distill_alpha}"
        )
        return teacher.to(self.device, memory_format=self.memory_format).eval().requires_grad_(False), projection

    @property
    def info(self) -> dict[str, Any]:
        return {
            "task": EMBEDDING,
            "model": self.name,
            "model_args": self.model_args,
            "dim": self.config.dim,
            "classes": self.classes,
            "held_out_classes": self.held_out_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "data": self.config.data,
        }

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "teacher_projection": self.projection}

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimiser step; returns (loss × images, 0, images, unreadable) for the batch."""
        cfg = self.config
        labels, embeddings, target = self._forward(images, labels)
        valid = labels != UNREADABLE
        count = valid.sum()
        alpha = cfg.distill_alpha if self.teacher is not None else 0.0
        loss = embeddings.new_zeros(())
        if alpha < 1:
            loss = loss + (1 - alpha) * semi_hard_triplet_loss(embeddings, labels, cfg.margin)
        if alpha > 0:
            if not torch.isfinite(target).all():
                raise self._teacher_not_finite("its weights are damaged or it overflows in --amp")
            if self.projection is not None:
                target = target @ self.projection.T
            loss = loss + alpha * distillation_loss(embeddings, target)[valid].sum() / count.clamp(min=1)
        self.optimisation.step(loss, self.net.parameters(), cfg.grad_clip)
        return torch.stack([loss.detach() * count, torch.zeros_like(loss), count, (~valid).sum()]).double()

    def _evaluate(self, model: nn.Module) -> Verification:
        embeddings, labels = embed_loader(model, self.val_loader, device=self.device, amp=self.amp)
        return verify(embeddings, labels)

    def _end_epoch(self) -> None:
        cfg, progress = self.config, self.progress
        p = progress.partial
        epoch = progress.epoch + 1
        result = self._evaluate(self.net)
        self._check_finite({}, f"at the end of epoch {epoch}")
        progress.epoch, progress.step_in_epoch = epoch, 0
        rate = p["seen"] / max(p["seconds"], 1e-9)
        progress.elapsed += p["seconds"]
        progress.images_per_s.append(rate)
        record: dict[str, Any] = {"epoch": epoch, "lr": self.optimisation.lr, "train_loss": p["loss_sum"] / p["seen"]}
        record.update(
            {f"val_{key}": value for key, value in result.to_dict().items() if key.startswith(("tar", "rec"))}
        )
        record.update(images_per_s=rate, epoch_seconds=p["seconds"])
        progress.best = {"epoch": epoch, "weights": "raw"}
        self.files.save_best(self.net.state_dict(), {**self.info, "epoch": epoch})
        self.last_verification = result
        self.files.add_record(record)
        self._save_checkpoint()
        tars = ", ".join(f"{100 * tar:.2f} % at {far:g}" for far, tar in result.tar.items())
        self.log(
            f"epoch {epoch}/{cfg.epochs}: train loss {record['train_loss']:.4f}, held-out TAR {tars}, "
            f"recall@1 {100 * result.recall[1]:.2f} %, lr {record['lr']:.3g}, {rate:,.0f} img/s, {p['seconds']:.1f} s"
        )
        if self.stop["signum"] and epoch < cfg.epochs:
            raise self._interrupted(self.stop["signum"], f"at the end of epoch {epoch}")

    def _finish(self) -> EmbedResult:
        """The last epoch's verification (evaluated again after a resume), the ROC PNG and ``report.json``."""
        if self.env.enabled:
            distributed.dist.barrier()
        verification = self.last_verification or self._evaluate(self.net)
        result = EmbedResult(
            config=self.config,
            model=self.name,
            run_dir=self.run_dir,
            verification=verification,
            cost=self.cost,
            images_per_s=float(np.mean(self.progress.images_per_s)),
            seconds=self.progress.elapsed,
            files=self.files.names(),
        )
        self.files.finish(verification, result.to_dict())
        return result


def train_embedding(config: EmbedConfig, resume: bool = False) -> EmbedResult:
    """Train ``config.model`` as an embedding model on ``config.data`` into ``config.out`` (see
    :func:`mobilenets.train.train`: the same guarantees, errors and ``torchrun`` use)."""
    return train(config, resume, trainer=EmbeddingTrainer)


def resume_embedding_config(run_dir: str | Path, **changes: Any) -> EmbedConfig:
    """The config of the embedding run in ``run_dir``, with ``changes`` to the fields that may change on resume."""
    return resume_config(run_dir, config_type=EmbedConfig, **changes)


def evaluate_embedding_weights(
    weights: str | Path,
    data: str | None = None,
    *,
    model: str | None = None,
    held_out: int | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    seed: int = 0,
) -> tuple[Verification, dict[str, Any]]:
    """Verification and retrieval of ``weights`` (from ``embed train``, or any classifier's pooled
    features with ``model``) on the last ``held_out`` classes (default: those the run held out) of
    ``data``'s val split (default: the data it was trained on), at most ``limit`` images."""
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be an integer in [1, {MAX_BATCH_SIZE}], got {batch_size!r}")
    if limit is not None and limit < 2:
        raise ValueError(f"limit must be an integer >= 2, got {limit!r}")
    info = read_saved_weights(weights)[1] if Path(weights).is_file() else {}
    if info.get("task") == DETECTION:
        raise ValueError(f"weights {str(weights)!r} are a detector's: evaluate them with `mobilenets detect eval`")
    data = data or info.get("data")
    if data is None:
        raise ValueError(f"weights {str(weights)!r} do not record their data: give --data")
    source = inspect_source(data)
    defaults = {"in_chans": source.channels} if info.get("task") != EMBEDDING else None
    net = load_embedder(weights, model, defaults=defaults)
    meta = net.meta
    split = load_dataset(
        data, "val", resolution=meta.resolution, in_chans=meta.in_chans, mean=meta.mean, std=meta.std, seed=seed
    )
    count = len(split.classes)
    held_out = held_out if held_out is not None else len(info.get("held_out_classes", [])) or None
    if held_out is None or not 2 <= held_out <= count:
        raise ValueError(f"held_out must be an integer in [2, {count}] (the classes evaluated), got {held_out!r}")
    subset = class_subset(split, range(count - held_out, count), limit=limit, seed=seed)
    target = resolve_device(device)
    started = time.perf_counter()
    embeddings, labels = embed_loader(net.to(target), DataLoader(subset, batch_size=batch_size), device=target)
    result = verify(embeddings, labels)
    info = {
        **info,
        "model": meta.name,
        "data": data,
        "held_out_classes": list(split.classes[count - held_out :]),
        "images": len(labels),
        "seconds": time.perf_counter() - started,
    }
    return result, info


__all__ = [
    "EmbedConfig",
    "EmbedResult",
    "EmbeddingTrainer",
    "distillation_loss",
    "evaluate_embedding_weights",
    "init_embedding",
    "orthogonal_projection",
    "resume_embedding_config",
    "semi_hard_triplet_loss",
    "train_embedding",
]
