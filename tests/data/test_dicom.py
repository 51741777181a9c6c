"""DICOM input: the display pipeline (rescale, window, MONOCHROME1) on synthetic files made with pydicom,
and every real file in ../shared/data/dicom/ (pydicom's test data), the chest CR above all."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000, SecondaryCaptureImageStorage, generate_uid

from ultrasonic.data.dicom import looks_like_dicom
from ultrasonic.data.io import read_image, read_image_with_notes
from ultrasonic.errors import BadImageError, UnusableImageError
from shared_data import SHARED_DATA

DICOM_DIR = SHARED_DATA / "dicom"
REAL = sorted(DICOM_DIR.glob("*.dcm")) if DICOM_DIR.is_dir() else []
needs_real = pytest.mark.skipif(not REAL, reason=f"real DICOM files not found in {DICOM_DIR}")


def make_dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", preamble: bool = True,
               transfer_syntax=ExplicitVRLittleEndian, **elements) -> bytes:
    """A minimal single-frame DICOM file (bytes) holding `pixels` (uint16/int16/uint8, or none)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    if pixels is not None:
        bits = pixels.dtype.itemsize * 8
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
        if ds.SamplesPerPixel == 3:
            ds.PlanarConfiguration = 0
        ds.PixelData = pixels.tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=preamble, little_endian=True, implicit_vr=False)
    return buffer.getvalue()


def ramp16() -> np.ndarray:
    """Stored values 0..1000 in steps of 10 across 101 columns, 32 rows (over min_image_side)."""
    return np.tile(np.arange(0, 1001, 10, dtype=np.uint16), (32, 1))


def test_rescale_then_window_maps_onto_0_255_numerically():
    # HU = 2 * stored - 1000: stored 0..1000 -> -1000..1000 HU; window centre 0, width 1001 (LINEAR:
    # below c - 0.5 - (w-1)/2 = -500.5 -> 0, above c - 0.5 + (w-1)/2 = 499.5 -> 255, linear between)
    data = make_dicom(ramp16(), RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=1001)
    row = read_image(data, channels=1)[0, :, 0].astype(float)
    hu = np.arange(0, 1001, 10) * 2 - 1000
    expected = np.clip(((hu - (0 - 0.5)) / 1000 + 0.5) * 255, 0, 255)
    assert np.abs(row - expected).max() <= 1.0
    assert row[hu <= -501].max() == 0 and row[hu >= 500].min() == 255


def test_without_window_the_pixel_range_is_stretched():
    data = make_dicom(ramp16() + 3000, RescaleSlope=1, RescaleIntercept=0)
    row = read_image(data, channels=1)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row.astype(int)) >= 0)


def test_monochrome1_is_inverted():
    mono2 = read_image(make_dicom(ramp16()), channels=1)[0, :, 0].astype(int)
    mono1 = read_image(make_dicom(ramp16(), photometric="MONOCHROME1"), channels=1)[0, :, 0].astype(int)
    assert mono2[0] == 0 and mono2[-1] == 255
    assert np.abs(mono1 - (255 - mono2)).max() <= 1  # rounding only
    assert mono1[0] == 255 and mono1[-1] == 0


def test_rgb_dicom_keeps_its_colours():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[:16, :, 1] = 200, 100
    out = read_image(make_dicom(rgb, photometric="RGB"), channels=3)
    assert np.array_equal(out, rgb)


def test_multi_frame_gives_the_first_frame_with_a_note(caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("ultrasonic"), "propagate", True)  # the CLI's setup may turn it off
    frames = np.stack([ramp16(), ramp16()[:, ::-1], np.zeros_like(ramp16())])
    ds = _dataset(make_dicom(frames[0]))
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    decoded = read_image_with_notes(buffer.getvalue(), channels=1, name="cine.dcm")
    assert np.array_equal(decoded.image, read_image(make_dicom(frames[0]), channels=1))
    assert decoded.notes == ("DICOM with 3 frames: only the first is used",)
    with caplog.at_level("INFO", logger="ultrasonic"):  # read_image logs the note it does not return
        read_image(buffer.getvalue(), channels=1, name="cine.dcm")
    assert "cine.dcm: DICOM with 3 frames: only the first is used" in caplog.text


def test_dicom_without_pixel_data_names_the_problem():
    data = make_dicom(None)
    with pytest.raises(BadImageError, match="pixel data") as info:
        read_image(data, name="report.dcm")
    assert str(info.value).startswith("report.dcm: ")


def test_unsupported_transfer_syntax_names_uid_and_name():
    data = make_dicom(ramp16(), transfer_syntax="1.2.3.4.5.6.7")  # a private, unknown syntax
    with pytest.raises(BadImageError, match=r"transfer syntax 1\.2\.3\.4\.5\.6\.7"):
        read_image(data, name="odd.dcm")


