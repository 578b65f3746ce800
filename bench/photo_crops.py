"""A small labelled-folder set of real photos for int8 checks of ImageNet models: random square crops of
the photos scikit-image ships, `train/` for calibration and `val/` for the agreement check (one class
folder per photo; crops of one photo appear in both splits, so this measures agreement with fp32, not
accuracy on unseen pictures).

    python bench/photo_crops.py OUT_DIR [--train 16] [--val 12] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

# scikit-image's photos and images (grey ones are replicated to RGB).
PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle_left", "page", "retina", "rocket",
    "text", "colorwheel", "logo",
)  # fmt: skip
SIDE = 256  # pixels of each saved crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=16, help="crops per photo for calibration")
    parser.add_argument("--val", type=int, default=12, help="crops per photo for the check")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    photos = {}
    for name in PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            print(f"skipped {name}: not in this scikit-image")
            continue
        pixels = loader()
        photos[name] = Image.fromarray(np.asarray(pixels[0] if isinstance(pixels, tuple) else pixels)).convert("RGB")
    rng = np.random.default_rng(args.seed)
    for split, count in (("train", args.train), ("val", args.val)):
        for name, photo in photos.items():
            folder = args.out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            width, height = photo.size
            for index in range(count):
                side = int(min(width, height) * rng.uniform(0.35, 1.0))
                x, y = rng.integers(0, width - side + 1), rng.integers(0, height - side + 1)
                crop = photo.crop((x, y, x + side, y + side)).resize((SIDE, SIDE), Image.BILINEAR)
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                crop.save(folder / f"{index:02d}.png")
    print(f"{len(photos)} photos, {args.train} + {args.val} crops each, in {args.out}/train and {args.out}/val")


if __name__ == "__main__":
    main()
