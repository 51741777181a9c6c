"""Into the hospital: pictures as DICOM (picture: dicomize), a prediction as a DICOM Structured Report (report)
and its Grad-CAM overlay as a Secondary Capture (capture), predictions as a FHIR R4 DiagnosticReport
(fhir); UIDs derived so that a second run finds what the first wrote (uids)."""

from ultrasonic.lazy import lazy_exports

__all__ = ["dicomize", "write_dicomized", "structured_report", "overlay_capture", "diagnostic_report",
           "result_uid", "finding_code"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "dicomize": ".picture", "write_dicomized": ".picture", "structured_report": ".report",
    "overlay_capture": ".capture", "diagnostic_report": ".fhir", "result_uid": ".uids", "finding_code": ".codes",
})
