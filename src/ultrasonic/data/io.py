"""read_image: the one strict decoder every command uses (train, evaluate, predict, serve).

Bytes in, uint8 H x W x C out, at the requested size and channel count. The
format is sniffed from the content, never trusted from the file name; the
accepted formats are listed once, in data/formats.py. Any problem becomes a
BadImageError naming the file and what is wrong; an image that decodes but
holds nothing to classify (one grey level, a few pixels) an UnusableImageError
("blank or too small to classify", data/quality.py; min_image_side=0 and
min_dynamic_range=0 turn the checks off). MemoryError is never a bad file.

    x = read_image("chest.jpeg", size=224, channels=1)   # (224, 224, 1) uint8

Notes. Some files decode with a caveat the caller should report next to the
file. read_image_with_notes returns them; read_image logs each one at INFO as
"<file>: <note>" and returns the array alone:

    decoded = read_image_with_notes("cine.gif", size=224, channels=1)
    decoded.image    # (224, 224, 1) uint8
    decoded.notes    # ("animated GIF with 12 frames: only the first is used",)

A note is one sentence without the file name. The texts:
  "<kind> with N frames: only the first is used"   kind: animated GIF, animated WebP,
      animated PNG (APNG), multi-picture JPEG (MPO), DICOM; "multipage TIFF with N pages: ..."
  "decoder warning: <the warning's text>"          a Python warning Pillow or pydicom raised
      while decoding this file (at most 5, then "decoder warning: N more"; data/notes.py)
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ultrasonic.data.formats import ACCEPTED, PIL_FORMATS, tiff_codec_problem
from ultrasonic.data.notes import collect_warnings
from ultrasonic.data.quality import MIN_DYNAMIC_RANGE, MIN_IMAGE_SIDE, check_contrast, check_side
from ultrasonic.errors import BadImageError, ImageTooLargeError

log = logging.getLogger("ultrasonic")

# 20000 x 20000 grey fits (400 MB); beyond this is treated as a decompression bomb.
MAX_PIXELS = 500_000_000
# Pixels scaled to 0-255 at a time (row_blocks): each float64 working copy of a block is 2 MB.
BLOCK_PIXELS = 2**18
# Modes of more than 8 bits per sample: scaled to 0-255 by their own range.
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MULTI_FRAME_KINDS = {"GIF": "animated GIF", "WEBP": "animated WebP", "PNG": "animated PNG (APNG)",
                     "MPO": "multi-picture JPEG (MPO)", "JPEG": "multi-picture JPEG (MPO)"}

# We check the pixel count ourselves (MAX_PIXELS, per call), so Pillow's global
# guard would only add a second, different limit.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

Source = str | os.PathLike | bytes


@dataclass(frozen=True)
class Decoded:
    """What read_image_with_notes returns: the image and the notes about it (module docstring)."""

    image: np.ndarray  # uint8 (H, W, channels)
    notes: tuple[str, ...] = ()


def read_image(
    source: Source,
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    min_image_side: int = MIN_IMAGE_SIDE,
    min_dynamic_range: int = MIN_DYNAMIC_RANGE,
) -> np.ndarray:
    """Decode one image to uint8 (H, W, channels), resized to `size` if given; notes are logged.

    `size` is an int (square) or (height, width). EXIF orientation is applied,
    16-bit and float data are scaled to 0-255 by their own range, alpha is
    dropped, palettes are expanded, multi-frame files give their first frame.
    DICOM is recognised by its content.
    """
    decoded = read_image_with_notes(source, size, channels, name=name, max_pixels=max_pixels,
                                    min_image_side=min_image_side, min_dynamic_range=min_dynamic_range)
    for note in decoded.notes:
        log.info("%s: %s", source_label(source, name), note)
    return decoded.image


def read_image_with_notes(
    source: Source,
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    min_image_side: int = MIN_IMAGE_SIDE,
    min_dynamic_range: int = MIN_DYNAMIC_RANGE,
) -> Decoded:
    """Like read_image, and the notes about the file returned rather than logged (module docstring)."""
    label = source_label(source, name)
    _check_channels(channels)
    notes: list[str] = []
    try:
        with collect_warnings(notes):
            img = _decode(_read_bytes(source, label), label, max_pixels, size, notes, min_image_side)
            img = _to_channels(img, channels, label)
            check_contrast(np.asarray(img), label, min_dynamic_range)
            array = _resize(img, size)
    except MemoryError as exc:  # the machine's problem, not the file's: never reported as a bad image
        raise MemoryError(f"out of memory while decoding {label}") from exc
    return Decoded(array, tuple(notes))


def source_label(source: Source, name: str | None) -> str:
    """How messages name a source: the name given, else the path; bytes without a name are "<bytes>"."""
    return name or (os.fspath(source) if not isinstance(source, bytes) else "<bytes>")


def _decode(data: bytes, label: str, max_pixels: int, size, notes: list[str], min_image_side: int) -> Image.Image:
    if _is_dicom(data):
        img = _read_dicom(data, label, max_pixels, notes)
        check_side(*img.size, label, min_image_side)
        return img
    return _open_pil(data, label, max_pixels, size, notes, min_image_side)


def _resize(img: Image.Image, size) -> np.ndarray:
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def _read_bytes(source: Source, label: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError as exc:
            raise BadImageError(label, "file not found") from exc
        except IsADirectoryError as exc:
            raise BadImageError(label, "is a folder, not an image file") from exc
        except OSError as exc:
            raise BadImageError(label, f"cannot be read ({exc.strerror or exc})") from exc
    if not data:
        raise BadImageError(label, "empty file (0 bytes)")
    return data


def _is_dicom(data: bytes) -> bool:
    """The 'DICM' preamble, or a bare DICOM data set (whose first bytes no Pillow format shares)."""
    from ultrasonic.data.dicom import looks_like_dicom

    return looks_like_dicom(data)


def _read_dicom(data: bytes, label: str, max_pixels: int, notes: list[str]) -> Image.Image:
    try:
        from ultrasonic.data.dicom import read_dicom
    except ImportError as exc:
        raise BadImageError(label, "is DICOM, which this installation cannot read yet") from exc
    return read_dicom(data, label, max_pixels, notes)


def _open_pil(data: bytes, label: str, max_pixels: int, size, notes: list[str], min_image_side: int) -> Image.Image:
    """Open, check the pixel count and side before decoding, then decode the first frame fully."""
    try:
        img = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError as exc:
        raise BadImageError(label, tiff_codec_problem(data) or f"not a recognised image ({ACCEPTED})") from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise BadImageError(label, f"unreadable image header ({type(exc).__name__}: {exc})") from exc
    _check_pixels(img.size, label, max_pixels)
    check_side(*img.size, label, min_image_side)  # the stored size: draft mode below may shrink it
    _note_frames(img, notes)
    if size is not None and img.format in ("JPEG", "MPO"):
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale: far less work when shrinking.
        longest = size if isinstance(size, int) else max(size)
        img.draft(img.mode if img.mode in ("L", "RGB") else None, (longest, longest))
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except MemoryError:
        raise
    except Exception as exc:
        problem = tiff_codec_problem(data) if img.format == "TIFF" else None
        raise BadImageError(label, problem or f"truncated or corrupt {img.format} data "
                                              f"({type(exc).__name__}: {exc})") from exc
    return img


def _note_frames(img: Image.Image, notes: list[str]) -> None:
    try:
        frames = int(getattr(img, "n_frames", 1))
    except Exception:  # counting frames reads the whole file; a broken later frame is no reason to refuse
        return
    if frames > 1:
        kind = "multipage TIFF" if img.format == "TIFF" else MULTI_FRAME_KINDS.get(img.format, f"{img.format} file")
        unit = "pages" if img.format == "TIFF" else "frames"
        notes.append(f"{kind} with {frames} {unit}: only the first is used")


def _check_pixels(wh: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = wh
    if width < 1 or height < 1:
        raise BadImageError(label, f"image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            label,
            f"{width} x {height} px is more than the limit of {max_pixels:,} pixels "
            "(a possible decompression bomb); if the image is genuine, downscale it first",
        )


def _to_channels(img: Image.Image, channels: int, label: str) -> Image.Image:
    """Any Pillow mode -> 8-bit 'L' (channels=1) or 'RGB' (channels=3); alpha dropped, never composited."""
    target = "L" if channels == 1 else "RGB"
    mode = img.mode
    if mode in DEEP_MODES:
        img = Image.fromarray(scale_to_uint8(np.asarray(img)))
    elif mode in ("1", "L", "RGB"):
        pass
    elif mode in ("LA", "La"):
        img = img.convert("LA").getchannel("L")  # La is premultiplied: LA undoes that first
    elif mode in ("RGBA", "RGBa", "RGBX"):
        img = img.convert("RGBA").convert("RGB")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB").convert("RGB")
    else:  # CMYK, YCbCr, LAB, HSV and anything newer: through RGB, the one target every mode converts to
        try:
            img = img.convert("RGB")
        except Exception as exc:
            raise BadImageError(label, f"colour mode {mode!r} cannot be converted to RGB by this Pillow "
                                       f"({exc}); save the image as 8-bit gray or RGB") from exc
    return img if img.mode == target else img.convert(target)


def scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map the array's own finite value range linearly onto 0-255 (constant or non-finite -> 0)."""
    out = np.empty(array.shape, np.uint8)
    min_max_into(out, row_blocks(array.shape), lambda rows: np.asarray(array[rows], dtype=np.float64))
    return out


