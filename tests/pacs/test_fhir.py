"""FHIR: a DiagnosticReport valid as fhir.resources builds it, an Observation per image, the study named."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fhir.resources", reason="the `pacs` extra is not installed")
from fhir.resources.R4B.diagnosticreport import DiagnosticReport  # noqa: E402

from conftest import prediction  # noqa: E402
from ultrasonic.pacs.fhir import diagnostic_report  # noqa: E402


def test_one_observation_per_image_the_study_by_its_uid(meta):
    rows = [dict(prediction(), file="a.dcm"), dict(prediction("normal", p=0.2), file="b.png"),
            {"file": "c.png", "error": "not an image"}]
    report = diagnostic_report(rows, meta, study_uids={"a.dcm": "1.2.3.4"})
    DiagnosticReport.model_validate(report)
    assert report["status"] == "preliminary"
    assert [o["resourceType"] for o in report["contained"]] == ["Observation", "Observation"]
    assert report["imagingStudy"] == [{"type": "ImagingStudy",
                                       "identifier": {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"}}]
    first, second = report["contained"]
    assert first["derivedFrom"] == report["imagingStudy"] and "derivedFrom" not in second
    assert first["valueCodeableConcept"]["coding"][0]["code"] == "233604007"
    assert second["valueCodeableConcept"]["coding"][0]["code"] == "17621005"
    assert first["component"][0]["valueQuantity"]["value"] == rows[0]["probabilities"]["pneumonia"]
    assert first["component"][1]["valueQuantity"]["value"] == rows[0]["threshold"]


def test_a_refused_image_has_no_value_and_the_reason(meta):
    [obs] = diagnostic_report([prediction(refused=True)], meta, study_uids={})["contained"]
    assert "valueCodeableConcept" not in obs and obs["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert "not like the training images" in obs["note"][0]["text"]


def test_the_study_uid_is_read_from_a_dicom_file(source, meta, tmp_path):
    path = tmp_path / "s.dcm"
    source.save_as(path)
    report = diagnostic_report([dict(prediction(), file=str(path))], meta)
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{source.StudyInstanceUID}"
    json.dumps(report)
