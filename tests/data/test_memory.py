"""Out of memory while decoding is the machine's problem: never reported as a corrupt or unreadable image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from ultrasonic.data.cache import load_images
from ultrasonic.data.io import read_image
from ultrasonic.data.sources import open_data
from ultrasonic.errors import BadImageError


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("L", (32, 32), 7).save(out, format="PNG")
    return out.getvalue()


def no_memory(*args, **kwargs):
    raise MemoryError


def test_pillow_out_of_memory_is_a_memory_error_naming_the_file(monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(MemoryError, match="out of memory while decoding scan.png") as raised:
        read_image(png_bytes(), size=16, channels=1, name="scan.png")
    assert not isinstance(raised.value, BadImageError)


def test_dicom_out_of_memory_is_a_memory_error(monkeypatch):
    import pydicom.pixels

    from test_dicom import make_dicom  # tests/data is on the path (rootdir-less test folders)

    monkeypatch.setattr(pydicom.pixels, "pixel_array", no_memory)
    with pytest.raises(MemoryError, match="out of memory while decoding chest.dcm"):
        read_image(make_dicom(np.zeros((16, 16), np.uint16)), channels=1, name="chest.dcm")


def test_cache_lets_out_of_memory_through_instead_of_listing_bad_images(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(3):
            (tmp_path / "data" / name / f"{k}.png").write_bytes(png_bytes())
    catalog = open_data(str(tmp_path / "data"), None, str(tmp_path / "cache"))
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(MemoryError):
        load_images(catalog, 16, 1, cache_dir=tmp_path / "cache", workers=2)
    assert not list((tmp_path / "cache").rglob("*.npy"))  # no entry published with "bad" images
