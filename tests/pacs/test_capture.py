"""The Grad-CAM Secondary Capture: RGB, the warning burned in, in the source's study, naming the source."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom

from ultrasonic.explain.overlay import overlay_png
from ultrasonic.pacs.capture import burn_in, overlay_capture
from ultrasonic.pacs.report import structured_report
from conftest import prediction


def test_the_capture_is_rgb_marked_not_for_diagnosis_and_references_the_source(tmp_path, validate, source, meta):
    png = overlay_png(source.pixel_array, np.linspace(0, 1, 49).reshape(7, 7), "pneumonia 0.88")
    path = tmp_path / "sc.dcm"
    overlay_capture(source, png, meta).save_as(path, enforce_file_format=True)
    validate(path)
    sc = pydicom.dcmread(path)
    image = hd.imread(path)  # highdicom reads it as an image, its pixels the burned-in overlay
    assert image.get_frame(1).shape == (sc.Rows, sc.Columns, 3)
    assert (sc.PhotometricInterpretation, sc.SamplesPerPixel, sc.BurnedInAnnotation) == ("RGB", 3, "YES")
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.PatientID == source.PatientID
    assert sc.SeriesInstanceUID not in (source.SeriesInstanceUID, structured_report(source, prediction(), meta)
                                        .SeriesInstanceUID)
    ref = sc.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    assert overlay_capture(source, png, meta).SOPInstanceUID == sc.SOPInstanceUID  # a second run finds it


def test_the_warning_is_drawn_in_a_band_along_the_lower_edge():
    grey = np.full((256, 256, 3), 128, np.uint8)
    marked = burn_in(grey)
    band = marked[-12:]
    assert (band == 255).any() and (band == 0).any()  # white letters on black
    assert np.array_equal(marked[:200], grey[:200])  # the picture above it untouched
