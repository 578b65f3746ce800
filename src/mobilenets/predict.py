"""Classify images: read any image file, preprocess as the model's weights expect, return the top-k classes.

Images are decoded as for training (:func:`mobilenets.data.decode.decode_image`), then go through
the data pipeline's evaluation transform (torchvision.transforms.v2, on the PIL image): resize the
shorter side to ``meta.resize`` (by default ``resolution / 0.875``, 256 for 224), centre-crop
``resolution``², scale to [0, 1], normalise with the meta's mean and std. This is torchvision's
reference ImageNet evaluation: with the same weights, probabilities agree to about 1e-6.

An exported artifact (:data:`ARTIFACT_FORMATS`: ``.pte``, ``.onnx``, ``.xml``) classifies the same way
(:func:`load_artifact`): its runtime computes the logits, and the metadata it was exported with
gives the model's name, input size, normalisation and class names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .data.decode import convert_image, decode_image, mode_for
from .data.folder import is_image_file
from .data.transforms import DEFAULT_CROP_PCT, build_transform
from .deploy.export import FORMATS, read_artifact_metadata
from .deploy.runtimes import Runner, load_runner
from .device import resolve_device
from .registry import CLASSIFICATION, DETECTION, ModelMeta, check_task, get_entry
from .weights import packaged_class_names

DEFAULT_THRESHOLD = 0.5  # probability from which a multi-label model predicts a label


def check_threshold(threshold: float | None) -> float:
    """``threshold``, or :data:`DEFAULT_THRESHOLD` for None; ``ValueError`` unless it is in (0, 1)."""
    if threshold is None:
        return DEFAULT_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    return float(threshold)


# Artifact suffix -> format; TorchScript's .pt is left out, as it names weights files too.
ARTIFACT_FORMATS = {suffix: fmt for fmt, suffix in FORMATS.items() if fmt != "torchscript"}


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One of the top classes: its index, name and probability (0-1; softmax, or a multi-label model's sigmoid)."""

    index: int
    label: str
    prob: float


def resize_size(meta: ModelMeta) -> int:
    """Shorter side, pixels, before the centre crop: the weights' own, else ``resolution / 0.875``."""
    return meta.resize or round(meta.resolution / DEFAULT_CROP_PCT)


def preprocessing(meta: ModelMeta) -> v2.Compose:
    """PIL image (any mode) -> normalised float tensor (in_chans, resolution, resolution), as ``meta``
    prescribes: converted as decoded files are (a 1-channel model gets the image's luminance), then
    the evaluation transform."""
    crop_pct = meta.resolution / resize_size(meta)
    evaluation = build_transform(
        meta.resolution,
        in_chans=meta.in_chans,
        mean=meta.mean,
        std=meta.std,
        train=False,
        crop_pct=crop_pct,
        source_chans=meta.in_chans,
    )
    return v2.Compose([partial(convert_image, mode=mode_for(meta.in_chans)), evaluation])


def labels_for(meta: ModelMeta) -> tuple[str, ...]:
    """Class names: the weights' own, else ImageNet's for a 1000-class model, else ``class <i>``."""
    if meta.labels:
        return meta.labels
    if meta.num_classes == 1000:
        return packaged_class_names()
    return tuple(f"class {i}" for i in range(meta.num_classes))


def image_files(paths: list[str | Path]) -> list[Path]:
    """``paths`` with each folder replaced by the image files inside it (recursively, sorted).

    Raises ``ValueError`` for an empty path (``Path("")`` would mean the working folder) or a folder
    without images; files are kept as given (checked when read).
    """
    files: list[Path] = []
    for given in paths:
        if not str(given).strip():
            raise ValueError(f"image path {str(given)!r} is empty: give image files or folders of them")
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_file(p))
            if not found:
                raise ValueError(f"folder {str(path)!r} holds no image files")
            files += found
        else:
            files.append(path)
    return files


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """An exported model loaded in its runtime, with the :class:`ModelMeta` its metadata records."""

    path: Path
    meta: ModelMeta
    runner: Runner

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of normalised images (N, C, H, W), computed by the artifact's runtime."""
        return torch.from_numpy(self.runner(x.cpu().numpy()))


def artifact_format(path: str | Path) -> str | None:
    """The export format of an artifact file by its suffix (see :data:`ARTIFACT_FORMATS`); None for others."""
    return ARTIFACT_FORMATS.get(Path(path).suffix)


