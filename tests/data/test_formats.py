"""Every colour mode x every format Pillow writes, multi-frame files, codecs libtiff lacks, decoder warnings,
blank and tiny images: all generated here, read back through read_image, the pixels checked.

The picture is the same everywhere: a left half of grey LOW and a right half of grey HIGH
(deep modes: 1000 and 3000, or 0.25 and 0.75, which read_image stretches to 0 and 255).
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, features

from ultrasonic.data.files import IMAGE_SUFFIXES, is_image_name, skip_reason
from ultrasonic.data.formats import ACCEPTED, PIL_FORMAT_SUFFIXES, PIL_FORMATS
from ultrasonic.data.io import _to_channels, read_image, read_image_with_notes
from ultrasonic.data.quality import check_usable
from ultrasonic.errors import BadImageError, UnusableImageError

SIDE = 32
LOW, HIGH = 60, 180
MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
         "I", "I;16", "I;16L", "I;16B", "I;16N", "F"]
DEEP = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
WRITERS = {"PNG": {}, "TIFF": {}, "BMP": {}, "JPEG": {"quality": 95}, "GIF": {}, "WEBP": {"lossless": True},
           "PPM": {}, "JPEG2000": {}}
LOSSY = {"JPEG": 6}  # grey levels of tolerance; lossless formats: 2 (the colour conversions round)
# What Pillow's own writer gets wrong, so the file holds other levels than the picture (Pillow 12):
WRITER_DEFECTS = {("I;16B", "JPEG2000"): (255, 0)}  # the codestream stores the big-endian words byte-swapped


def halves(low, high, dtype=np.uint8) -> np.ndarray:
    out = np.full((SIDE, SIDE), low, dtype=dtype)
    out[:, SIDE // 2:] = high
    return out


def picture(mode: str) -> Image.Image:
    """The two-grey picture in `mode` (alpha opaque, so premultiplied modes keep their values)."""
    gray = Image.fromarray(halves(LOW, HIGH))
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        deep = halves(1000, 3000, np.int32 if mode == "I" else np.uint16)
        order = {"I;16B": ">u2", "I;16L": "<u2"}.get(mode, deep.dtype.newbyteorder("="))
        return Image.frombytes(mode, (SIDE, SIDE), deep.astype(order).tobytes())
    if mode == "F":
        return Image.fromarray(halves(0.25, 0.75, np.float32))
    if mode == "1":
        return Image.fromarray(halves(0, 255)).convert("1")
    if mode in ("LA", "La"):
        return Image.merge("LA", (gray, Image.new("L", gray.size, 255))).convert(mode)
    if mode in ("P", "PA"):
        indices = Image.fromarray(halves(0, 1), "P")
        indices.putpalette([LOW] * 3 + [HIGH] * 3)
        return indices if mode == "P" else indices.convert("PA")
    return gray.convert("RGB").convert(mode)


def expected(mode: str) -> tuple[int, int]:
    return (0, 255) if mode in DEEP or mode == "1" else (LOW, HIGH)


def sides(array: np.ndarray) -> tuple[float, float]:
    """Mean of the left and right halves, away from the edge between them (JPEG rings there)."""
    return float(array[:, 2:SIDE // 2 - 4].mean()), float(array[:, SIDE // 2 + 4:-2].mean())


def written(mode: str, fmt: str) -> bytes | None:
    """The picture in `mode` saved as `fmt`, or None where Pillow cannot write that combination."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            picture(mode).save(buffer, fmt, **WRITERS[fmt])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return buffer.getvalue()


