"""Image files to PIL images, one way for every reader (training, evaluation, calibration, predict).

:func:`decode_image` refuses images too large to decode safely (checked from the header, before
any pixel is decoded), turns camera photos upright (EXIF orientation), and converts every mode to
8-bit "RGB" or "L" with one set of rules (:func:`convert_image`): 16-bit values scaled so that
65535 becomes 255, transparency (alpha channel or colour key) composited on white.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import first_line

MODES = ("RGB", "L")
# Evaluation resizes the shorter side to the model's input size, so a 1 × N strip would grow to
# about N × size² pixels: a 12 KB PNG of 1 × 10⁸ pixels asks for terabytes. 100:1 is wider than
# any panorama and bounds that growth to 100 × size² pixels (6.6 M at 256 px).
MAX_ASPECT_RATIO = 100
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def mode_for(in_chans: int) -> str:
    """The decoded mode for a model with ``in_chans`` input channels: "L" for 1, else "RGB"."""
    return "L" if in_chans == 1 else "RGB"


def check_image_size(width: int, height: int) -> None:
    """Raise ``ValueError`` for an image that is too large to decode: more pixels than Pillow's
    ``Image.MAX_IMAGE_PIXELS`` (its decompression-bomb limit; None lifts it) or a side more than
    :data:`MAX_ASPECT_RATIO` times the other."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ValueError(
            f"{width} × {height} = {width * height} pixels, more than the {limit} allowed "
            "(PIL.Image.MAX_IMAGE_PIXELS, against decompression bombs)"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(f"{width} × {height} pixels, more than {MAX_ASPECT_RATIO}:1 between its sides")


def convert_image(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """``image`` (any PIL mode, loaded) in 8-bit ``mode`` ("RGB" or "L").

    16-bit and 32-bit integer grey ("I;16", "I") is scaled by 255 / 65535, rounded; transparency
    (RGBA, LA, PA, a palette with alpha, or a colour key) is composited on white; other modes
    (CMYK, YCbCr, 1, P...) are converted by Pillow.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if image.mode.startswith("I"):
        values = np.asarray(image).astype(np.int64)
        grey = Image.fromarray(np.clip((values + 128) // 257, 0, 255).astype(np.uint8), "L")
        key = image.info.get("transparency")
        if isinstance(key, int):
            grey.putalpha(Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8), "L"))
        image = grey
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image if image.mode == mode else image.convert(mode)


def decode_image(path: str | os.PathLike, *, mode: str = "RGB", draft: int | None = None) -> Image.Image:
    """Decode the image file ``path`` as 8-bit ``mode`` ("RGB" or "L"), upright (EXIF orientation applied).

    ``draft``: let a JPEG decode at 1/2, 1/4 or 1/8 scale (Pillow's draft mode, much faster for
    large photos, but not the same pixels) as long as both sides stay at least ``draft`` pixels.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line naming ``path``) for
    a file that is not an image, is truncated or corrupt, or is too large (:func:`check_image_size`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist or is not a file")
    try:
        # The file is ours to close, so that the decoded image (maybe returned as is) stays usable.
        with open(path, "rb") as file:
            with warnings.catch_warnings():
                # Pillow only warns between 1× and 2× its pixel limit; check_image_size refuses instead.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(file)
            check_image_size(*image.size)
            if draft:
                image.draft(None, (draft, draft))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return convert_image(image, mode)
    except UnidentifiedImageError:
        raise ValueError(f"image {str(path)!r} is not an image file PIL can read") from None
    except _DECODE_ERRORS as err:
        reason = first_line(err)
        raise ValueError(f"image {str(path)!r} could not be decoded: {reason}") from None
