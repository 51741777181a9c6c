"""read_dicom: one DICOM file (bytes) -> an 8-bit 'L' or 'RGB' Pillow image, as a radiologist sees it.

The display pipeline of DICOM PS3.3 C.11, in order: decode the first frame
(compressed transfer syntaxes through pydicom's pixel handlers: pylibjpeg with
libjpeg for JPEG and JPEG-LS, openjpeg for JPEG 2000), Modality LUT or Rescale
Slope/Intercept, then the VOI LUT or Window Center/Width (when absent: the
pixels' own min-max range), then MONOCHROME1 inverted so that air is dark and
bone bright, like any PNG chest X-ray (and a Presentation LUT Shape of
INVERSE inverted likewise). Colour data (RGB, YBR, palette) comes out as RGB;
a palette is scaled by the range its entries really use. Every problem is a
BadImageError naming the file: objects that are not pictures (segmentations,
RT dose and structure sets, parametric maps, structured reports, presentation
states, waveforms, encapsulated PDF...) by their SOP class's name, malformed
numbers in the header by the attribute's name.

    notes = []
    img = read_dicom(Path("chest.dcm").read_bytes(), "chest.dcm", max_pixels=10**8, notes=notes)
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image

from ultrasonic.data.io import min_max_into, row_blocks, unit_to_uint8
from ultrasonic.errors import BadImageError, ImageTooLargeError


PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Group 0x0002 (file meta) or 0x0008 (identification) little-endian, or 0x0008 big-endian
# (explicit VR only): how a DICOM data set without the 128-byte preamble starts. No image
# format Pillow reads starts with these bytes.
RAW_DICOM_STARTS = (b"\x02\x00", b"\x08\x00")
BIG_ENDIAN_START = b"\x00\x08"
# Storage SOP classes that hold pictures although "Image Storage" is not in their name;
# every other SOP class pydicom knows by name is not a picture of a patient (see _check_is_picture).
PICTURE_CLASSES = frozenset({"Enhanced US Volume Storage", "Ophthalmic Thickness Map Storage",
                             "Corneal Topography Map Storage",
                             "Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage"})
# Header numbers every decoder relies on: keyword -> (words, smallest allowed, required)
HEADER_NUMBERS = {"Rows": ("Rows", 1, True), "Columns": ("Columns", 1, True),
                  "BitsAllocated": ("Bits Allocated", 1, True), "BitsStored": ("Bits Stored", 1, False),
                  "SamplesPerPixel": ("Samples per Pixel", 1, False),
                  "NumberOfFrames": ("Number of Frames", 1, False),
                  "PixelRepresentation": ("Pixel Representation", 0, False)}
# Encapsulated (compressed) transfer syntaxes fail with decoder-specific errors when cut short.
COMPRESSED_HINT = "truncated or corrupt compressed pixel data"
# Two-letter value representations, to tell an explicit-VR DICOM header from random bytes.
EXPLICIT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
                         b"TM UC UI UL UN UR US UT UV".split())


def read_dicom(data: bytes, label: str, max_pixels: int, notes: list[str] | None = None) -> Image.Image:
    """Decode the first frame of a DICOM image to an 8-bit 'L' or 'RGB' image; notes are appended to `notes`."""
    try:
        return _read_dicom(data, label, max_pixels, notes)
    except (BadImageError, MemoryError):
        raise
    except Exception as exc:  # a malformed header pydicom accepted and then trips over: still this file's error
        raise BadImageError(label, f"malformed DICOM file ({type(exc).__name__}: {_one_line(exc)}); "
                                   "export it again") from exc


def _read_dicom(data: bytes, label: str, max_pixels: int, notes: list[str] | None) -> Image.Image:
    ds = _parse(data, label)
    _check_is_picture(ds, label)
    if not any(k in ds for k in PIXEL_KEYWORDS):
        _refuse_without_pixels(_parse(data, label, stop_before_pixels=True), label)
    numbers = _header_numbers(ds, label)
    _check_size(numbers, label, max_pixels)
    frames = numbers.get("NumberOfFrames", 1)
    if frames > 1 and notes is not None:
        notes.append(f"DICOM with {frames} frames: only the first is used")
    frame = _decode_first_frame(ds, label)
    try:
        if ds.get("PhotometricInterpretation", "") == "PALETTE COLOR":
            return Image.fromarray(_palette_to_rgb(frame, ds, label), "RGB")
        if frame.ndim == 3:
            return Image.fromarray(_color_to_uint8(frame, numbers), "RGB")
        return Image.fromarray(_gray_to_uint8(frame, ds, label), "L")
    except (BadImageError, MemoryError):
        raise
    except Exception as exc:  # a header pydicom accepted but its display pipeline cannot use
        raise BadImageError(label, f"DICOM pixel values could not be mapped for display "
                                   f"({type(exc).__name__}: {_one_line(exc)})") from exc


def looks_like_dicom(data: bytes) -> bool:
    """True for DICOM: the 'DICM' preamble, or a bare data set (no preamble) with a plausible first tag."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if len(data) >= 8 and data[:2] == BIG_ENDIAN_START:
        return data[4:6] in EXPLICIT_VRS  # big endian exists only with explicit VR
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


