"""The grey DICOM display pipeline (data/dicom.py) and the scaling of 16-bit and float images to 0-255
(io.scale_to_uint8) run in blocks of rows, to bound their float64 working copies: every output byte must
stay what the whole-image pipeline gave. The whole-image pipeline as it was before the change is kept
here, only to compare against, on synthetic files covering each branch (rescale, window LINEAR /
LINEAR_EXACT / SIGMOID, VOI LUT, Modality LUT, MONOCHROME1, INVERSE, min-max, non-finite values, a broken
window), on every real DICOM file at hand, and on deep arrays and a 16-bit PNG."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import pydicom
from PIL import Image

from ultrasonic.data import dicom
from ultrasonic.data import io as data_io
from test_dicom import REAL, make_dicom

PYDICOM_FILES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
RNG_SEED = 15


# --- the pipeline before blocks (copied from data/dicom.py and data/io.py as they were) -------------------


def _old_gray_to_uint8(frame, ds):
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(frame, ds)
    unit = _old_apply_voi(values, ds)
    if unit is None:
        unit = _old_min_max_unit(values)
    if dicom._inverted(ds):
        unit = 1.0 - unit
    return _old_unit_to_uint8(unit)


def _old_apply_voi(values, ds):
    from pydicom.pixels import apply_voi_lut

    if not (ds.get("VOILUTSequence") or ("WindowCenter" in ds and "WindowWidth" in ds)):
        return None
    try:
        values, probe = _old_voi_inputs(values, ds)
        out = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
        span = np.asarray(apply_voi_lut(probe, ds, index=0), dtype=np.float64)
    except MemoryError:
        raise
    except Exception as exc:
        warnings.warn(f"ignoring the DICOM VOI LUT/window ({dicom._one_line(exc)}); using the pixel range",
                      stacklevel=2)
        return None
    low, high = span.min(), span.max()
    return (out - low) / (high - low) if high > low else None


def _old_voi_inputs(values, ds):
    if not ds.get("VOILUTSequence"):
        return values, np.array([-1e30, 1e30])
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries, first = int(descriptor[0]) or 2 ** 16, int(descriptor[1])
    values = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
    return values, np.arange(first, first + entries, dtype=np.int64)


def _old_min_max_unit(array):
    array = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros(array.shape)
    low, high = array[finite].min(), array[finite].max()
    if high <= low:
        return np.zeros(array.shape)
    return (np.where(finite, array, low) - low) / (high - low)


def _old_unit_to_uint8(unit):
    return np.clip(np.rint(np.asarray(unit) * 255), 0, 255).astype(np.uint8)


# --- the files ---------------------------------------------------------------------------------------------


def _noise(rows=67, cols=101, top=4096, dtype=np.uint16, low=0):
    return np.random.default_rng(RNG_SEED).integers(low, top, size=(rows, cols)).astype(dtype)


def _lut_item(entries: int, first: int, bits: int = 16, seed: int = 0, top: int | None = None) -> Dataset:
    item = Dataset()
    item.add_new("LUTDescriptor", "SS" if first < 0 else "US", [entries, first, bits])
    table = np.random.default_rng(seed).integers(0, top or 2 ** bits, size=entries).astype("<u2")
    item.add_new("LUTData", "OW", table.tobytes())
    return item


def _modality_lut(entries: int, first: int) -> Dataset:
    item = _lut_item(entries, first, 16, seed=1, top=4096)  # pydicom reads 16-bit entries only
    item.ModalityLUTType = "HU"
    return item


CASES = {
    "min-max": lambda: make_dicom(_noise()),
    "min-max MONOCHROME1": lambda: make_dicom(_noise(), photometric="MONOCHROME1"),
    "min-max INVERSE": lambda: make_dicom(_noise(), PresentationLUTShape="INVERSE"),
    "min-max 8-bit": lambda: make_dicom(_noise(top=256, dtype=np.uint8)),
    "min-max signed": lambda: make_dicom(_noise(low=-2000, top=2000, dtype=np.int16)),
    "rescale min-max": lambda: make_dicom(_noise(), RescaleSlope=0.7, RescaleIntercept=-1024.3),
    "rescale min-max MONOCHROME1": lambda: make_dicom(_noise(), photometric="MONOCHROME1", RescaleSlope=1.3,
                                                      RescaleIntercept=17),
    "rescale to infinity": lambda: make_dicom(_noise(), RescaleSlope=1e305, RescaleIntercept=-1e308),
    "constant": lambda: make_dicom(np.full((40, 50), 7, np.uint16)),
    "constant MONOCHROME1": lambda: make_dicom(np.full((40, 50), 7, np.uint16), photometric="MONOCHROME1"),
    "window": lambda: make_dicom(_noise(), WindowCenter=1800, WindowWidth=1500),
    "rescale window": lambda: make_dicom(_noise(), RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=40,
                                         WindowWidth=400),
    "rescale window MONOCHROME1": lambda: make_dicom(_noise(), photometric="MONOCHROME1", RescaleSlope=0.5,
                                                     RescaleIntercept=-7.25, WindowCenter=900,
                                                     WindowWidth=1201),
    "two windows (the first used)": lambda: make_dicom(_noise(), WindowCenter=[2000, 300], WindowWidth=[999, 50]),
    "window LINEAR_EXACT": lambda: make_dicom(_noise(), WindowCenter=2047.5, WindowWidth=1000.5,
                                              VOILUTFunction="LINEAR_EXACT"),
    "window SIGMOID": lambda: make_dicom(_noise(), WindowCenter=2000, WindowWidth=900, VOILUTFunction="SIGMOID"),
    "signed window": lambda: make_dicom(_noise(low=-2000, top=2000, dtype=np.int16), WindowCenter=-100,
                                        WindowWidth=700),
    "12 of 16 bits window": lambda: make_dicom(_noise(), BitsStored=12, HighBit=11, WindowCenter=2048,
                                               WindowWidth=4096),
    "window width 0 (ignored: min-max)": lambda: make_dicom(_noise(), WindowCenter=100, WindowWidth=0),
    "VOI LUT": lambda: make_dicom(_noise(), VOILUTSequence=Sequence([_lut_item(3000, 500)])),
    "VOI LUT 8-bit entries": lambda: make_dicom(_noise(), VOILUTSequence=Sequence([_lut_item(4096, 0, 8)])),
    "rescale VOI LUT MONOCHROME1": lambda: make_dicom(_noise(), photometric="MONOCHROME1", RescaleSlope=0.5,
                                                      RescaleIntercept=-100.4,
                                                      VOILUTSequence=Sequence([_lut_item(2048, -50)])),
    "VOI LUT and window (the LUT used)": lambda: make_dicom(_noise(), WindowCenter=10, WindowWidth=20,
                                                            VOILUTSequence=Sequence([_lut_item(4096, 0)])),
    "VOI LUT of unsupported depth (ignored)": lambda: make_dicom(_noise(), VOILUTSequence=Sequence(
        [_lut_item(4096, 0, 9)])),
    "Modality LUT window": lambda: make_dicom(_noise(), ModalityLUTSequence=Sequence([_modality_lut(3500, 100)]),
                                              WindowCenter=2000, WindowWidth=3000),
    "Modality LUT min-max": lambda: make_dicom(_noise(), ModalityLUTSequence=Sequence([_modality_lut(4096, 0)])),
}


def _old_and_new(data: bytes, label: str):
    with warnings.catch_warnings(record=True) as old_warnings:
        warnings.simplefilter("always")
        ds = dicom._parse(data, label)
        frame = dicom._decode_first_frame(ds, label)
        grey = frame.ndim == 2 and ds.get("PhotometricInterpretation") != "PALETTE COLOR"
        old = _old_gray_to_uint8(frame, ds) if grey else None
    with warnings.catch_warnings(record=True) as new_warnings:
        warnings.simplefilter("always")
        new = np.asarray(dicom.read_dicom(data, label, max_pixels=10**8))
    return old, new, {str(w.message) for w in old_warnings}, {str(w.message) for w in new_warnings}


@pytest.mark.parametrize("block_pixels", [data_io.BLOCK_PIXELS, 7 * 101 + 3, 1])
@pytest.mark.parametrize("case", sorted(CASES))
def test_blocks_give_the_bytes_of_the_whole_frame(case, block_pixels, monkeypatch):
    monkeypatch.setattr(data_io, "BLOCK_PIXELS", block_pixels)  # one block, 7-row blocks and a short last one, rows
    old, new, old_warnings, new_warnings = _old_and_new(CASES[case](), case)
    assert new.dtype == np.uint8 and new.shape == old.shape
    assert np.array_equal(new, old), f"{case}: {np.count_nonzero(new != old)} pixels differ"
    assert new_warnings == old_warnings
    assert len(np.unique(new)) > 1 or case.startswith("constant")  # the case really exercises a mapping


def test_a_broken_window_still_warns_and_falls_back_to_the_pixel_range():
    _, new, _, new_warnings = _old_and_new(CASES["window width 0 (ignored: min-max)"](), "w0.dcm")
    assert any(w.startswith("ignoring the DICOM VOI LUT/window") for w in new_warnings)
    assert new.min() == 0 and new.max() == 255


@pytest.mark.parametrize("path", REAL + PYDICOM_FILES, ids=lambda p: p.name)
def test_real_files_give_the_bytes_of_the_whole_frame(path, monkeypatch):
    monkeypatch.setattr(data_io, "BLOCK_PIXELS", 4096)  # several blocks even for the small files
    data = path.read_bytes()
    try:
        old, new, _, _ = _old_and_new(data, path.name)
    except Exception as exc:  # not a grey image the decoder reads: nothing to compare
        pytest.skip(f"{type(exc).__name__}: {exc}"[:200])
    if old is None:
        pytest.skip("colour or palette: not the grey pipeline")
    assert np.array_equal(new, old), f"{path.name}: {np.count_nonzero(new != old)} pixels differ"


DEEP_ARRAYS = {
    "uint16": lambda rng: rng.integers(0, 65536, size=(53, 89)).astype(np.uint16),
    "int32 signed": lambda rng: rng.integers(-2**31, 2**31, size=(53, 89)).astype(np.int32),
    "float32 with nan and inf": lambda rng: np.where(rng.random((53, 89)) < 0.05, np.nan,
                                                     np.where(rng.random((53, 89)) < 0.05, -np.inf,
                                                              rng.normal(size=(53, 89)))).astype(np.float32),
    "float32 all nan": lambda rng: np.full((20, 30), np.nan, np.float32),
    "constant": lambda rng: np.full((20, 30), 1500, np.uint16),
    "one row": lambda rng: rng.integers(0, 4096, size=(1, 3000)).astype(np.uint16),
}


@pytest.mark.parametrize("block_pixels", [data_io.BLOCK_PIXELS, 5 * 89 + 1, 1])
@pytest.mark.parametrize("name", sorted(DEEP_ARRAYS))
def test_scale_to_uint8_in_blocks_gives_the_bytes_of_the_whole_array(name, block_pixels, monkeypatch):
    monkeypatch.setattr(data_io, "BLOCK_PIXELS", block_pixels)
    array = DEEP_ARRAYS[name](np.random.default_rng(RNG_SEED))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old and new both warn about nan; the bytes are the point
        old = _old_unit_to_uint8(_old_min_max_unit(array))
    new = data_io.scale_to_uint8(array)
    assert new.dtype == np.uint8 and np.array_equal(new, old)


def test_a_16_bit_png_reads_as_the_whole_image_pipeline_gave(monkeypatch):
    monkeypatch.setattr(data_io, "BLOCK_PIXELS", 1000)
    deep = DEEP_ARRAYS["uint16"](np.random.default_rng(RNG_SEED)) // 4 + 3000
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I")
    old = _old_unit_to_uint8(_old_min_max_unit(deep))
    assert np.array_equal(data_io.read_image(buffer.getvalue(), channels=1)[..., 0], old)