def pillow_reads(data: bytes) -> Image.Image | None:
    """Pillow's own reading of the file it wrote (None: its writer made a file it cannot read itself)."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except Exception:
        return None


COMBINATIONS = [(m, f) for m in MODES for f in WRITERS if f != "JPEG2000" or features.check("jpg_2000")]
WRITABLE = [(m, f) for m, f in COMBINATIONS if written(m, f) is not None]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_converts_to_gray_and_rgb_with_its_grey_levels(mode):
    """In memory, so that modes no format writes (La, HSV, RGBa, I;16N) are covered too."""
    for channels, target in ((1, "L"), (3, "RGB")):
        out = _to_channels(picture(mode), channels, "x")
        assert out.mode == target
        array = np.asarray(out).astype(float)
        for c in range(channels):
            got = sides(array if channels == 1 else array[..., c])
            assert np.allclose(got, expected(mode), atol=2), (mode, channels, got)


def test_a_mode_that_cannot_become_rgb_is_refused_by_name():
    class Odd(Image.Image):  # a mode Pillow has no conversion for
        def convert(self, *args, **kwargs):
            raise ValueError("conversion from XYZ to RGB not supported")

    odd = Odd()
    odd._mode, odd._size = "XYZ", (SIDE, SIDE)
    with pytest.raises(BadImageError, match=r"scan\.tif: colour mode 'XYZ' cannot be converted to RGB"):
        _to_channels(odd, 1, "scan.tif")


def test_the_combinations_cover_every_format_and_the_odd_modes():
    assert {f for _, f in WRITABLE} == {f for _, f in COMBINATIONS}
    assert {"LAB", "CMYK", "YCbCr", "I;16B", "F", "PA", "1"} <= {m for m, _ in WRITABLE}


@pytest.mark.parametrize("mode, fmt", WRITABLE, ids=[f"{m}-{f}" for m, f in WRITABLE])
def test_every_mode_in_every_format_reads_back_its_grey_levels(mode, fmt):
    data = written(mode, fmt)
    own = pillow_reads(data)
    if own is None:  # e.g. YCbCr TIFF: Pillow's writer leaves out the subsampling its reader assumes
        with pytest.raises(BadImageError, match=f"truncated or corrupt {fmt}"):
            read_image(data, channels=1)
        return
    if own.mode not in DEEP and mode in DEEP:
        # the writer squeezed 16-bit/float into 8 bits by clipping (GIF, WebP, BMP): both halves white
        with pytest.raises(UnusableImageError, match="blank or too small to classify: every pixel"):
            read_image(data, channels=1)
        return
    tolerance, levels = LOSSY.get(fmt, 2), WRITER_DEFECTS.get((mode, fmt), expected(mode))
    gray = read_image(data, channels=1)
    rgb = read_image(data, channels=3)
    assert gray.shape == (SIDE, SIDE, 1) and rgb.shape == (SIDE, SIDE, 3)
    assert np.allclose(sides(gray[..., 0].astype(float)), levels, atol=tolerance), (own.mode, sides(gray))
    for c in range(3):
        assert np.allclose(sides(rgb[..., c].astype(float)), levels, atol=tolerance), (own.mode, c)


def test_lab_tiff_the_issue_named_reads_as_gray():
    data = written("LAB", "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "LAB"
    assert np.allclose(sides(read_image(data, channels=1)[..., 0].astype(float)), (LOW, HIGH), atol=2)


# --- one list of formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(PIL_FORMAT_SUFFIXES))
def test_the_folder_scan_takes_every_suffix_of_every_format_the_reader_opens(tmp_path, fmt):
    from pathlib import Path

    _, suffixes = PIL_FORMAT_SUFFIXES[fmt]
    data = written("L", fmt) or written("RGB", fmt)
    for suffix in suffixes:
        assert suffix in IMAGE_SUFFIXES and is_image_name(f"x{suffix.upper()}")
        assert skip_reason(Path(f"scan{suffix}")) is None
        path = tmp_path / f"scan{suffix}"
        path.write_bytes(data)
        assert read_image(path, channels=1).shape == (SIDE, SIDE, 1)
    assert fmt in PIL_FORMATS


def test_the_refusal_lists_what_is_accepted_from_the_one_list():
    with pytest.raises(BadImageError, match="not a recognised image") as info:
        read_image(b"Patient notes, not pixels", name="notes.png")
    assert ACCEPTED in str(info.value)
    for words in ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WebP", "PPM/PGM/PBM", "JPEG 2000", "DICOM"):
        assert words in ACCEPTED


# --- multi-frame files ---------------------------------------------------------------------------------


def frames(n: int = 3) -> list[Image.Image]:
    """The picture, then n - 1 different ones (writers merge identical consecutive frames)."""
    return [Image.fromarray(halves(LOW + 20 * k, HIGH - 20 * k)).convert("RGB") for k in range(n)]


@pytest.mark.parametrize("fmt, kwargs, note", [
    ("GIF", {}, "animated GIF with 3 frames: only the first is used"),
    ("WEBP", {"lossless": True}, "animated WebP with 3 frames: only the first is used"),
    ("PNG", {}, "animated PNG (APNG) with 3 frames: only the first is used"),
    ("TIFF", {}, "multipage TIFF with 3 pages: only the first is used"),
])
def test_multi_frame_files_give_the_first_frame_and_say_so(fmt, kwargs, note, caplog, monkeypatch):
    import logging

    buffer = io.BytesIO()
    first, *rest = frames()
    first.save(buffer, fmt, save_all=True, append_images=rest, **kwargs)
    decoded = read_image_with_notes(buffer.getvalue(), channels=1, name="cine")
    assert decoded.notes == (note,)
    assert np.allclose(sides(decoded.image[..., 0].astype(float)), (LOW, HIGH), atol=2)  # the first frame
    monkeypatch.setattr(logging.getLogger("ultrasonic"), "propagate", True)
    with caplog.at_level("INFO", logger="ultrasonic"):
        read_image(buffer.getvalue(), channels=1, name="cine")
    assert f"cine: {note}" in caplog.text


def test_a_single_frame_file_has_no_notes():
    assert read_image_with_notes(written("L", "PNG"), channels=1).notes == ()


# --- codecs and decoder warnings ---------------------------------------------------------------------


def tiff_with_compression(code: int) -> bytes:
    """A valid Deflate TIFF whose compression tag is then set to `code` (the data stays Deflate)."""
    buffer = io.BytesIO()
    Image.fromarray(halves(LOW, HIGH)).save(buffer, "TIFF", compression="tiff_adobe_deflate")
    data = bytearray(buffer.getvalue())
    offset = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[offset:offset + 2])[0]):
        entry = offset + 2 + 12 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] == 259:
            data[entry + 8:entry + 10] = struct.pack("<H", code)
    return bytes(data)


def test_a_tiff_compression_libtiff_lacks_says_so_not_corrupt():
    from ultrasonic.data.formats import _libtiff_has_codec

    if _libtiff_has_codec(50001) is not False:
        pytest.skip("this libtiff decodes WebP-in-TIFF (or cannot be asked)")
    with pytest.raises(BadImageError, match=r"scan\.tif: TIFF compression webp \(50001\) is not supported by "
                                            r"this Pillow/libtiff") as info:
        read_image(tiff_with_compression(50001), name="scan.tif")
    assert "corrupt" not in str(info.value)


def test_a_tiff_compression_pillow_has_no_name_for_says_so():
    with pytest.raises(BadImageError, match=r"TIFF compression 34712 is not supported by this Pillow/libtiff"):
        read_image(tiff_with_compression(34712), name="scan.tif")  # 34712: JPEG 2000 in TIFF


def test_a_corrupt_tiff_of_a_supported_codec_is_still_called_corrupt():
    data = bytearray(tiff_with_compression(8))
    strip = struct.unpack("<I", data[4:8])[0]  # Pillow writes the strip before its directory
    data[8:strip] = b"\xff" * (strip - 8)  # the Deflate stream garbled
    with pytest.raises(BadImageError, match="truncated or corrupt TIFF"):
        read_image(bytes(data), name="scan.tif")


def jpeg_with_corrupt_exif() -> bytes:
    """A JPEG whose EXIF block has a tag pointing past its end: Pillow warns about it."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHII", 0x010E, 2, 100, 0x1000) + struct.pack(">I", 0)  # ImageDescription, 100 bytes at 4096
    segment = b"Exif\x00\x00" + tiff
    data = written("L", "JPEG")
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:]