def _parse(data: bytes, label: str, stop_before_pixels: bool = False):
    """The data set; a file without the preamble gets its transfer syntax from its encoding."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:  # pydicom warns about odd but readable headers: read_image keeps those warnings as notes
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble, stop_before_pixels=stop_before_pixels)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom raises many types for malformed files
        raise BadImageError(label, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _check_is_picture(ds, label: str) -> None:
    """Refuse a SOP class pydicom knows that is not an image (a mask, a dose grid, a report...), by its name."""
    uid = _sop_class(ds)
    if uid is None:
        return
    name = uid.name
    if name == str(uid) or "Image Storage" in name or name in PICTURE_CLASSES or uid.type != "SOP Class":
        return  # unknown or private: judged by its pixel data
    raise BadImageError(label, f"DICOM {name} object ({uid}) is not an image, nothing to classify; "
                               "give the image files it refers to instead")


def _sop_class(ds):
    """The SOP class UID from the data set, else from the file meta (which survives a cut header)."""
    from pydicom.uid import UID

    sop = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    return UID(str(sop)) if sop else None


def _refuse_without_pixels(header, label: str) -> None:
    """No pixel data: a truncated image (pydicom drops the whole data set when encapsulated pixel data
    ends early, so the header is read again without the pixels) or an object without pixels."""
    _check_is_picture(header, label)
    sop = _sop_class(header)
    if "Rows" in header or "BitsAllocated" in header or (sop is not None and "Image Storage" in sop.name):
        what = COMPRESSED_HINT if _is_compressed(header.file_meta.TransferSyntaxUID) else "truncated file"
        raise BadImageError(label, f"{what}: the DICOM header describes an image but its pixel data is "
                                   "missing or cut short; copy or export the file again")
    raise BadImageError(label, "DICOM file has no pixel data: it holds no image "
                               "(a report, DICOMDIR or presentation state?); give the image file instead")


def _header_numbers(ds, label: str) -> dict[str, int]:
    """The image attributes as whole numbers; a missing, non-numeric or fractional one is refused by name."""
    numbers = {}
    for keyword, (words, low, required) in HEADER_NUMBERS.items():
        raw = _raw_value(ds, keyword)
        if raw is None or raw == "":
            if required:
                raise BadImageError(label, f"DICOM image has no {words} ({keyword}) in its header; "
                                           "the file is malformed: export it again")
            continue
        numbers[keyword] = _whole_number(raw, words, low, label)
    bits = numbers["BitsAllocated"]
    if bits != 1 and (bits % 8 or bits > 64):
        raise BadImageError(label, f"DICOM Bits Allocated is {bits}, not 1 or a multiple of 8 up to 64; "
                                   "the header is malformed: export the file again")
    return numbers


def _raw_value(ds, keyword: str):
    try:
        value = ds[keyword].value if keyword in ds else None
    except Exception:  # pydicom converts on access: an unconvertible value is read as it is stored
        value = ds.get_item(keyword).value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip(" \x00")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    return value


def _whole_number(raw, words: str, low: int, label: str) -> int:
    try:
        number = float(str(raw).strip())
    except ValueError:
        number = float("nan")
    if not (number == number and number.is_integer() and number >= low):
        raise BadImageError(label, f"DICOM {words} is {str(raw)!r}, not a whole number of at least {low}; "
                                   "the header is malformed: export the file again")
    return int(number)


def _check_size(numbers: dict[str, int], label: str, max_pixels: int) -> None:
    """Refuse a decompression bomb from the header, before any pixel is decoded."""
    rows, cols = numbers["Rows"], numbers["Columns"]
    if rows * cols > max_pixels:
        raise ImageTooLargeError(label, f"{cols} x {rows} px is more than the limit of {max_pixels:,} pixels "
                                   "(a possible decompression bomb); raise max_pixels if the image is genuine")


def _decode_first_frame(ds, label: str) -> np.ndarray:
    """Decode only frame 0 (RGB for colour); an unsupported transfer syntax names its UID."""
    from pydicom.pixels import get_decoder, pixel_array

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
    try:
        return np.asarray(pixel_array(ds, index=0))  # YBR comes back as RGB
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise many types for corrupt or truncated data
        what = f"{COMPRESSED_HINT}: " if _is_compressed(uid) else ""
        raise BadImageError(label, f"{what}DICOM pixel data could not be decoded with {syntax} "
                                   f"({type(exc).__name__}: {_one_line(exc)})") from exc


def _is_compressed(uid) -> bool:
    try:
        return bool(uid.is_compressed)
    except ValueError:  # not a transfer syntax at all
        return False


def _little_endian(ds) -> bool:
    """The byte order the data set was read in (the transfer syntax's when pydicom did not say)."""
    little = ds.original_encoding[1]
    if little is None:
        try:
            little = ds.file_meta.TransferSyntaxUID.is_little_endian
        except ValueError:
            little = True
    return bool(little)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # decoders report one line per plugin: keep the error on one line


def _gray_to_uint8(frame: np.ndarray, ds, label: str) -> np.ndarray:
    """Modality LUT -> VOI LUT / window (else min-max) -> 0..1 -> MONOCHROME1 inverted -> 0..255.

    Every step maps each pixel on its own, so it runs on blocks of rows (io.row_blocks) written into one
    uint8 image: the same bytes as the whole frame at once, with float64 copies of one block only (on the
    whole 7000 x 7000 frame: 26-36 B/px, 1.2-1.7 GB). Without a window, the range is found in a first pass.
    """
    from pydicom.pixels import apply_modality_lut

    out = np.empty(frame.shape, np.uint8)
    invert = _inverted(ds)
    if not _voi_into(out, frame, ds, invert):
        min_max_into(out, row_blocks(frame.shape), invert=invert,
                     values=lambda rows: np.asarray(apply_modality_lut(frame[rows], ds), dtype=np.float64))
    return out


def _display(unit: np.ndarray, invert: bool) -> np.ndarray:
    return unit_to_uint8(1.0 - unit if invert else unit)


def _inverted(ds) -> bool:
    """MONOCHROME1 (the lowest value is white), or a Presentation LUT Shape of INVERSE (PS3.3 C.11.6).

    The standard pairs INVERSE with MONOCHROME1 and IDENTITY with MONOCHROME2;
    both say to invert once, so either one inverts and the two together do not
    invert twice.
    """
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    return ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1" or shape == "INVERSE"


def _voi_into(out: np.ndarray, frame: np.ndarray, ds, invert: bool) -> bool:
    """The VOI LUT or window, block by block, into `out`; False when the file has neither (or a broken one).

    pydicom returns the VOI output in a range that depends on bit depth, rescale
    and LUT descriptor. A window is monotonic and clips at both ends, so the two
    extremes passed through it give that range; a LUT's range is that of its entries.
    """
    from pydicom.pixels import apply_modality_lut

    if not (ds.get("VOILUTSequence") or ("WindowCenter" in ds and "WindowWidth" in ds)):
        return False
    span = _voi(ds, lambda: _voi_probe(ds))
    if span is None or not span.max() > span.min():
        return False
    low, high = span.min(), span.max()
    for rows in row_blocks(frame.shape):
        values = apply_modality_lut(frame[rows], ds)
        mapped = _voi(ds, lambda: _voi_index(values, ds))
        if mapped is None:
            return False
        out[rows] = _display((mapped - low) / (high - low), invert)
    return True


def _voi(ds, inputs) -> np.ndarray | None:
    """apply_voi_lut on inputs() as float64; None (and a warning) when the header's VOI cannot be used."""
    from pydicom.pixels import apply_voi_lut

    try:
        return np.asarray(apply_voi_lut(inputs(), ds, index=0), dtype=np.float64)
    except MemoryError:
        raise
    except Exception as exc:  # e.g. window width 0, a LUT of unsupported depth: the data is still usable
        # a warning, so that read_image keeps it as a note about this file (data/notes.py)
        warnings.warn(f"ignoring the DICOM VOI LUT/window ({_one_line(exc)}); using the pixel range", stacklevel=3)
        return None


def _voi_probe(ds) -> np.ndarray:
    """Inputs whose VOI output spans its whole range: a window's two extremes, or every entry of a LUT."""
    if not ds.get("VOILUTSequence"):
        return np.array([-1e30, 1e30])
    entries, first = _lut_span(ds)
    return np.arange(first, first + entries, dtype=np.int64)


def _voi_index(values: np.ndarray, ds) -> np.ndarray:
    """A LUT is indexed by whole values within its span (PS3.3 C.11.2.1.1); a window takes the values."""
    if not ds.get("VOILUTSequence"):
        return values
    entries, first = _lut_span(ds)
    return np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)


