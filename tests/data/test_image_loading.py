"""Image files of every common Pillow mode come out as (H, W, 3) uint8 RGB, EXIF applied."""

import numpy as np
import pytest
from PIL import Image

from mrcnn_np.data import ImageLoadError, load_image
from mrcnn_np.data.images import check_image

EXIF_ORIENTATION = 0x0112


def save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_rgb_png_is_read_exactly(tmp_path, rng):
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = load_image(save(tmp_path, "rgb.png", Image.fromarray(pixels)))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels)


def test_gray_l_is_repeated_into_three_channels(tmp_path):
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    out = load_image(save(tmp_path, "l.png", Image.fromarray(gray, mode="L")))
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def test_rgba_and_la_drop_alpha_keeping_stored_colour(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 128], [70, 80, 90, 255]]], np.uint8)
    out = load_image(save(tmp_path, "rgba.png", Image.fromarray(rgba, mode="RGBA")))
    np.testing.assert_array_equal(out, rgba[:, :, :3])  # even the fully transparent pixel
    la = np.array([[[7, 0], [9, 255]]], np.uint8)
    out = load_image(save(tmp_path, "la.png", Image.fromarray(la, mode="LA")))
    np.testing.assert_array_equal(out, [[[7, 7, 7], [9, 9, 9]]])


def test_palette_image_takes_its_palette_colours(tmp_path):
    image = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    out = load_image(save(tmp_path, "p.png", image))
    red, green, blue = [255, 0, 0], [0, 255, 0], [0, 0, 255]
    np.testing.assert_array_equal(out, [[red, green], [blue, green]])


def test_cmyk_uses_pillows_conversion(tmp_path):
    # Pillow: R = (255 - C) * (255 - K) / 255 rounded, likewise G from M and B from Y:
    # (100, 50, 0, 20) -> 155 * 235 / 255 = 142.8, 205 * 235 / 255 = 188.9, 255 * 235 / 255
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [100, 50, 0, 20]]], np.uint8)
    out = load_image(save(tmp_path, "cmyk.tif", Image.fromarray(cmyk, mode="CMYK")))
    np.testing.assert_array_equal(
        out, [[[255, 255, 255], [0, 255, 255], [0, 0, 0], [143, 189, 235]]]
    )


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    # x * 255 / 65535 = x / 257, rounded half to even: 32768 / 257 = 127.502 -> 128
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    out = load_image(save(tmp_path, "g16.png", image))
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 128, 255]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_bilevel_image_is_black_and_white(tmp_path):
    image = Image.new("1", (2, 1))
    image.putpixel((0, 0), 1)
    np.testing.assert_array_equal(load_image(save(tmp_path, "b.png", image)),
                                  [[[255, 255, 255], [0, 0, 0]]])


def test_exif_rotated_jpeg_comes_out_as_displayed(tmp_path):
    # stored 16 rows x 32 columns: left half red, right half blue. EXIF orientation 6 means
    # "rotate 90 degrees clockwise to display": the left column becomes the top row, so the
    # displayed image is 32 rows x 16 columns, red on top, blue below.
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16, 0] = 255
    stored[:, 16:, 2] = 255
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = save(tmp_path, "rotated.jpg", Image.fromarray(stored), exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (32, 16, 3) and out.dtype == np.uint8
    # JPEG is lossy; away from the red/blue edge every pixel is within a few levels
    np.testing.assert_allclose(out[:12].reshape(-1, 3), [[255, 0, 0]] * (12 * 16), atol=12)
    np.testing.assert_allclose(out[20:].reshape(-1, 3), [[0, 0, 255]] * (12 * 16), atol=12)
    np.testing.assert_array_equal(check_image(path), (32, 16))  # displayed height, width


def test_missing_and_corrupt_files_raise_naming_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match="nowhere.png.*no such file"):
        load_image(tmp_path / "nowhere.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image" * 4)
    with pytest.raises(ImageLoadError, match="junk.png"):
        load_image(junk)
    pixels = np.zeros((40, 40, 3), np.uint8)
    whole = save(tmp_path, "whole.png", Image.fromarray(pixels)).read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageLoadError, match="truncated.png"):
        load_image(truncated)
    with pytest.raises(ImageLoadError, match="truncated.png"):
        check_image(truncated)  # the header alone is fine; verify() finds the bad chunk
    assert issubclass(ImageLoadError, ValueError)
