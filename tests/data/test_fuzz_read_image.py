"""Fuzz read_image: random bytes and mutated valid files give a uint8 image or a BadImageError, nothing else.

read_image is what `train`, `predict` and the service run on bytes they did
not make; any other exception (ValueError, OSError, struct.error, ...) would
reach a user as a traceback or the service as a 500. Bounded for CI:
FUZZ_EXAMPLES examples per test, no deadline (a mutated header may make
Pillow allocate a big image before the data runs out).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ultrasonic.data.io import read_image
from ultrasonic.errors import BadImageError

FUZZ_EXAMPLES = int(os.environ.get("ULTRASONIC_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def dicom_bytes() -> bytes | None:
    """A small valid 16-bit DICOM image, or None without pydicom."""
    try:
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:
        return None
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "CR", "MONOCHROME2"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 24, 24, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(24 * 24, dtype=np.uint16) * 7).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def seeds() -> dict[str, bytes]:
    """One small valid file per format and odd mode: what the mutations start from (24 px: min_image_side)."""
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8))
    rgb = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    deep = Image.fromarray((rng.integers(0, 4096, (24, 24))).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "png_gray": encode(gray, "PNG"), "png_rgb": encode(rgb, "PNG"), "png_16": encode(deep, "PNG"),
        "png_palette": encode(rgb.convert("P"), "PNG"), "png_rgba": encode(rgb.convert("RGBA"), "PNG"),
        "jpeg": encode(rgb, "JPEG", quality=90), "jpeg_exif": encode(gray, "JPEG", exif=exif),
        "jpeg_cmyk": encode(rgb.convert("CMYK"), "JPEG"), "jpeg_progressive": encode(rgb, "JPEG", progressive=True),
        "bmp": encode(rgb, "BMP"), "bmp_gray": encode(gray, "BMP"),
        "tiff": encode(rgb, "TIFF"), "tiff_16": encode(deep, "TIFF"),
        "tiff_deflate": encode(gray, "TIFF", compression="tiff_adobe_deflate"),
        # read_image also lets Pillow open these (see io.PIL_FORMATS), so they are attack surface too
        "gif": encode(rgb.convert("P"), "GIF"), "webp": encode(rgb, "WEBP"), "ppm": encode(rgb, "PPM"),
    }
    dicom = dicom_bytes()
    if dicom is not None:
        files["dicom"] = dicom
    return files


SEEDS = seeds()


@st.composite
def mutated(draw) -> bytes:
    """A valid file with some bytes flipped, a run overwritten, a cut or an insertion, in its header or body."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        how = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "header"]))
        at = draw(st.integers(0, len(data) - 1))
        if how == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif how == "overwrite":
            run = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(run)] = run
        elif how == "truncate":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # the first 200 bytes hold sizes, modes and offsets: the likeliest to trip a decoder
            data[draw(st.integers(0, min(199, len(data) - 1)))] = draw(st.integers(0, 255))
    return bytes(data)


def check(data: bytes, size, channels: int) -> None:
    """The property: an image of the asked shape, or BadImageError (any other exception fails the test)."""
    try:
        image = read_image(data, size=size, channels=channels, name="fuzz.bin")
    except BadImageError as exc:
        assert str(exc).startswith("fuzz.bin: ") and exc.problem
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == channels
    if size is not None:
        assert image.shape[:2] == (size, size)


@FUZZ
@given(data=mutated(), size=st.sampled_from([None, 16]), channels=st.sampled_from([1, 3]))
def test_mutated_valid_files_give_an_image_or_bad_image_error(data, size, channels):
    check(data, size, channels)


@FUZZ
@given(data=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff",
                                                               b"BM", b"II*\x00", b"MM\x00*", b"\x00" * 128 + b"DICM"]),
       channels=st.sampled_from([1, 3]))
def test_random_bytes_give_bad_image_error(data, prefix, channels):
    check(prefix + data, 16, channels)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_is_a_valid_image(name):
    """The mutations start from files that read; otherwise the fuzz would only test the error path."""
    assert read_image(SEEDS[name], size=16, channels=3).shape == (16, 16, 3)