def _lut_span(ds) -> tuple[int, int]:
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    return int(descriptor[0]) or 2 ** 16, int(descriptor[1])


def _color_to_uint8(frame: np.ndarray, numbers: dict[str, int]) -> np.ndarray:
    """RGB of any bit depth (pydicom already converted YBR to RGB) -> 8-bit."""
    if frame.dtype == np.uint8:
        return frame
    bits = numbers.get("BitsStored", numbers["BitsAllocated"])
    return unit_to_uint8(frame.astype(np.float64) / (2 ** bits - 1))


def _palette_to_rgb(frame: np.ndarray, ds, label: str) -> np.ndarray:
    """Through the palette, read in the file's byte order and scaled by the range its entries use.

    pydicom (3.0) reads plain 16-bit palette tables as little-endian whatever the
    file says, so a big-endian file comes out byte-swapped (colours in the high
    byte turn almost black); here the tables are read in the file's own order.
    The descriptor says 16 bits per entry, but writers put 8-bit colours (0-255)
    into 16-bit tables often enough: the largest entry tells which it is.
    """
    try:
        luts = _palette_tables(ds)
        if luts is None:  # segmented tables: pydicom expands those in the right byte order
            from pydicom.pixels import apply_color_lut

            rgb = apply_color_lut(frame, ds)[..., :3]
        else:
            first = int(ds.RedPaletteColorLookupTableDescriptor[1])
            index = np.clip(frame.astype(np.int64) - first, 0, len(luts[0]) - 1)
            rgb = np.stack([lut[index] for lut in luts], axis=-1)
    except MemoryError:
        raise
    except Exception as exc:
        raise BadImageError(label, f"DICOM palette colour lookup table is unusable ({_one_line(exc)})") from exc
    top = 255 if rgb.dtype == np.uint8 or int(rgb.max(initial=0)) <= 255 else 65535
    return unit_to_uint8(rgb.astype(np.float64) / top)


def _palette_tables(ds) -> list[np.ndarray] | None:
    """The red, green and blue tables as integers (None for segmented tables)."""
    if "RedPaletteColorLookupTableData" not in ds:
        return None
    entries = int(ds.RedPaletteColorLookupTableDescriptor[0]) or 2 ** 16
    order = "<" if _little_endian(ds) else ">"
    luts = []
    for colour in ("Red", "Green", "Blue"):
        raw = bytes(ds[f"{colour}PaletteColorLookupTableData"].value)
        width = 2 if len(raw) >= 2 * entries else 1
        luts.append(np.frombuffer(raw[: entries * width], dtype=f"{order}u{width}").astype(np.int64))
    if len({len(lut) for lut in luts}) != 1 or not len(luts[0]):
        raise ValueError("the red, green and blue tables differ in length or are empty")
    return luts
