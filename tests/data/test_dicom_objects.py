"""DICOM that is not a picture, malformed headers, palette colour, Presentation LUT Shape, truncations and
big-endian files: each written here with pydicom (no stored files) and read through read_image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (UID, UID_dictionary, ExplicitVRBigEndian, ExplicitVRLittleEndian, JPEG2000Lossless,
                         RLELossless, generate_uid)

from ultrasonic.data.dicom import looks_like_dicom
from ultrasonic.data.io import read_image, read_image_with_notes
from ultrasonic.errors import BadImageError
from shared_data import SHARED_DATA
from test_dicom import _dataset, make_dicom, ramp16

CT = "1.2.840.10008.5.1.4.1.1.2"
US = "1.2.840.10008.5.1.4.1.1.6.1"


def dicom_of_class(sop: str, pixels: bool = True) -> bytes:
    """A minimal file of SOP class `sop`, with a 32 x 32 16-bit image or without pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, "OT"
    if pixels:
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (np.arange(32 * 32, dtype=np.uint16) * 50).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def save(ds, **kwargs) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, **kwargs)
    return buffer.getvalue()


# --- objects that are not pictures ------------------------------------------------------------------

NOT_PICTURES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA Storage",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data Storage",
    "1.2.840.10008.5.1.4.1.1.66.1": "Spatial Registration Storage",
}


@pytest.mark.parametrize("sop", list(NOT_PICTURES), ids=list(NOT_PICTURES.values()))
def test_an_object_that_is_not_a_picture_is_refused_by_its_sop_class_name(sop):
    """With pixel data (a mask, a dose grid) or without (a report): never classified."""
    for pixels in (True, False):
        with pytest.raises(BadImageError, match=rf"^obj\.dcm: DICOM {NOT_PICTURES[sop]} object \({sop}\) "
                                                r"is not an image"):
            read_image(dicom_of_class(sop, pixels), name="obj.dcm", channels=1)


def test_every_structured_report_waveform_presentation_state_and_encapsulated_class_is_refused():
    families = ("SR Storage", "Waveform", "Presentation State", "Encapsulated", "RT Plan", "Segmentation")
    classes = [uid for uid, (name, kind, *_) in UID_dictionary.items()
               if kind == "SOP Class" and any(f in name for f in families)]
    assert len(classes) >= 50
    for uid in classes:
        with pytest.raises(BadImageError, match=f"{UID(uid).name}.* is not an image"):
            read_image(dicom_of_class(uid, pixels=False))


@pytest.mark.parametrize("sop", [CT, US, "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.6.2",
                                 "1.2.3.4.5.6.7.8.9"])  # CT, US, Secondary Capture, Enhanced US Volume, private
def test_image_classes_and_unknown_ones_are_read(sop):
    assert read_image(dicom_of_class(sop), channels=1).shape == (32, 32, 1)


# --- malformed numbers -------------------------------------------------------------------------------


def with_element(keyword_tag: int, vr: str, raw: str | None) -> bytes:
    ds = _dataset(make_dicom(ramp16()))
    if raw is None:
        del ds[keyword_tag]
    else:
        ds.add_new(keyword_tag, vr, None)
        ds[keyword_tag]._value = raw  # stored as given: what a broken writer leaves
    return save(ds)


@pytest.mark.parametrize("tag, vr, raw, words", [
    (0x00280008, "IS", "abc", "Number of Frames is 'abc', not a whole number"),
    (0x00280008, "IS", "1.5", "Number of Frames is '1.5', not a whole number"),
    (0x00280008, "IS", "-2", "Number of Frames is '-2', not a whole number of at least 1"),
    (0x00280010, "US", None, "has no Rows (Rows)"),
    (0x00280011, "US", None, "has no Columns (Columns)"),
    (0x00280100, "US", 12, "Bits Allocated is 12, not 1 or a multiple of 8"),
    (0x00280100, "US", 7, "Bits Allocated is 7, not 1 or a multiple of 8"),
])
def test_malformed_header_numbers_are_a_clear_error_naming_the_attribute(tag, vr, raw, words):
    with pytest.raises(BadImageError, match="^bad.dcm: DICOM ") as info:
        read_image(with_element(tag, vr, raw), name="bad.dcm")
    assert words in str(info.value)


# --- palette colour ------------------------------------------------------------------------------------


COLOURS = np.array([[0, 0, 0], [200, 40, 10], [30, 160, 250], [255, 255, 255]])


def palette_dicom(big_endian: bool, scale: int) -> bytes:
    """A 32 x 32 palette ultrasound: indices 0..3 in four bands, 16-bit LUT descriptors, 256 entries whose
    values are the 8-bit colours times `scale`: as they are (1: 0-255), in the high byte (256), or
    stretched to 16 bits (257: 0-65535)."""
    indices = np.repeat(np.arange(4, dtype=np.uint8), 8)[None, :].repeat(32, 0)
    order = ">u2" if big_endian else "<u2"
    ds = _dataset(make_dicom(indices, photometric="PALETTE COLOR"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US
    for c, colour in enumerate(("Red", "Green", "Blue")):
        table = np.zeros(256, dtype=np.int64)
        table[:4] = COLOURS[:, c] * scale
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.astype(order).tobytes())
        ds[f"{colour}PaletteColorLookupTableData"].VR = "OW"
    if not big_endian:
        return save(ds)
    import pydicom

    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, little_endian=False, implicit_vr=False, force_encoding=True)
    return buffer.getvalue()