def test_decoder_warnings_become_notes_about_the_file(recwarn):
    data = jpeg_with_corrupt_exif()
    # what Pillow does on its own: a warning that names no file (its words differ between Pillow versions:
    # "Truncated File Read" in 12, "Tag data larger than file. Skipping tag 270" in 13)
    with pytest.warns(UserWarning) as pillow_said:
        Image.open(io.BytesIO(data)).getexif()
    warned = " ".join(str(pillow_said[0].message).split())
    recwarn.clear()
    decoded = read_image_with_notes(data, channels=1, name="scan.jpg")
    assert np.allclose(sides(decoded.image[..., 0].astype(float)), (LOW, HIGH), atol=6)
    assert decoded.notes == (f"decoder warning: {warned}",)
    assert not recwarn.list  # kept as the file's note, not printed without a file name


def test_warnings_in_one_thread_are_not_attributed_to_another():
    import threading

    from ultrasonic.data.notes import collect_warnings

    mine, theirs, ready, done = [], [], threading.Event(), threading.Event()

    def other():
        with collect_warnings(theirs):
            ready.set()
            done.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    ready.wait(5)
    with collect_warnings(mine):
        warnings.warn("odd header in file A")
    done.set()
    thread.join()
    assert mine == ["decoder warning: odd header in file A"] and theirs == []
    with warnings.catch_warnings(record=True) as after:  # the hook is gone once nobody collects
        warnings.simplefilter("always")
        warnings.warn("not a decoder's")
    assert [str(w.message) for w in after] == ["not a decoder's"]


