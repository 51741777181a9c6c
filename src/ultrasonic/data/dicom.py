"""read_dicom: one DICOM file (bytes) -> an 8-bit 'L' or 'RGB' Pillow image, as a radiologist sees it.

The display pipeline of DICOM PS3.3 C.11, in order: decode the first frame
(compressed transfer syntaxes through pydicom's pixel handlers: pylibjpeg with
libjpeg for JPEG and JPEG-LS, openjpeg for JPEG 2000), Modality LUT or Rescale
Slope/Intercept, then the VOI LUT or Window Center/Width (when absent: the
pixels' own min-max range), then MONOCHROME1 inverted so that air is dark and
bone bright, like any PNG chest X-ray. Colour data (RGB, YBR, palette) comes
out as RGB. Every problem is a BadImageError naming the file.

    img = read_dicom(Path("chest.dcm").read_bytes(), "chest.dcm", max_pixels=10**8)
"""

from __future__ import annotations

import io
import logging
import os
import warnings

import numpy as np
from PIL import Image

from ultrasonic.data.io import min_max_unit, unit_to_uint8
from ultrasonic.errors import BadImageError, ImageTooLargeError

log = logging.getLogger("ultrasonic")

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Group 0x0002 (file meta) or 0x0008 (identification) little-endian: how a DICOM data set
# without the 128-byte preamble starts. No image format Pillow reads starts with these bytes.
RAW_DICOM_STARTS = (b"\x02\x00", b"\x08\x00")
# Two-letter value representations, to tell an explicit-VR DICOM header from random bytes.
EXPLICIT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
                         b"TM UC UI UL UN UR US UT UV".split())