@pytest.mark.parametrize("big_endian", [False, True], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("scale", [1, 256, 257], ids=["entries 0-255", "high byte", "entries 0-65535"])
def test_palette_colour_is_read_in_the_files_byte_order_and_scaled_by_its_entries(big_endian, scale):
    out = read_image(palette_dicom(big_endian, scale), channels=3)
    bands = out[:, 4::8].mean(axis=0)  # the middle column of each band
    assert np.abs(bands - COLOURS).max() <= (1 if scale == 256 else 0), bands  # 256 * x / 65535: x - 0.4 %


# --- Presentation LUT Shape ------------------------------------------------------------------------------


def test_presentation_lut_shape_inverse_inverts_and_identity_does_not():
    plain = read_image(make_dicom(ramp16()), channels=1)[0, :, 0].astype(int)
    inverse = read_image(make_dicom(ramp16(), PresentationLUTShape="INVERSE"), channels=1)[0, :, 0].astype(int)
    identity = read_image(make_dicom(ramp16(), PresentationLUTShape="IDENTITY"), channels=1)[0, :, 0]
    assert plain[0] == 0 and plain[-1] == 255
    assert np.abs(inverse - (255 - plain)).max() <= 1
    assert np.array_equal(identity, plain)
    # MONOCHROME1 with INVERSE (the pairing the standard asks for) is inverted once, not twice
    mono1 = read_image(make_dicom(ramp16(), photometric="MONOCHROME1", PresentationLUTShape="INVERSE"), channels=1)
    assert np.abs(mono1[0, :, 0].astype(int) - (255 - plain)).max() <= 1


# --- truncations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless], ids=["JPEG 2000", "RLE"])
@pytest.mark.parametrize("fraction", [0.85, 0.95, 0.99])
def test_a_truncated_compressed_dicom_says_truncated_not_no_pixel_data(syntax, fraction):
    ds = _dataset(make_dicom(np.tile(np.arange(0, 64 * 40, 40, dtype=np.uint16), (64, 1))))
    try:
        ds.compress(syntax)
    except Exception as exc:  # pragma: no cover - an encoder plugin missing
        pytest.skip(f"pydicom cannot encode {syntax.name} here: {exc}")
    data = save(ds)
    assert read_image(data, channels=1).shape == (64, 64, 1)
    with pytest.raises(BadImageError, match="^cut.dcm: truncated or corrupt compressed pixel data") as info:
        read_image(data[:int(len(data) * fraction)], name="cut.dcm")
    assert "a report, DICOMDIR" not in str(info.value)


def test_the_real_jpeg_2000_chest_cut_short_says_truncated():
    path = SHARED_DATA / "dicom" / "RG1_J2KI.dcm"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    data = path.read_bytes()
    for fraction in (0.5, 0.9):
        with pytest.raises(BadImageError, match="truncated or corrupt compressed pixel data"):
            read_image(data[:int(len(data) * fraction)])


def test_corrupt_compressed_frames_say_so_and_name_the_transfer_syntax():
    from pydicom.encaps import encapsulate

    ds = _dataset(make_dicom(ramp16()))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    with pytest.raises(BadImageError, match=r"truncated or corrupt compressed pixel data: DICOM pixel data could "
                                            r"not be decoded with transfer syntax 1\.2\.840\.10008\.1\.2\.4\.90"):
        read_image(save(ds))


# --- big endian, notes ----------------------------------------------------------------------------------------


def big_endian_without_meta() -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    source = _dataset(make_dicom(ramp16()))
    ds = Dataset()
    for element in source:
        ds.add(element)
    ds.PixelData = ramp16().astype(">u2").tobytes()
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = False, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_a_big_endian_dicom_without_file_meta_is_recognised_and_read():
    data = big_endian_without_meta()
    assert data[:2] == b"\x00\x08" and looks_like_dicom(data)
    expected = read_image(make_dicom(ramp16()), channels=1)
    assert np.array_equal(read_image(data, channels=1), expected)


def test_a_broken_window_becomes_a_note_about_the_file():
    data = make_dicom(ramp16(), WindowCenter=500, WindowWidth=0)  # width 0: no window at all
    decoded = read_image_with_notes(data, channels=1, name="w.dcm")
    assert decoded.image[0, 0, 0] == 0 and decoded.image[0, -1, 0] == 255  # the pixel range instead
    assert len(decoded.notes) == 1 and decoded.notes[0].startswith("decoder warning: ignoring the DICOM VOI")


def test_a_transfer_syntax_uid_that_is_no_transfer_syntax_is_a_bad_image_not_a_value_error():
    """Found by the fuzz test: a SOP class UID where the transfer syntax belongs, the file cut short."""
    data = make_dicom(ramp16())
    assert data.count(b"1.2.840.10008.1.2.1\x00") == 1
    data = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.5.1.4\x00")  # same length, not a syntax
    for cut in (len(data), len(data) // 2, 300):
        with pytest.raises(BadImageError, match="^odd.dcm: "):
            read_image(data[:cut], name="odd.dcm")
