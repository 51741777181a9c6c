"""dicomize: a picture file (JPEG, PNG, any format read_image reads) as a DICOM Secondary Capture image.

Secondary Capture, not DX or CR: those IODs make the detector's pixel spacing and the exposure
mandatory, which a JPEG does not hold, and a made-up value would be read as a measurement. The
pixels are those ultrasonic's own decoder gives (read_image: EXIF orientation applied, 16-bit
scaled to 8), stored uncompressed with a window of centre 128 and width 256, which the DICOM display
pipeline maps to themselves: reading the file back gives the same pixels as the picture.

UIDs: a study per picture unless `study_uid` names one (then every picture of the call goes into
one series of it); the SOP Instance UID is derived from the file's content and the study, so
dicomizing the same picture into the same study again gives the same instance, not a copy.

    ds = dicomize("chest.jpeg", modality="CR", patient_id="anon-17")
    written = write_dicomized(["a.jpeg", "b.png"], "dicom/", study_uid=ds.StudyInstanceUID)
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
from pydicom.dataset import Dataset

from ultrasonic import __version__
from ultrasonic.atomic import atomic_path
from ultrasonic.data.io import read_image
from ultrasonic.errors import ConfigError, MissingExtraError
from ultrasonic.pacs.uids import result_uid

MANUFACTURER = "ultrasonic"
IDENTITY_WINDOW = (128, 256)  # centre, width: DICOM's linear VOI function maps 0..255 onto itself (PS3.3 C.11.2.1.2)
MODALITY = re.compile(r"^[A-Z0-9_]{2,16}$")  # a DICOM CS value: CR, DX, US, OT, ...


def dicomize(path: str | os.PathLike, *, study_uid: str | None = None, series_uid: str | None = None,
             patient_id: str | None = None, patient_name: str | None = None, modality: str = "OT",
             series_number: int = 1, instance_number: int = 1) -> Dataset:
    """The Secondary Capture instance of one picture; BadImageError if it cannot be read."""
    _check_modality(modality)
    content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    study_uid = study_uid or result_uid("dicomize-study", content)
    series_uid = series_uid or result_uid("dicomize-series", study_uid)
    pixels = _pixels(path)
    ds = _secondary_capture(pixels, study_uid, series_uid, result_uid("dicomize", study_uid, content),
                            series_number, instance_number, patient_id, patient_name)
    ds.Modality = modality
    ds.ConversionType = "WSD"  # made on a workstation from a file, not a film digitiser or a video grab
    ds.PatientOrientation = None  # type 2 and 2C: unknown for a picture file, so empty rather than guessed
    ds.Laterality = None
    ds.SeriesDescription = "ultrasonic dicomize"
    ds.SoftwareVersions = f"ultrasonic {__version__}"
    if pixels.ndim == 2:
        ds.WindowCenter, ds.WindowWidth = IDENTITY_WINDOW
    return ds


def write_dicomized(paths: Iterable[str | os.PathLike], out: str | os.PathLike, **options) -> list[Path]:
    """dicomize each picture into `out`/<name>.dcm (written atomically); the written files, in order.

    Without `study_uid` each picture is its own study; with it, they share it and one series."""
    paths = [Path(p) for p in paths]
    targets = [Path(out) / f"{p.stem}.dcm" for p in paths]
    _check_distinct(paths, targets)
    if options.get("study_uid") and not options.get("series_uid"):
        options["series_uid"] = result_uid("dicomize-series", options["study_uid"])
    for number, (path, target) in enumerate(zip(paths, targets), start=1):
        ds = dicomize(path, instance_number=number, **options)
        with atomic_path(target) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return targets


def _pixels(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H, W) for a grey picture, (H, W, 3) for a colour one, as ultrasonic's decoder reads it."""
    rgb = read_image(path, size=None, channels=3, min_image_side=0, min_dynamic_range=0)
    grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return np.ascontiguousarray(rgb[..., 0] if grey else rgb)


def _secondary_capture(pixels: np.ndarray, study_uid: str, series_uid: str, sop_uid: str, series_number: int,
                       instance_number: int, patient_id: str | None, patient_name: str | None) -> Dataset:
    try:
        import highdicom as hd
    except ImportError as exc:
        raise MissingExtraError("pacs", "`ultrasonic dicomize`", "highdicom") from exc
    return hd.sc.SCImage(
        pixel_array=pixels, photometric_interpretation="MONOCHROME2" if pixels.ndim == 2 else "RGB",
        bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("L", "F"),  # emptied by the caller
        study_instance_uid=study_uid, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=instance_number, manufacturer=MANUFACTURER,
        patient_id=patient_id, patient_name=patient_name)


def _check_modality(modality: str) -> None:
    if not MODALITY.match(modality):
        raise ConfigError(f"--modality {modality!r} is not a DICOM modality code; use e.g. CR, DX, US or OT")


def _check_distinct(paths: list[Path], targets: list[Path]) -> None:
    """Two pictures of the same name (a/x.jpeg, b/x.png) would write one file: refuse before writing any."""
    seen: dict[Path, Path] = {}
    for path, target in zip(paths, targets):
        if target in seen:
            raise ConfigError(f"{seen[target]} and {path} would both be written to {target}; "
                              "dicomize them into different --out folders")
        seen[target] = path