def read_dicom(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Decode the first frame of a DICOM file to an 8-bit 'L' or 'RGB' image."""
    ds = _parse(data, label)
    _check_has_pixels(ds, label)
    _check_size(ds, label, max_pixels)
    frame = _decode_first_frame(ds, label)
    if ds.get("PhotometricInterpretation", "") == "PALETTE COLOR":
        return Image.fromarray(_palette_to_rgb(frame, ds, label), "RGB")
    if frame.ndim == 3:
        return Image.fromarray(_color_to_uint8(frame, ds), "RGB")
    return Image.fromarray(_gray_to_uint8(frame, ds, label), "L")


def looks_like_dicom(data: bytes) -> bool:
    """True for DICOM: the 'DICM' preamble, or a bare data set (no preamble) with a plausible first tag."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if len(data) < 8 or data[:2] not in RAW_DICOM_STARTS:
        return False
    # explicit VR: a known two-letter VR after the tag; implicit VR: a 4-byte length that fits the file
    return data[4:6] in EXPLICIT_VRS or int.from_bytes(data[4:8], "little") < len(data)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file's first bytes say DICOM (for names without a suffix)."""
    try:
        with open(path, "rb") as f:
            return looks_like_dicom(f.read(132))
    except OSError:
        return False


def _parse(data: bytes, label: str):
    """The data set; a file without the preamble gets its transfer syntax from its encoding."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about odd but readable headers
            ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom raises many types for malformed files
        raise BadImageError(label, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _check_has_pixels(ds, label: str) -> None:
    if not any(k in ds for k in PIXEL_KEYWORDS):
        sop = ds.get("SOPClassUID")
        kind = f" ({sop.name})" if sop else ""
        raise BadImageError(label, f"DICOM file has no pixel data{kind}: it holds no image "
                                   "(a report, DICOMDIR or presentation state?); give the image file instead")


def _check_size(ds, label: str, max_pixels: int) -> None:
    """Refuse a decompression bomb from the header, before any pixel is decoded."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise BadImageError(label, f"DICOM image has no pixels (Rows {rows}, Columns {cols})")
    if rows * cols > max_pixels:
        raise ImageTooLargeError(label, f"{cols} x {rows} px is more than the limit of {max_pixels:,} pixels "
                                   "(a possible decompression bomb); raise max_pixels if the image is genuine")


def _decode_first_frame(ds, label: str) -> np.ndarray:
    """Decode only frame 0 (RGB for colour); an unsupported transfer syntax names its UID."""
    from pydicom.pixels import get_decoder, pixel_array
    from pydicom.pixels.utils import get_nr_frames

    uid = ds.file_meta.TransferSyntaxUID
    syntax = f"transfer syntax {uid} ({uid.name})" if uid.name != str(uid) else f"transfer syntax {uid}"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise BadImageError(label, f"{syntax} is not supported by pydicom; convert the file to an "
                                   "uncompressed transfer syntax (e.g. `gdcmconv --raw`)") from exc
    if not decoder.is_available:
        raise BadImageError(label, f"{syntax} needs a decoder that is not installed "
                                   f"({'; '.join(decoder.missing_dependencies)}); install it or convert "
                                   "the file to an uncompressed transfer syntax")
    frames = get_nr_frames(ds, warn=False)
    if frames > 1:
        log.info("%s: DICOM with %d frames; using the first", label, frames)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(pixel_array(ds, index=0))  # YBR comes back as RGB
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise many types for corrupt or truncated data
        detail = " ".join(str(exc).split())  # decoders report one line per plugin: keep the error on one line
        raise BadImageError(label, f"DICOM pixel data could not be decoded with {syntax} "
                                   f"({type(exc).__name__}: {detail})") from exc


def _gray_to_uint8(frame: np.ndarray, ds, label: str) -> np.ndarray:
    """Modality LUT -> VOI LUT / window (else min-max) -> 0..1 -> MONOCHROME1 inverted -> 0..255."""
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(frame, ds)
    unit = _apply_voi(values, ds, label)
    if unit is None:
        unit = min_max_unit(values)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        unit = 1.0 - unit  # MONOCHROME1: the lowest value is white
    return unit_to_uint8(unit)


def _apply_voi(values: np.ndarray, ds, label: str) -> np.ndarray | None:
    """The VOI LUT or window mapped onto 0..1, or None when the file has neither (or a broken one).

    pydicom returns the VOI output in a range that depends on bit depth, rescale
    and LUT descriptor. A window is monotonic and clips at both ends, so the two
    extremes passed through it give that range; a LUT's range is that of its entries.
    """
    from pydicom.pixels import apply_voi_lut

    if not (ds.get("VOILUTSequence") or ("WindowCenter" in ds and "WindowWidth" in ds)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values, probe = _voi_inputs(values, ds)
            out = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
            span = np.asarray(apply_voi_lut(probe, ds, index=0), dtype=np.float64)
    except MemoryError:
        raise
    except Exception as exc:  # e.g. window width 0, a LUT of unsupported depth: the data is still usable
        log.warning("%s: ignoring the DICOM VOI LUT/window (%s); using the pixel range", label, exc)
        return None
    low, high = span.min(), span.max()
    return (out - low) / (high - low) if high > low else None


def _voi_inputs(values: np.ndarray, ds) -> tuple[np.ndarray, np.ndarray]:
    """(values, probe): a LUT is indexed by whole values within its span (PS3.3 C.11.2.1.1)."""
    if not ds.get("VOILUTSequence"):
        return values, np.array([-1e30, 1e30])
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries, first = int(descriptor[0]) or 2 ** 16, int(descriptor[1])
    values = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
    return values, np.arange(first, first + entries, dtype=np.int64)


def _color_to_uint8(frame: np.ndarray, ds) -> np.ndarray:
    """RGB of any bit depth (pydicom already converted YBR to RGB) -> 8-bit."""
    if frame.dtype == np.uint8:
        return frame
    bits = int(ds.get("BitsStored", 8) or 8)
    return unit_to_uint8(frame.astype(np.float64) / (2 ** bits - 1))


def _palette_to_rgb(frame: np.ndarray, ds, label: str) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(frame, ds)
    except MemoryError:
        raise
    except Exception as exc:
        raise BadImageError(label, f"DICOM palette colour lookup table is unusable ({exc})") from exc
    top = np.iinfo(rgb.dtype).max if np.issubdtype(rgb.dtype, np.integer) else 1.0
    return unit_to_uint8(rgb / top)

