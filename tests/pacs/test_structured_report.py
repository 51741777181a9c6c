"""The SR: parses with pydicom and highdicom, passes dciodvfy, names the source, states the row's numbers."""

from __future__ import annotations

import highdicom as hd
import pydicom
import pytest

from conftest import prediction
from ultrasonic.pacs.report import structured_report
from tiny_run import REAL_DATA


def _saved(sr, tmp_path, name="sr.dcm"):
    path = tmp_path / name
    sr.save_as(path, enforce_file_format=True)
    return path


def _items(sr, name: str):
    return hd.sr.utils.find_content_items(sr, name=_code(name), recursive=True)


def _code(name):
    from ultrasonic.pacs import codes as C

    return getattr(C, name)


def test_the_sr_states_the_finding_the_probability_and_the_source(tmp_path, validate, source, meta):
    row = prediction("pneumonia", p=0.875)
    path = _saved(structured_report(source, row, meta), tmp_path)
    validate(path)
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.PatientID == source.PatientID
    [finding] = _items(sr, "FINDING")
    assert (finding.ConceptCodeSequence[0].CodeValue, finding.ConceptCodeSequence[0].CodingSchemeDesignator) == \
        ("233604007", "SCT")
    [probability] = _items(sr, "PROBABILITY")
    assert float(probability.MeasuredValueSequence[0].NumericValue) == row["probabilities"]["pneumonia"]
    [threshold] = _items(sr, "THRESHOLD")
    assert float(threshold.MeasuredValueSequence[0].NumericValue) == row["threshold"]
    images = hd.sr.utils.find_content_items(sr, value_type=hd.sr.ValueTypeValues.IMAGE, recursive=True)
    assert {(i.ReferencedSOPSequence[0].ReferencedSOPClassUID, i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for i in images} == {(source.SOPClassUID, source.SOPInstanceUID)}
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID


def test_the_algorithm_and_model_are_identified(tmp_path, source, meta):
    sr = hd.sr.srread(_saved(structured_report(source, prediction(), meta), tmp_path))
    texts = {str(i.ConceptNameCodeSequence[0].CodeMeaning): i.TextValue for i in
             hd.sr.utils.find_content_items(sr, value_type=hd.sr.ValueTypeValues.TEXT, recursive=True)}
    assert texts["Algorithm Name"] == "ultrasonic" and texts["Algorithm Parameters"] == f"model_id={meta.model_id}"
    assert "Algorithm Version" in texts


def test_a_normal_image_gets_the_normal_code(tmp_path, source, meta):
    sr = hd.sr.srread(_saved(structured_report(source, prediction("normal", p=0.1), meta), tmp_path))
    [finding] = _items(sr, "FINDING")
    assert finding.ConceptCodeSequence[0].CodeValue == "17621005"


def test_an_image_refused_by_the_gate_has_no_finding_and_says_why(tmp_path, validate, source, meta):
    path = _saved(structured_report(source, prediction(refused=True), meta), tmp_path)
    validate(path)
    sr = hd.sr.srread(path)
    assert _items(sr, "FINDING") == []
    [comment] = _items(sr, "COMMENT")
    assert "not like the training images" in comment.TextValue


def test_a_class_without_a_code_is_a_text_finding(tmp_path, validate, source):
    from types import SimpleNamespace

    meta = SimpleNamespace(model_id="m1", classes=["benign", "malignant", "normal"], positive_class=None)
    row = {"file": "x", "class": "malignant", "threshold": None,
           "probabilities": {"benign": 0.2, "malignant": 0.7, "normal": 0.1}}
    path = _saved(structured_report(source, row, meta), tmp_path)
    validate(path)
    [finding] = _items(hd.sr.srread(path), "FINDING")
    assert finding.ValueType == "TEXT" and finding.TextValue == "malignant"


def test_the_same_image_and_model_give_the_same_uids_another_model_other_ones(source, meta):
    from types import SimpleNamespace

    first, again = structured_report(source, prediction(), meta), structured_report(source, prediction(p=0.5), meta)
    other = structured_report(source, prediction(), SimpleNamespace(**{**vars(meta), "model_id": "other"}))
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert other.SOPInstanceUID != first.SOPInstanceUID


def test_a_row_without_a_prediction_is_refused(source, meta):
    from ultrasonic.errors import UltrasonicError

    with pytest.raises(UltrasonicError, match="has no prediction"):
        structured_report(source, {"file": "x.dcm", "error": "not an image"}, meta)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "CT_small.dcm"])
def test_a_real_dicom_file_as_the_source(tmp_path, validate, meta, name):
    file = REAL_DATA / "dicom" / name
    if not file.exists():
        pytest.skip(f"{file} is absent")
    source = pydicom.dcmread(file)
    path = _saved(structured_report(source, prediction(), meta), tmp_path)
    validate(path)
    sr = pydicom.dcmread(path)
    assert (sr.StudyInstanceUID, sr.PatientID) == (source.StudyInstanceUID, source.PatientID)
