"""What JPEG draft decoding (``Classifier(..., draft=True)``, ``predict --draft``) changes and saves.

The colour photos bundled with scikit-image are enlarged (bicubic) to a camera-sized shorter side
(``--side``, 2000 px by default), saved as JPEG (quality 90) in a temporary folder, and classified
by the packaged ImageNet MobileNetV2 twice: full decoding (the default) and draft decoding (Pillow
decodes the JPEG at 1/2 to 1/8 scale, never below 256 px). The default is also checked against
torchvision's reference (its ``mobilenet_v2`` with the same weights and its ``ImageClassification``
preprocessing on the PIL image): the largest softmax difference over all photos is printed.
Per photo: the largest softmax difference between the two, whether their top-1 classes agree, and
the median time of each (``--repeats`` runs) to decode, and to decode and preprocess (resize, crop,
normalise: the model's input). Enlarged photos are smoother than a camera's,
so the differences here may be smaller than on real photos.

    python bench/draft_decode.py [--side 2000] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from skimage import data
from torchvision.transforms._presets import ImageClassification

from mobilenets.data.decode import decode_image
from mobilenets.predict import Classifier, resize_size
from mobilenets.weights import load_model, pretrained_path

MODEL = "mobilenet_v2_1.0_224"
PHOTOS = {
    "astronaut": data.astronaut,
    "chelsea": data.chelsea,
    "coffee": data.coffee,
    "rocket": data.rocket,
    "hubble_deep_field": data.hubble_deep_field,
    "immunohistochemistry": data.immunohistochemistry,
    "retina": data.retina,
    "motorcycle": lambda: data.stereo_motorcycle()[0],
}


def probabilities(classifier: Classifier, path: Path) -> torch.Tensor:
    """The full softmax (num_classes,) of ``classifier`` on the image file ``path``."""
    probs = torch.zeros(len(classifier.labels))
    for p in classifier(path):
        probs[p.index] = p.prob
    return probs


def reference_probabilities(path: Path) -> torch.Tensor:
    """torchvision's MobileNetV2 with the packaged weights and its reference preprocessing, on ``path``."""
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(pretrained_path(MODEL), map_location="cpu", weights_only=True))
    with Image.open(path) as image, torch.inference_mode():
        x = ImageClassification(crop_size=224, resize_size=256)(image.convert("RGB"))
        return model.eval()(x.unsqueeze(0)).softmax(dim=1)[0]


def median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def timings(classifier: Classifier, path: Path, draft: int | None, repeats: int) -> tuple[float, float]:
    """Median ms to decode ``path``, and to decode and preprocess it for ``classifier``."""
    decode = median_ms(lambda: decode_image(path, draft=draft), repeats)
    return decode, median_ms(lambda: classifier.transform(decode_image(path, draft=draft)), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2000, help="shorter side of the saved JPEGs, pixels")
    parser.add_argument("--repeats", type=int, default=5, help="decodes timed per photo and mode (median)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("pretrained", MODEL)
    full = Classifier(model, topk=model.meta.num_classes, device="cpu")
    draft = Classifier(model, topk=model.meta.num_classes, device="cpu", draft=True)
    draft_size = resize_size(model.meta)
    print(
        "| photo | JPEG size | draft decode size | max softmax diff | top-1 full / draft "
        "| decode ms full / draft | decode + preprocess ms full / draft |"
    )
    print("|---|---|---|---|---|---|---|")
    diffs, agree, speedups, off_reference = [], 0, [], 0.0
    with tempfile.TemporaryDirectory() as folder:
        for name, load in PHOTOS.items():
            photo = Image.fromarray(np.asarray(load())).convert("RGB")
            scale = math.ceil(args.side / min(photo.size))
            path = Path(folder) / f"{name}.jpg"
            photo.resize((photo.width * scale, photo.height * scale), Image.Resampling.BICUBIC).save(path, quality=90)
            p_full, p_draft = probabilities(full, path), probabilities(draft, path)
            diff = float((p_full - p_draft).abs().max())
            off_reference = max(off_reference, float((p_full - reference_probabilities(path)).abs().max()))
            top = int(p_full.argmax()), int(p_draft.argmax())
            ms = {size: timings(full, path, size, args.repeats) for size in (None, draft_size)}
            diffs.append(diff)
            agree += top[0] == top[1]
            speedups.append(ms[None][1] / ms[draft_size][1])
            size = decode_image(path, draft=draft_size).size
            print(
                f"| {name} | {photo.width * scale}×{photo.height * scale} | {size[0]}×{size[1]} | {diff:.4f} "
                f"| {top[0]} / {top[1]} | {ms[None][0]:.1f} / {ms[draft_size][0]:.1f} "
                f"| {ms[None][1]:.1f} / {ms[draft_size][1]:.1f} |"
            )
    print(
        f"\nmax softmax diff {max(diffs):.4f} (median {statistics.median(diffs):.4f}); top-1 agreement "
        f"{agree}/{len(diffs)}; decode + preprocess {min(speedups):.1f}-{max(speedups):.1f}× faster in draft mode"
    )
    print(f"default vs torchvision's reference: max softmax diff {off_reference:.1e}")


if __name__ == "__main__":
    main()