def test_corrupt_compressed_pixel_data_is_a_clear_error():
    from pydicom.encaps import encapsulate

    ds = _dataset(make_dicom(ramp16()))
    ds.file_meta.TransferSyntaxUID = JPEG2000
    ds.PixelData = encapsulate([b"\x00" * 64])  # a JPEG 2000 frame of zeros: not a codestream
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(BadImageError, match=r"transfer syntax 1\.2\.840\.10008\.1\.2\.4\.91 \(JPEG 2000"):
        read_image(buffer.getvalue(), name="broken.dcm")


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(BadImageError, match="more than the limit"):
        read_image(make_dicom(ramp16()), max_pixels=100)


def test_dicom_without_preamble_is_recognised():
    data = make_dicom(ramp16(), preamble=False)
    assert data[128:132] != b"DICM" and looks_like_dicom(data)
    assert read_image(data, channels=1).shape == (32, 101, 1)


def test_non_dicom_bytes_are_not_taken_for_dicom():
    assert not looks_like_dicom(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    assert not looks_like_dicom(b"\x08\x00" + b"\xff" * 200)  # right start, no VR, impossible length


def test_folder_scan_and_cache_take_dicom(tmp_path):
    from ultrasonic.data.cache import load_images
    from ultrasonic.data.sources import open_data
    from ultrasonic.data.files import expand_paths

    for name, offset in (("a", 0), ("b", 500)):
        (tmp_path / "cls" / name).mkdir(parents=True)
        (tmp_path / "cls" / name / "x.dcm").write_bytes(make_dicom(ramp16() + offset))
        (tmp_path / "cls" / name / "IM0001").write_bytes(make_dicom(ramp16()[:, ::-1] + offset))
    catalog = open_data(str(tmp_path / "cls"))
    assert sorted(catalog.refs) == ["a/IM0001", "a/x.dcm", "b/IM0001", "b/x.dcm"]
    loaded = load_images(catalog, size=16, channels=1, cache_dir=tmp_path / "cache", workers=1)
    assert not loaded.bad and loaded.images.shape == (4, 16, 16, 1)
    x = loaded.images[catalog.refs.index("a/x.dcm"), ..., 0].astype(int)
    im = loaded.images[catalog.refs.index("a/IM0001"), ..., 0].astype(int)
    assert x[:, -1].mean() - x[:, 0].mean() > 200 and im[:, 0].mean() - im[:, -1].mean() > 200  # ramps, mirrored
    assert [p.name for p in expand_paths([tmp_path / "cls" / "a"])] == ["IM0001", "x.dcm"]


def _dataset(data: bytes):
    import pydicom

    return pydicom.dcmread(io.BytesIO(data))


# ---- the real files -------------------------------------------------------------------------------

def lungs_dark_bone_bright(gray: np.ndarray, margin: float = 30) -> bool:
    """Chest PA view: both central lung fields (left/right of centre, mid height) darker than the
    mediastinum and spine column between them by `margin` grey levels.

    Holds for all 40 real chest JPEGs of ../shared/data/chest_xray_full (smallest gap 38 levels)
    and for RG1_J2KI.dcm (about 70); an inverted image fails it by the same amount.
    """
    g = gray[..., 0].astype(float) if gray.ndim == 3 else gray.astype(float)
    h, w = g.shape

    def box(y0, y1, x0, x1):
        return g[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)].mean()

    lungs = (box(0.3, 0.55, 0.2, 0.35) + box(0.3, 0.55, 0.65, 0.8)) / 2
    return lungs < box(0.3, 0.55, 0.45, 0.55) - margin


@needs_real
@pytest.mark.realdata
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_every_real_file_decodes(path):
    tiny = "16x16" in path.name  # decodes, and is refused by default as too small to classify
    for channels in (1, 3):
        x = read_image(path, size=64, channels=channels, min_image_side=0 if tiny else 24)
        assert x.shape == (64, 64, channels) and x.dtype == np.uint8
        assert x.max() > x.min()  # an image, not a blank
    if tiny:
        with pytest.raises(UnusableImageError, match="blank or too small to classify: 16 x 16 px"):
            read_image(path, size=64)


@needs_real
@pytest.mark.realdata
def test_chest_cr_monochrome1_jpeg2000_has_dark_lungs_and_bright_bone():
    path = DICOM_DIR / "RG1_J2KI.dcm"
    ds = _dataset(path.read_bytes())
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.file_meta.TransferSyntaxUID == JPEG2000
    assert lungs_dark_bone_bright(read_image(path, size=64, channels=1))
    # the same file claiming MONOCHROME2 is what a reader without the inversion shows: the check catches it
    ds.PhotometricInterpretation = "MONOCHROME2"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    assert not lungs_dark_bone_bright(read_image(buffer.getvalue(), size=64, channels=1))


@needs_real
@pytest.mark.realdata
def test_chest_check_holds_for_real_chest_jpegs():
    folder = DICOM_DIR.parent / "chest_xray_full" / "train"
    files = sorted(folder.glob("*/*.jpeg"))[::5]
    if not files:
        pytest.skip(f"no chest X-ray JPEGs in {folder}")
    assert all(lungs_dark_bone_bright(read_image(f, size=64, channels=1)) for f in files)
