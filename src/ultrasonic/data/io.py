"""read_image: the one strict decoder every command uses (train, evaluate, predict, serve).

Bytes in, uint8 H x W x C out, at the requested size and channel count. The
format is sniffed from the content, never trusted from the file name. Any
problem becomes a BadImageError naming the file and what is wrong.

    x = read_image("chest.jpeg", size=224, channels=1)   # (224, 224, 1) uint8
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ultrasonic.errors import BadImageError, ImageTooLargeError

# Formats Pillow may decode; anything else is refused before a decoder runs.
# No "MPO": Pillow opens MPO through JPEG's factory and has no OPEN entry for it,
# so naming it raises KeyError for every format listed after it.
PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM")
# 20000 x 20000 grey fits (400 MB); beyond this is treated as a decompression bomb.
MAX_PIXELS = 500_000_000

# We check the pixel count ourselves (MAX_PIXELS, per call), so Pillow's global
# guard would only add a second, different limit.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

Source = str | os.PathLike | bytes


def read_image(
    source: Source,
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode one image to uint8 (H, W, channels), resized to `size` if given.

    `size` is an int (square) or (height, width). EXIF orientation is applied,
    16-bit and float data are scaled to 0-255 by their own range, alpha is
    dropped, palettes are expanded. DICOM is recognised by its preamble.
    """
    label = name or (os.fspath(source) if not isinstance(source, bytes) else "<bytes>")
    _check_channels(channels)
    try:
        return _decode(_read_bytes(source, label), label, size, channels, max_pixels)
    except MemoryError as exc:  # the machine's problem, not the file's: never reported as a bad image
        raise MemoryError(f"out of memory while decoding {label}") from exc


def _decode(data: bytes, label: str, size, channels: int, max_pixels: int) -> np.ndarray:
    if _is_dicom(data):
        img = _read_dicom(data, label, max_pixels)
    else:
        img = _open_pil(data, label, max_pixels, size)
    img = _to_channels(img, channels)
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


def _read_dicom(data: bytes, label: str, max_pixels: int) -> Image.Image:
    try:
        from ultrasonic.data.dicom import read_dicom
    except ImportError as exc:
        raise BadImageError(label, "is DICOM, which this installation cannot read yet") from exc
    return read_dicom(data, label, max_pixels)


def _open_pil(data: bytes, label: str, max_pixels: int, size) -> Image.Image:
    """Open, check the pixel count before decoding, then decode fully."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError as exc:
        raise BadImageError(label, "not a recognised image (PNG, JPEG, BMP, TIFF or DICOM)") from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise BadImageError(label, f"unreadable image header ({exc})") from exc
    _check_pixels(img.size, label, max_pixels)
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
        raise BadImageError(label, f"truncated or corrupt {img.format} data ({exc})") from exc
    return img


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


def _to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to 8-bit 'L' (channels=1) or 'RGB' (channels=3)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = Image.fromarray(scale_to_uint8(np.asarray(img)))
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert(img.mode[0] if img.mode[0] == "L" else "RGB")  # drop alpha
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map the array's own value range linearly onto 0-255 (constant -> 0)."""
    return unit_to_uint8(min_max_unit(array))


def min_max_unit(array: np.ndarray) -> np.ndarray:
    """The array's own finite value range mapped linearly onto 0..1 (float64); constant or non-finite -> 0."""
    array = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros(array.shape)
    low, high = array[finite].min(), array[finite].max()
    if high <= low:
        return np.zeros(array.shape)
    return (np.where(finite, array, low) - low) / (high - low)


def unit_to_uint8(unit: np.ndarray) -> np.ndarray:
    """0..1 -> 0..255, rounded to the nearest level; values outside are clipped."""
    return np.clip(np.rint(np.asarray(unit) * 255), 0, 255).astype(np.uint8)
