"""The prediction for one DICOM image as a DICOM Comprehensive SR (TID 1500 Imaging Measurement Report).

    sr = structured_report(source_ds, row, predictor.meta)   # row: one of Predictor.rows / predict --format json
    sr.save_as("result.dcm")

What it states, in one TID 1501 measurement group that references the source image
(SOP Class and Instance UID; the SR is in the source's study, and its evidence lists the
source's study and series):
  - Finding (DCM 121071): the predicted class as a coded concept (codes.FINDING_CODES: SNOMED CT
    Pneumonia, Normal), or as text when the class has no code; none when the out-of-distribution
    gate refused the image: a Comment (DCM 121106) says it is not like the training images;
  - Probability (DCM 122157, unit {ratio}) of the positive class (two classes) or of the predicted one,
    and the Threshold Value (DCM 122411) it is compared with (no TID 1501 "finding type": its concept name
    is Finding too, so a reader could not tell the question from the answer);
  - the algorithm (TID 4019: name ultrasonic, its version, the model id as a parameter) and the device
    observer (the model id as its model name).
UIDs are derived from (source SOP Instance UID, model id) (uids.py): the same image and model give the
same SR, which a second run finds; every SR of one model in a study goes in one series.
"""

from __future__ import annotations

from typing import Mapping

from pydicom.dataset import Dataset

from ultrasonic import __version__
from ultrasonic.errors import MissingExtraError, UltrasonicError
from ultrasonic.pacs import codes as C
from ultrasonic.pacs.uids import result_uid

SERIES_NUMBER = 9901  # high, so the results sort after the acquired series in a viewer
REPORT_SERIES = "ultrasonic result (not for diagnosis)"


def report_uids(source: Dataset, model_id: str) -> dict[str, str]:
    """The SR's SOP Instance UID and Series Instance UID for this source image and model."""
    return {"sop": result_uid(source.SOPInstanceUID, model_id, "sr"),
            "series": result_uid(source.StudyInstanceUID, model_id, "sr-series")}


def structured_report(source: Dataset, row: dict, meta, finding_codes: Mapping | None = None):
    """A highdicom ComprehensiveSR of `row` (a prediction row) about `source`; `meta` is the run's RunMeta."""
    hd = _highdicom()
    _check_row(row)
    uids = report_uids(source, meta.model_id)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=result_uid(uids["sop"], "group"),
                                                     identifier="ultrasonic classification"),
        algorithm_id=_algorithm(hd, meta),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=_measurements(hd, row, meta),
        qualitative_evaluations=_finding(hd, row, finding_codes),
    )
    group[0].ContentSequence.extend(_text_items(hd, row, finding_codes))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=_device(hd, meta)),
        procedure_reported=C.IMAGING_PROCEDURE, imaging_measurements=[group])
    sr = hd.sr.ComprehensiveSR(
        evidence=[source], content=content[0], series_instance_uid=uids["series"], series_number=SERIES_NUMBER,
        sop_instance_uid=uids["sop"], instance_number=1, manufacturer="ultrasonic", is_complete=True,
        series_description=REPORT_SERIES)
    sr.SoftwareVersions = f"ultrasonic {__version__}"
    return sr


def _highdicom():
    try:
        import highdicom
    except ImportError as exc:
        raise MissingExtraError("pacs", "DICOM results (SR, Secondary Capture)", "highdicom") from exc
    return highdicom


def _check_row(row: dict) -> None:
    if "error" in row or "probabilities" not in row:
        raise UltrasonicError(f"{row.get('file', 'the image')}: has no prediction ({row.get('error', 'no probabilities')}); "
                              "a report is written only for a predicted image")


def _scored_class(row: dict, meta) -> str:
    """The class whose probability the report states: the positive one (two classes) or the predicted one."""
    if len(meta.classes) == 2:
        return meta.positive_class
    return row["class"] or max(row["probabilities"], key=row["probabilities"].get)


def _measurements(hd, row: dict, meta) -> list:
    scored = _scored_class(row, meta)
    items = [hd.sr.Measurement(name=C.PROBABILITY, value=row["probabilities"][scored], unit=C.RATIO)]
    if row.get("threshold") is not None:
        items.append(hd.sr.Measurement(name=C.THRESHOLD, value=row["threshold"], unit=C.RATIO))
    return items


def _finding(hd, row: dict, finding_codes) -> list:
    """The coded finding; none when the gate refused the image or the class has no code (then text)."""
    code = C.finding_code(row["class"], finding_codes) if row["class"] is not None else None
    return [hd.sr.QualitativeEvaluation(name=C.FINDING, value=code)] if code else []


def _text_items(hd, row: dict, finding_codes) -> list:
    """A class without a code as a text Finding; the gate's refusal or warning as a Comment."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items = []
    if row["class"] is not None and C.finding_code(row["class"], finding_codes) is None:
        items.append(hd.sr.TextContentItem(name=C.FINDING, value=row["class"], relationship_type=contains))
    if row.get("message"):
        verdict = "no finding given: " if row["class"] is None else "finding kept, flagged: "
        items.append(hd.sr.TextContentItem(name=C.COMMENT, value=verdict + row["message"], relationship_type=contains))
    return items


def _algorithm(hd, meta):
    return hd.sr.AlgorithmIdentification(name="ultrasonic", version=__version__,
                                         parameters=[f"model_id={meta.model_id}"])


def _device(hd, meta):
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=result_uid("device", meta.model_id), name="ultrasonic", manufacturer_name="ultrasonic",
        model_name=meta.model_id)
    return hd.sr.ObserverContext(observer_type=codes.cid270.Device, observer_identifying_attributes=device)
