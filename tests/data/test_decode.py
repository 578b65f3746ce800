import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenets.data import UNREADABLE, ImageFolder
from mobilenets.data.decode import MAX_ASPECT_RATIO, decode_image


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny grey PNG whose header claims ``width`` × ``height`` pixels (its data holds one)."""
    png = io.BytesIO()
    Image.new("L", (1, 1)).save(png, format="PNG")
    raw = bytearray(png.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(raw[24:29])  # size, then depth, colour type...
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(raw)


def folder_pixels(path: Path, in_chans: int = 3) -> tuple[np.ndarray | None, int]:
    """What training and evaluation read from ``path``: (H, W[, C]) uint8 pixels, or None, and the label."""
    dataset = ImageFolder([(path, 0)], ["only"], in_chans=in_chans, transform=np.asarray, blank_shape=(in_chans, 4, 4))
    image, label = dataset[0]
    return (None if label == UNREADABLE else image), label


def test_16_bit_grey_scales_65535_to_255_in_every_reader(tmp_path: Path) -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)  # every 16-bit value once
    Image.fromarray(values).save(tmp_path / "grey16.png")
    expected = np.round(values / 257).astype(np.uint8)
    assert (np.asarray(decode_image(tmp_path / "grey16.png", mode="L")) == expected).all()
    pixels, _ = folder_pixels(tmp_path / "grey16.png", in_chans=1)
    assert (pixels == expected).all()
    rgb, _ = folder_pixels(tmp_path / "grey16.png", in_chans=3)
    assert (rgb == expected[..., None]).all()
    assert expected[-1, -1] == 255 and expected[0, 1] == 0


def transparent_images() -> dict[str, Image.Image]:
    """Each kind of transparency, with the left half opaque red and the right half transparent."""
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)
    keyed = np.zeros((8, 8, 3), np.uint8)
    keyed[:, :4] = (255, 0, 0)
    keyed[:, 4:] = (0, 0, 255)  # the colour key
    rgb_key = Image.fromarray(keyed)
    rgb_key.info["transparency"] = (0, 0, 255)
    palette = rgb_key.quantize(2)
    palette.info["transparency"] = int(palette.getpixel((7, 0)))
    grey = np.full((8, 8), 76, np.uint8)  # red's luminance
    grey[:, 4:] = 9
    grey_key = Image.fromarray(grey)
    grey_key.info["transparency"] = 9
    return {
        "RGBA": Image.fromarray(rgba),
        "LA": Image.fromarray(rgba).convert("LA"),
        "RGB colour key": rgb_key,
        "P colour key": palette,
        "L colour key": grey_key,
    }


@pytest.mark.parametrize("kind", list(transparent_images()))
def test_transparency_is_composited_on_white_in_every_reader(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "image.png"
    image = transparent_images()[kind]
    image.save(path, transparency=image.info["transparency"]) if "key" in kind else image.save(path)
    decoded = np.asarray(decode_image(path))
    pixels, _ = folder_pixels(path)
    assert (decoded == pixels).all()
    assert (decoded[:, 4:] == 255).all()  # transparent: white
    assert decoded[0, 0].tolist() == ([255, 0, 0] if kind.startswith(("RGB", "P")) else [76, 76, 76])


def test_16_bit_colour_key_is_transparent(tmp_path: Path) -> None:
    values = np.full((4, 4), 1000, np.uint16)
    values[:, 2:] = 50000
    Image.fromarray(values).save(tmp_path / "key16.png", transparency=50000)
    decoded = np.asarray(decode_image(tmp_path / "key16.png", mode="L"))
    assert decoded[:, :2].tolist() == [[4, 4]] * 4 and (decoded[:, 2:] == 255).all()


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "1", "I;16B"])
def test_other_modes_are_converted(tmp_path: Path, mode: str) -> None:
    image = Image.new("RGB", (16, 8), (255, 255, 255)).convert(mode)
    path = tmp_path / ("image.tif" if mode != "CMYK" else "image.jpg")
    image.save(path)
    for out in ("RGB", "L"):
        decoded = decode_image(path, mode=out)
        assert decoded.mode == out and decoded.size == (16, 8)
        assert np.asarray(decoded).min() >= 250 or mode.startswith("I")  # 16-bit 255 is nearly black


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red, right half blue, as stored
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / f"camera{suffix}"
    Image.fromarray(stored).save(path, exif=exif)
    upright = decode_image(path)
    assert upright.size == (20, 40)  # portrait, as the camera was held
    top, bottom = np.asarray(upright, np.int32)[[2, -3], 10]
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # the stored left side is now on top
    pixels, _ = folder_pixels(path)
    assert pixels.shape == (40, 20, 3)


def test_header_too_large_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming_size(1, 100_000_000))  # 100 M pixels in 70 bytes
    with pytest.raises(ValueError, match=r"^image '.*bomb.png' could not be decoded: 1 × 100000000 = 100000000 pixels"):
        decode_image(bomb)
    with pytest.warns(UserWarning, match="skipping unreadable image: .*bomb.png"):
        assert folder_pixels(bomb)[1] == UNREADABLE


def test_pixel_limit_is_an_error_not_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1× to 2× the limit: Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ValueError, match="1200 pixels, more than the 1000 allowed"):
            decode_image(tmp_path / "big.png")
        with pytest.warns(UserWarning, match="skipping unreadable image"):
            assert folder_pixels(tmp_path / "big.png")[1] == UNREADABLE
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert decode_image(tmp_path / "big.png").size == (40, 30)


def test_aspect_ratio_is_bounded(tmp_path: Path) -> None:
    Image.new("L", (MAX_ASPECT_RATIO + 1, 1)).save(tmp_path / "strip.png")
    Image.new("L", (1, MAX_ASPECT_RATIO)).save(tmp_path / "tall.png")
    with pytest.raises(ValueError, match=f"more than {MAX_ASPECT_RATIO}:1"):
        decode_image(tmp_path / "strip.png")
    assert decode_image(tmp_path / "tall.png").size == (1, MAX_ASPECT_RATIO)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        assert folder_pixels(tmp_path / "strip.png")[1] == UNREADABLE
