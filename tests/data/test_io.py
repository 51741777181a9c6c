"""read_image: formats, sizes, channels, odd modes and one clear error per broken file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ultrasonic.data.files import is_image_name
from ultrasonic.data.io import read_image
from ultrasonic.errors import BadImageError

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (40, 60), dtype=np.uint8)
RGB = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
# Tiny and one-grey-level images are refused by default (test_formats.py tests that); the
# tests here that use them for something else turn both checks off.
ANY = dict(min_image_side=0, min_dynamic_range=0)
# Smooth content for JPEG, whose losses on noise would hide real errors.
SMOOTH = np.add.outer(np.arange(40) * 3, np.arange(60) * 2).astype(np.uint8)


def encode(array: np.ndarray | Image.Image, fmt: str, **kwargs) -> bytes:
    img = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_formats_round_trip_exactly(tmp_path, fmt):
    gray_path, rgb_path = tmp_path / f"g.{fmt.lower()}", tmp_path / f"c.{fmt.lower()}"
    gray_path.write_bytes(encode(GRAY, fmt))
    rgb_path.write_bytes(encode(RGB, fmt))

    gray, rgb = read_image(gray_path, channels=1), read_image(rgb_path, channels=3)

    assert gray.shape == (40, 60, 1) and gray.dtype == np.uint8
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], GRAY)
    np.testing.assert_array_equal(rgb, RGB)


def test_jpeg_round_trip_is_close(tmp_path):
    path = tmp_path / "x.jpeg"
    path.write_bytes(encode(SMOOTH, "JPEG", quality=95))
    gray = read_image(path, channels=1)
    assert gray.shape == (40, 60, 1)
    assert np.abs(gray[..., 0].astype(int) - SMOOTH).mean() < 2
    colour = read_image(encode(np.stack([SMOOTH] * 3, -1), "JPEG", quality=95), channels=3)
    assert colour.shape == (40, 60, 3)
    assert np.abs(colour.astype(int) - SMOOTH[..., None]).mean() < 2


def test_format_is_sniffed_from_content_not_name(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(encode(GRAY, "PNG"))
    np.testing.assert_array_equal(read_image(path, channels=1)[..., 0], GRAY)


def test_resize_to_square_int_and_to_height_width():
    data = encode(RGB, "PNG")
    assert read_image(data, size=32).shape == (32, 32, 3)
    assert read_image(data, size=(20, 50), channels=1).shape == (20, 50, 1)
    # size equal to the image's own is a no-op
    np.testing.assert_array_equal(read_image(data, size=(40, 60)), RGB)


def test_resize_of_constant_image_keeps_its_value():
    flat = np.full((40, 60), 77, dtype=np.uint8)
    for fmt in ("PNG", "JPEG"):  # JPEG takes the draft (reduced decode) path
        out = read_image(encode(flat, fmt), size=16, channels=1, **ANY)
        assert out.shape == (16, 16, 1)
        assert np.abs(out.astype(int) - 77).max() <= 1


def test_gray_to_three_channels_repeats_the_gray():
    out = read_image(encode(GRAY, "PNG"), channels=3)
    assert out.shape == (40, 60, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], GRAY)


def test_rgb_to_one_channel_uses_itu_601_luma():
    # L = 0.299 R + 0.587 G + 0.114 B on pure red, green and blue
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    out = read_image(encode(pixels, "PNG"), channels=1, **ANY)
    assert out.shape == (1, 3, 1)
    assert out[0, :, 0].tolist() == [76, 150, 29]


def test_channels_other_than_1_or_3_are_refused():
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        read_image(encode(GRAY, "PNG"), channels=2)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_is_scaled_by_its_own_range(fmt):
    # 1000 -> 0, 1500 -> 0.25 * 255 = 63.75 -> 64, 3000 -> 255
    deep = np.full((8, 12), 1500, dtype=np.uint16)
    deep[0, 0], deep[-1, -1] = 1000, 3000
    out = read_image(encode(deep, fmt), channels=1, **ANY)
    assert out.dtype == np.uint8 and out.shape == (8, 12, 1)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255 and out[3, 3, 0] == 64


def test_palette_png_is_expanded_to_its_colours():
    img = Image.new("P", (4, 2))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    out = read_image(encode(img, "PNG"), channels=3, **ANY)
    assert out.shape == (2, 4, 3)
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [200, 100, 50]


def test_rgba_alpha_is_dropped_not_composited():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 120, 230)
    rgba[..., 3] = 0  # fully transparent: compositing would change the colour
    out = read_image(encode(rgba, "PNG"), channels=3, **ANY)
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [10, 120, 230]


def test_cmyk_jpeg_becomes_rgb():
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    data = encode(Image.fromarray(red).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = read_image(data, channels=3, **ANY)
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - red).max() < 8


def test_exif_orientation_is_applied():
    # Stored 20 high x 40 wide, left half white; orientation 6 means "rotate 90 degrees
    # clockwise to display", which puts the white half on top of a 40 x 20 image.
    stored = np.zeros((20, 40), dtype=np.uint8)
    stored[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", exif=exif, quality=95)

    out = read_image(data, channels=1, **ANY)
    assert out.shape == (40, 20, 1)
    assert out[:16].mean() > 240 and out[24:].mean() < 15
    assert read_image(data, size=(10, 30), channels=1, **ANY).shape == (10, 30, 1)


def test_bytes_input_equals_file_input(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(encode(RGB, "PNG"))
    np.testing.assert_array_equal(read_image(path.read_bytes()), read_image(path))
    np.testing.assert_array_equal(read_image(str(path)), read_image(path))


def test_one_pixel_image_is_readable_with_the_checks_off():
    out = read_image(encode(np.array([[[9, 8, 7]]], dtype=np.uint8), "PNG"), **ANY)
    assert out.shape == (1, 1, 3) and out[0, 0].tolist() == [9, 8, 7]
    assert read_image(encode(np.array([[5]], dtype=np.uint8), "PNG"), size=8, channels=1, **ANY).shape == (8, 8, 1)


def _broken_files(tmp_path):
    png, jpeg = encode(RGB, "PNG"), encode(RGB, "JPEG")  # noise: the cut lands in scan data
    files = {
        "empty.png": (b"", r"empty file \(0 bytes\)"),
        "notes.png": (b"patient notes, not pixels\n", "not a recognised image"),
        "cut.png": (png[: len(png) // 2], "truncated or corrupt PNG"),
        "cut.jpeg": (jpeg[: len(jpeg) // 2], "truncated or corrupt JPEG"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    return files


@pytest.mark.parametrize("name", ["empty.png", "notes.png", "cut.png", "cut.jpeg"])
def test_broken_file_raises_bad_image_error_naming_file_and_problem(tmp_path, name):
    problem = _broken_files(tmp_path)[name][1]
    with pytest.raises(BadImageError, match=rf"{name.replace('.', '[.]')}: {problem}") as info:
        read_image(tmp_path / name)
    assert info.value.source == str(tmp_path / name)


def test_missing_file_and_folder_are_bad_images(tmp_path):
    with pytest.raises(BadImageError, match=r"nowhere\.png: file not found"):
        read_image(tmp_path / "nowhere.png")
    with pytest.raises(BadImageError, match="is a folder, not an image file"):
        read_image(tmp_path)


def test_image_over_max_pixels_is_refused_before_decoding():
    data = encode(GRAY, "PNG")  # 60 x 40 = 2400 px
    with pytest.raises(BadImageError, match=r"scan\.png: 60 x 40 px is more than the limit of 2,000 pixels"):
        read_image(data, name="scan.png", max_pixels=2000)
    assert read_image(data, max_pixels=2400).shape == (40, 60, 3)


def test_bytes_errors_use_the_given_name_else_bytes():
    with pytest.raises(BadImageError, match="^upload.png: empty file"):
        read_image(b"", name="upload.png")
    with pytest.raises(BadImageError, match="^<bytes>: not a recognised image"):
        read_image(b"GIF? no")


@pytest.mark.parametrize(
    "name, expected",
    [("a.png", True), ("b.JPEG", True), ("c.jpg", True), ("d.tif", True), ("e.tiff", True),
     ("f.bmp", True), ("g.dcm", True), ("h.txt", False), (".hidden.png", False),
     ("noext", False), ("dir/x.Png", True)],
)
def test_is_image_name(name, expected):
    assert is_image_name(name) is expected