def test_memory_error_still_propagates(monkeypatch):
    from ultrasonic.data import io as image_io

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(image_io, "_to_channels", exhausted)
    with pytest.raises(MemoryError, match="out of memory while decoding scan.png"):
        read_image(written("L", "PNG"), name="scan.png")


# --- blank or too small ----------------------------------------------------------------------------


@pytest.mark.parametrize("array, words", [
    (np.full((64, 64), 255, np.uint8), "every pixel has the same value"),
    (np.zeros((64, 64, 3), np.uint8), "every pixel has the same value"),
    (np.full((64, 64), 100, np.uint8) + np.eye(64, dtype=np.uint8) * 5, "a brightness range of only 5 grey levels"),
    (np.array([[200]], np.uint8), "1 x 1 px is smaller than min_image_side 24"),
    (halves(0, 255)[:16, :16].copy(), "16 x 16 px is smaller than min_image_side 24"),
])
def test_blank_or_tiny_images_are_refused_with_the_reason(array, words):
    data = written_array(array)
    with pytest.raises(UnusableImageError, match="^scan.png: blank or too small to classify: ") as info:
        read_image(data, name="scan.png", size=96)
    assert words in str(info.value)
    assert isinstance(info.value, BadImageError)
    out = read_image(data, size=96, min_image_side=0, min_dynamic_range=0)  # both checks off: read as before
    assert out.shape == (96, 96, 3)


def written_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_blank_jpeg_with_compression_noise_is_blank_and_a_faint_image_is_not():
    noisy = np.full((64, 64), 250, np.uint8)
    noisy[::7, ::5] = 247
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=75)
    with pytest.raises(UnusableImageError):
        read_image(buffer.getvalue())
    faint = np.full((64, 64), 120, np.uint8)
    faint[20:40, 20:40] = 140  # a 20-level lesion on a flat background is an image
    assert read_image(written_array(faint), channels=1).max() == 140


def test_the_size_limit_judges_a_jpeg_by_its_stored_size_not_its_draft():
    buffer = io.BytesIO()
    Image.fromarray(np.tile(np.arange(150, dtype=np.uint8), (150, 1))).save(buffer, "JPEG")
    assert read_image(buffer.getvalue(), size=16, channels=1).shape == (16, 16, 1)  # drafted at 1/8: 19 px


def test_16_bit_with_any_contrast_is_stretched_and_usable_a_constant_one_is_blank():
    assert read_image(written(picture("I;16").mode, "PNG") or b"", channels=1).max() == 255
    flat = Image.fromarray(np.full((SIDE, SIDE), 3000, np.uint16))
    buffer = io.BytesIO()
    flat.save(buffer, "PNG")
    with pytest.raises(UnusableImageError, match="every pixel has the same value"):
        read_image(buffer.getvalue())


def test_check_usable_alone_and_switched_off():
    check_usable(halves(0, 255), "x")
    with pytest.raises(UnusableImageError, match="x: blank or too small to classify"):
        check_usable(np.zeros((100, 100), np.uint8), "x")
    check_usable(np.zeros((1, 1), np.uint8), "x", min_image_side=0, min_dynamic_range=0)


def test_the_limits_are_settings_with_the_same_defaults():
    import inspect

    from ultrasonic.config import Config, load_config

    cfg = load_config()
    defaults = inspect.signature(read_image).parameters
    assert cfg.min_image_side == defaults["min_image_side"].default == 24
    assert cfg.min_dynamic_range == defaults["min_dynamic_range"].default == 8
    assert load_config(overrides={"min_image_side": 0, "min_dynamic_range": 0}).min_image_side == 0
    from ultrasonic.errors import ConfigError

    with pytest.raises(ConfigError, match="min_dynamic_range"):
        load_config(overrides={"min_dynamic_range": 300})
    assert "min_image_side" in {f for f in Config.__dataclass_fields__}
