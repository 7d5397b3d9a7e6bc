"""Reading image files into (H, W, 3) uint8 RGB arrays, the input every dataset here returns.

Pillow decodes the file; we then apply its EXIF orientation (`PIL.ImageOps.exif_transpose`,
so a phone photo comes out the way it is displayed, as detectron2's `read_image` does) and
bring any mode to 8-bit RGB:

* RGB as stored; L, 1, P (palette), CMYK, YCbCr, LAB, HSV: Pillow's own conversion to RGB.
* Modes with alpha (RGBA, LA, PA, P with transparency, RGBa): the alpha channel is dropped,
  each pixel keeps its stored colour. This is what torchvision's COCO dataset does
  (`Image.open(path).convert("RGB")`), so pixel values match models trained that way.
* 16/32-bit integers (I;16, I;16B, I;16L, I): read as 16-bit intensities and scaled by
  255/65535 (65535 -> 255, 257 -> 1), rounded, then repeated into three channels. Pillow's
  own conversion would clip every value above 255 to white.
* 32-bit float (F): values are taken as 0..255 intensities, rounded and clipped.

A file that is missing or cannot be decoded raises `ImageLoadError` (a ValueError) naming the
file and what went wrong.
"""

import os

import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageLoadError", "check_image", "load_image", "to_rgb_array"]

# EXIF orientations 5..8 transpose the image: its displayed size is (height, width) of the file
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageLoadError(ValueError):
    """An image file that is missing or that Pillow cannot read."""


def _open(path):
    if not os.path.isfile(path):
        raise ImageLoadError(f"image file {path!r}: no such file")
    try:
        return Image.open(path)
    except Exception as error:  # Pillow raises many types for a bad file; all mean "unreadable"
        raise ImageLoadError(f"image file {path!r}: cannot be read ({error})") from None


def to_rgb_array(image):
    """(H, W, 3) uint8 array of a PIL image of any mode, after its EXIF orientation."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "La":  # premultiplied luminance: Pillow only converts it via LA
        image = image.convert("LA")
    return np.array(image.convert("RGB"), dtype=np.uint8)


def load_image(path):
    """Read an image file as an (H, W, 3) uint8 RGB array (see the module docstring)."""
    path = os.fspath(path)
    with _open(path) as image:
        try:
            image.load()
            return to_rgb_array(image)
        except Exception as error:
            raise ImageLoadError(f"image file {path!r}: cannot be decoded ({error})") from None


def check_image(path, decode=False):
    """Displayed (height, width) of an image file, after EXIF orientation.

    Without `decode` only the header is read and `Image.verify` run (for PNG it checks every
    chunk's CRC, so truncated or damaged PNGs are caught; for JPEG it checks little). With
    `decode` the whole image is decoded. Raises `ImageLoadError` for an unreadable file.
    """
    path = os.fspath(path)
    try:
        with _open(path) as image:  # verify() must come straight after open, so open twice
            if decode:
                image.load()
            else:
                image.verify()
        with _open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except ImageLoadError:
        raise
    except Exception as error:
        raise ImageLoadError(f"image file {path!r}: cannot be decoded ({error})") from None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        height, width = width, height
    return height, width
