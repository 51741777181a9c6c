"""The Grad-CAM overlay of one DICOM image as a Secondary Capture in the source's study, in its own series.

    png = overlay_png(image, heatmap, "PNEUMONIA 0.93")          # explain/overlay.py
    sc = overlay_capture(source_ds, png, predictor.meta)
    sc.save_as("cam.dcm")

The picture is RGB with "NOT FOR DIAGNOSIS" burned into its lower edge (Burned In Annotation YES):
a heat map shows where the model looked, not what is there, and a viewer shows a Secondary
Capture next to the study's own images. Source Image Sequence names the image it was made from.
UIDs are derived from (source SOP Instance UID, model id), like the SR's (report.py).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from ultrasonic import __version__
from ultrasonic.pacs.report import _highdicom
from ultrasonic.pacs.uids import result_uid

WARNING = "NOT FOR DIAGNOSIS"
SERIES_NUMBER = 9902  # after the SR's series (report.SERIES_NUMBER)
CAPTURE_SERIES = "ultrasonic heat map (not for diagnosis)"


def capture_uids(source: Dataset, model_id: str) -> dict[str, str]:
    """The capture's SOP Instance UID and Series Instance UID for this source image and model."""
    return {"sop": result_uid(source.SOPInstanceUID, model_id, "sc"),
            "series": result_uid(source.StudyInstanceUID, model_id, "sc-series")}


def overlay_capture(source: Dataset, overlay: bytes | np.ndarray, meta):
    """A highdicom SCImage of `overlay` (PNG bytes from overlay_png, or uint8 RGB) with the warning burned in."""
    hd = _highdicom()
    pixels = burn_in(_rgb(overlay))
    uids = capture_uids(source, meta.model_id)
    sc = hd.sc.SCImage.from_ref_dataset(
        source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", patient_orientation=("L", "F"),  # replaced below by the source's own
        series_instance_uid=uids["series"], series_number=SERIES_NUMBER, sop_instance_uid=uids["sop"],
        instance_number=1, manufacturer="ultrasonic", transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description=CAPTURE_SERIES)
    sc.PatientOrientation = source.get("PatientOrientation") or None  # type 2: the source's, or empty
    sc.Laterality = source.get("Laterality") or None
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "YES"
    sc.DerivationDescription = f"Grad-CAM heat map of model {meta.model_id} over the source image; {WARNING}"
    sc.SourceImageSequence = [_reference(source)]
    sc.SoftwareVersions = f"ultrasonic {__version__}"
    return sc


def burn_in(rgb: np.ndarray, text: str = WARNING) -> np.ndarray:
    """`rgb` with `text` in white on a black band along its lower edge, sized to the picture."""
    img = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(12, img.height // 18))
    margin = max(3, img.height // 80)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    band = bottom - top + 2 * margin
    draw.rectangle((0, img.height - band, img.width, img.height), fill=(0, 0, 0))
    draw.text(((img.width - (right - left)) // 2 - left, img.height - band + margin - top), text, font=font,
              fill=(255, 255, 255))
    return np.asarray(img)


def _rgb(overlay: bytes | np.ndarray) -> np.ndarray:
    if isinstance(overlay, (bytes, bytearray)):
        return np.asarray(Image.open(io.BytesIO(overlay)).convert("RGB"))
    return np.ascontiguousarray(np.asarray(overlay, dtype=np.uint8)[..., :3])


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item
