"""Predictions as a FHIR R4 DiagnosticReport with one contained Observation per image, as JSON.

    text = diagnostic_report_json(rows, predictor.meta)      # `ultrasonic predict ... --format fhir`
    report = diagnostic_report(rows, meta, study_uids={"a.dcm": "1.2.3"})   # the dict

Built and validated through fhir.resources' R4B classes: fhir.resources 7 and later model R5 at
the top level and R4B in fhir.resources.R4B, and has no plain R4; DiagnosticReport and Observation
have the same elements in R4 and R4B (R4B changed only medication and subscription resources), so
the JSON is R4 too. An image from a DICOM study points at its ImagingStudy by the Study Instance UID
(identifier urn:dicom:uid, value urn:oid:UID), the report at every study of its images. Status
is "preliminary": no person has checked it. A refused image (the out-of-distribution gate) has no
value, the data-absent reason "unknown" and the gate's message as a note.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Mapping

from ultrasonic import __version__
from ultrasonic.errors import MissingExtraError
from ultrasonic.pacs import codes as C
from ultrasonic.pacs.uids import result_uid

REPORT_CODE = {"system": C.FHIR_SYSTEMS["LN"], "code": "18748-4", "display": "Diagnostic imaging study"}
ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def diagnostic_report(rows: list[dict], meta, study_uids: Mapping[str, str] | None = None,
                      finding_codes: Mapping | None = None) -> dict:
    """The DiagnosticReport (a JSON-ready dict) of the predicted `rows`; rows with an error are left out.
    `study_uids` maps a row's file to its Study Instance UID (default: read from the DICOM files)."""
    DiagnosticReport = _resources()
    rows = [r for r in rows if "error" not in r]
    study_uids = dict(study_uids) if study_uids is not None else dicom_study_uids(r["file"] for r in rows)
    observations = [_observation(i, r, meta, study_uids.get(r["file"]), finding_codes) for i, r in enumerate(rows, 1)]
    studies = list(dict.fromkeys(u for u in (study_uids.get(r["file"]) for r in rows) if u))
    report = {
        "resourceType": "DiagnosticReport", "id": _id("report", meta.model_id, *(r["file"] for r in rows)),
        "status": "preliminary", "code": {"coding": [REPORT_CODE], "text": "ultrasonic image classification"},
        "issued": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "contained": observations, "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": f"{len(rows)} images classified by ultrasonic {__version__}, model {meta.model_id}; "
                      "not reviewed, not for diagnosis",
    }
    if studies:
        report["imagingStudy"] = [_study_reference(u) for u in studies]
    return DiagnosticReport.model_validate(report).model_dump(mode="json", exclude_none=True)


def diagnostic_report_json(rows: list[dict], meta, **options) -> str:
    return json.dumps(diagnostic_report(rows, meta, **options), indent=2)


def dicom_study_uids(files) -> dict[str, str]:
    """file -> Study Instance UID for the files that are DICOM (headers only); the others are left out."""
    import pydicom

    uids = {}
    for name in files:
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        except (OSError, pydicom.errors.InvalidDicomError, TypeError):
            continue
        if ds.get("StudyInstanceUID"):
            uids[name] = str(ds.StudyInstanceUID)
    return uids


def _observation(number: int, row: dict, meta, study_uid: str | None, finding_codes) -> dict:
    obs = {"resourceType": "Observation", "id": f"image-{number}", "status": "preliminary",
           "code": {"coding": [_coding(C.FINDING)], "text": "ultrasonic classification"},
           "method": {"text": f"ultrasonic {__version__}, model {meta.model_id}"},
           "component": _components(row, meta)}
    if row["class"] is None:
        obs["dataAbsentReason"] = {"coding": [{"system": ABSENT, "code": "unknown", "display": "Unknown"}],
                                   "text": "not like the training images"}
    else:
        code = C.finding_code(row["class"], finding_codes)
        obs["valueCodeableConcept"] = {"coding": [_coding(code)], "text": row["class"]} if code else {"text": row["class"]}
    if row.get("message"):
        obs["note"] = [{"text": row["message"]}]
    if study_uid:
        obs["derivedFrom"] = [_study_reference(study_uid)]
    return obs


def _components(row: dict, meta) -> list[dict]:
    scored = meta.positive_class if len(meta.classes) == 2 else (row["class"] or max(row["probabilities"],
                                                                                      key=row["probabilities"].get))
    items = [{"code": {"coding": [_coding(C.PROBABILITY)], "text": f"probability of {scored}"},
              "valueQuantity": _ratio(row["probabilities"][scored])}]
    if row.get("threshold") is not None:
        items.append({"code": {"coding": [_coding(C.THRESHOLD)], "text": f"threshold on the probability of {scored}"},
                      "valueQuantity": _ratio(row["threshold"])})
    return items


def _ratio(value: float) -> dict:
    return {"value": float(value), "unit": "ratio", "system": C.FHIR_SYSTEMS["UCUM"], "code": C.RATIO.value}


def _coding(code) -> dict:
    return {"system": C.FHIR_SYSTEMS[code.scheme_designator], "code": code.value, "display": code.meaning}


def _study_reference(study_uid: str) -> dict:
    return {"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}}


def _id(*parts: str) -> str:
    """A FHIR id (at most 64 of [A-Za-z0-9-.]): the derived UID's number, the same for the same inputs."""
    return result_uid(*parts).removeprefix("2.25.")[:64]


def _resources():
    try:
        from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    except ImportError as exc:
        raise MissingExtraError("pacs", "--format fhir", "fhir.resources") from exc
    return DiagnosticReport