def row_blocks(shape: tuple[int, ...]) -> list[slice]:
    """Slices of whole rows, about BLOCK_PIXELS pixels each (at least one row): every step from the decoded
    values to 0-255 maps each pixel on its own, so running it per block gives the same bytes as the whole
    image at once, and its float64 working copies are those of one block (a 7000 x 7000 16-bit image at
    once took 26-36 bytes per pixel)."""
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, BLOCK_PIXELS // per_row)
    return [slice(start, start + step) for start in range(0, shape[0], step)]


def min_max_into(out: np.ndarray, blocks: list[slice], values, invert: bool = False) -> None:
    """values(block) (float64) mapped onto 0..255 into out[block] by the finite range of all of them, found
    first in a pass over the blocks; constant or no finite value: 0 (255 when inverted)."""
    spans = [span for span in (finite_range(values(rows)) for rows in blocks) if span is not None]
    low = min((lo for lo, _ in spans), default=0.0)
    high = max((hi for _, hi in spans), default=0.0)
    if high <= low:
        out[...] = unit_to_uint8(np.ones(1) if invert else np.zeros(1))[0]
        return
    for rows in blocks:
        unit = range_unit(values(rows), low, high)
        out[rows] = unit_to_uint8(1.0 - unit if invert else unit)


def finite_range(array: np.ndarray) -> tuple[float, float] | None:
    """(lowest, highest) finite value of a float array, None when it has none; no copy of the array."""
    finite = np.isfinite(array)
    if not finite.any():
        return None
    return float(array.min(where=finite, initial=np.inf)), float(array.max(where=finite, initial=-np.inf))


def range_unit(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """low..high mapped linearly onto 0..1 (float64), non-finite values onto 0; high > low."""
    return (np.where(np.isfinite(array), array, low) - low) / (high - low)


def unit_to_uint8(unit: np.ndarray) -> np.ndarray:
    """0..1 -> 0..255, rounded to the nearest level; values outside are clipped."""
    return np.clip(np.rint(np.asarray(unit) * 255), 0, 255).astype(np.uint8)
