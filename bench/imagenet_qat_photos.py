"""The ImageNet MobileNetV2 in int8, with and without quantization-aware training: top-1 agreement with fp32
on photos it was not tuned on, in ExecuTorch (XNNPACK), ONNX Runtime and OpenVINO.

No ImageNet images are here, so QAT learns from unlabelled photo crops (``bench/photo_crops.py``) with the
fp32 model's own outputs as targets: the packaged weights of ``mobilenet_v2_1.0_224``, prepared for QAT by
the XNNPACK quantizer (``mobilenets.deploy.executorch.prepare_qat``), are fine-tuned to match the fp32
model's softmax (KL divergence), with BatchNorm kept in inference mode (its ImageNet statistics: a few
hundred crops would only move them), then converted into one int8 graph written for the three runtimes.
Post-training int8 of the same weights is calibrated on the same crops. The photos are split: tuning and
calibration see the train/ crops of two thirds of the photos, agreement is measured on the val/ crops of
the other third, pictures neither saw.

    python bench/photo_crops.py photos --train 24 --val 16
    PYTHONPATH=src .venv/bin/python bench/imagenet_qat_photos.py photos [--epochs 2] [--lr 1e-5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from torch.nn import functional as F

from mobilenets.data import load_dataset
from mobilenets.deploy import executorch
from mobilenets.deploy.export import artifact_metadata, export_onnx, save_openvino, verify_int8, write_qat_artifacts
from mobilenets.deploy.quantize import dataset_batches, quantize_onnx, quantize_openvino
from mobilenets.deploy.runtimes import load_runner
from mobilenets.weights import load_model

MODEL, RESOLUTION = "mobilenet_v2_1.0_224", 224


def photo_batches(root: Path, split: str, model: torch.nn.Module, photos: set[int]) -> list[np.ndarray]:
    """The ``split`` crops of the photos numbered ``photos`` (class indices), prepared for ``model``."""
    dataset = load_dataset(
        root, split, resolution=RESOLUTION, in_chans=3, mean=model.meta.mean, std=model.meta.std, crop_pct=0.875
    )
    kept = [images[np.isin(labels, sorted(photos))] for images, labels in dataset_batches(dataset)]
    return [images for images in kept if len(images)]


def agreements(model: torch.nn.Module, runners: dict, evaluation: list[np.ndarray]) -> dict[str, float]:
    """Each runner's top-1 agreement with ``model`` in fp32 PyTorch on the ``evaluation`` images."""
    batches = [(images, None) for images in evaluation]
    return {
        runtime: verify_int8(model, runner, evaluation=batches, min_agreement=0.0, min_samples=1)["agreement"]
        for runtime, runner in runners.items()
    }


def load_runners(files: dict[str, Path], threads: int) -> dict:
    """A runner for each artifact of ``files`` (format: path)."""
    return {fmt: load_runner(path, fmt, threads=threads) for fmt, path in files.items()}


def post_training(model: torch.nn.Module, calibration: list[np.ndarray], workdir: Path, threads: int) -> dict:
    """Runners of the post-training int8 of ``model`` in each runtime, calibrated on ``calibration``."""
    fp32 = export_onnx(model, workdir / "fp32.onnx", RESOLUTION)
    save_openvino(quantize_openvino(fp32, calibration), workdir / "ptq.xml", artifact_metadata(model, RESOLUTION))
    files = {
        "executorch": executorch.write_program(model, workdir / "ptq.pte", RESOLUTION, calibration),
        "onnx": quantize_onnx(fp32, workdir / "ptq.onnx", calibration),
        "openvino": workdir / "ptq.xml",
    }
    return load_runners(files, threads)


def quantization_aware(
    model: torch.nn.Module, tuning: list[np.ndarray], args: argparse.Namespace, workdir: Path
) -> tuple[dict, float]:
    """Runners of ``model`` after QAT on the ``tuning`` crops (targets: its own fp32 outputs), and the seconds
    the tuning took."""
    prepared = executorch.prepare_qat(copy.deepcopy(model), torch.zeros(2, 3, RESOLUTION, RESOLUTION)).eval()
    optimizer = torch.optim.Adam([p for p in prepared.parameters() if p.requires_grad], lr=args.lr)
    images = torch.from_numpy(np.concatenate(tuning))
    with torch.no_grad():  # the fp32 model's answers, the same every epoch
        targets = torch.cat([F.softmax(model(chunk), dim=1) for chunk in images.split(args.batch)])
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        losses = []
        for batch in torch.randperm(len(images), generator=generator).split(args.batch):
            loss = F.kl_div(F.log_softmax(prepared(images[batch]), dim=1), targets[batch], reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print(f"QAT epoch {epoch + 1}/{args.epochs}: KL to fp32 {np.mean(losses):.4f}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    files = write_qat_artifacts(
        executorch.convert_qat(prepared),
        workdir,
        stem="qat",
        shape=(3, RESOLUTION, RESOLUTION),
        name=MODEL,
        metadata=artifact_metadata(model, RESOLUTION),
    )
    return load_runners(files, args.threads), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="a folder made by bench/photo_crops.py")
    parser.add_argument("--epochs", type=int, default=2, help="QAT epochs over the tuning crops (default 2)")
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam's learning rate (default 1e-5)")
    parser.add_argument("--batch", type=int, default=16, help="QAT batch size (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="threads for training and every runtime")
    args = parser.parse_args()
    if not all((args.photos / split).is_dir() for split in ("train", "val")):
        parser.error(f"{str(args.photos)!r} has no train/ and val/: make it with bench/photo_crops.py")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model("pretrained", MODEL).eval()
    names = sorted(p.name for p in (args.photos / "val").iterdir() if p.is_dir())
    held_out = set(range(0, len(names), 3))  # every third photo, by name
    tuning = photo_batches(args.photos, "train", model, set(range(len(names))) - held_out)
    evaluation = photo_batches(args.photos, "val", model, held_out)
    count = sum(len(images) for images in evaluation)
    print(
        f"{MODEL}: tuning and calibration on {sum(len(b) for b in tuning)} crops of {len(names) - len(held_out)} "
        f"photos; agreement on {count} crops of {len(held_out)} others ({', '.join(names[i] for i in held_out)})",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        ptq = agreements(model, post_training(model, tuning, Path(tmp), args.threads), evaluation)
        qat_runners, seconds = quantization_aware(model, tuning, args, Path(tmp))
        qat = agreements(model, qat_runners, evaluation)
    rows = [[runtime, f"{100 * ptq[runtime]:.1f} %", f"{100 * qat[runtime]:.1f} %"] for runtime in ptq]
    print(tabulate(rows, ["runtime", "post-training int8", f"QAT int8 ({args.epochs} epochs, {seconds:.0f} s)"]))
    print(f"top-1 agreement with fp32 PyTorch on {count} held-out crops; lr {args.lr}, batch {args.batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