def artifact_meta(path: Path, metadata: dict[str, str]) -> ModelMeta:
    """The :class:`ModelMeta` an artifact's ``metadata`` records (``path``: its file, named in errors)."""
    try:
        name = metadata["model"]
        try:
            family = get_entry(name).family
        except ValueError:  # a model built outside the registry
            family = ""
        return ModelMeta(
            name=name,
            family=family,
            resolution=int(metadata["resolution"]),
            in_chans=int(metadata["in_chans"]),
            mean=tuple(json.loads(metadata["mean"])),
            std=tuple(json.loads(metadata["std"])),
            num_classes=int(metadata["num_classes"]),
            labels=tuple(json.loads(metadata["classes"])),
            resize=int(metadata["resize"]) if "resize" in metadata else None,
            weights=str(path),
        )
    except KeyError as err:
        raise ValueError(f"the metadata of {str(path)!r} lacks {err.args[0]!r}: export it again") from err
    except (TypeError, ValueError) as err:
        raise ValueError(f"the metadata of {str(path)!r} cannot be read: {err}") from err


def load_artifact(path: str | Path, model: str | None = None, *, device: str | torch.device | None = None) -> Artifact:
    """An exported artifact (``.pte``, ``.onnx``, ``.xml``) in its runtime (default device: the CPU), its
    meta from its metadata. ``model``: the registered name it must hold, if known. Raises
    ``FileNotFoundError`` or ``ValueError`` (one line) for a missing file or metadata, or another model."""
    path = Path(path)
    fmt = artifact_format(path)
    if fmt is None:
        raise ValueError(f"{str(path)!r} is not an exported model: its suffix must be one of {list(ARTIFACT_FORMATS)}")
    metadata = read_artifact_metadata(path, fmt)
    if metadata.get("task") == DETECTION:
        raise ValueError(
            f"{str(path)!r} holds the detector {metadata.get('model')}: run it with "
            f"`mobilenets detect predict --weights {path} IMAGES --out DIR`"
        )
    meta = artifact_meta(path, metadata)
    if model is not None:
        wanted = get_entry(model).name
        held = get_entry(meta.name).name if meta.family else meta.name
        if held != wanted:
            raise ValueError(f"{str(path)!r} holds {meta.name}, not {model}")
    return Artifact(path=path, meta=meta, runner=load_runner(path, fmt, device=device))


class Classifier:
    """A model ready to classify images: eval mode, on ``device`` (CUDA when available), with its
    preprocessing and class names from ``model.meta``. ``model`` may be an :class:`Artifact`: its
    runtime then runs on the device it was loaded for, and ``device`` must be left out.

    ``classifier(image)``: a PIL image or an image file -> its ``topk`` most likely classes, best first;
    with ``threshold`` (a multi-label model's weights), every label whose sigmoid probability reaches
    it instead, most likely first (``topk`` unused).
    ``draft``: decode JPEG files at a reduced scale (never below the resize size): faster for large
    photos, but the probabilities move away from the reference pipeline's (docs/benchmarks.md).
    Raises ``FileNotFoundError`` or ``ValueError`` (one line) for a file that cannot be classified.
    """

    def __init__(
        self,
        model: nn.Module | Artifact,
        topk: int = 5,
        device: str | torch.device | None = None,
        *,
        draft: bool = False,
        threshold: float | None = None,
    ) -> None:
        meta: ModelMeta | None = getattr(model, "meta", None)
        if meta is None:
            raise ValueError("model has no meta: build it with create_model")
        check_task(meta.name, CLASSIFICATION)
        if meta.num_classes < 1:
            raise ValueError("model was built with num_classes=0: it has no classifier to predict with")
        if not isinstance(topk, int) or not 1 <= topk <= meta.num_classes:
            raise ValueError(f"topk must be an integer in [1, {meta.num_classes}], got {topk!r}")
        if isinstance(model, Artifact):
            if device is not None:
                raise ValueError("an artifact runs on the device it was loaded for: give it to load_artifact")
            self.device, self.model = torch.device("cpu"), model
        else:
            self.device = resolve_device(device)
            self.model = model.eval().to(self.device)
        self.threshold = None if threshold is None else check_threshold(threshold)
        self.meta, self.topk, self.draft = meta, topk, draft
        self.transform = preprocessing(meta)
        self.labels = labels_for(meta)

    def __call__(self, image: Image.Image | str | Path) -> list[Prediction]:
        if not isinstance(image, Image.Image):
            draft_size = resize_size(self.meta) if self.draft else None
            image = decode_image(image, mode=mode_for(self.meta.in_chans), draft=draft_size)
        x = self.transform(image).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            logits = self.model(x)[0]
        if self.threshold is None:
            values, indices = logits.softmax(0).topk(self.topk)
        else:
            values, indices = logits.sigmoid().sort(descending=True)
            values, indices = values[values >= self.threshold], indices[values >= self.threshold]
        return [
            Prediction(index=i, label=self.labels[i], prob=p)
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
