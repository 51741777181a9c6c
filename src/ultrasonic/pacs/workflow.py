"""`ultrasonic pacs`: find images in a PACS over DICOMweb, predict, store the SR and heat map in the same study.

    client = connect(url)                                   # dicomweb.py: credentials from the environment
    done = run_pacs(client, url, Predictor("runs/cxr"), Filters(modality="CR"))
    print("\n".join(done.lines()))

The order is what makes a failure harmless:
  1. search (QIDO-RS) for every matching instance, and for this model's earlier SRs in their studies;
     a PACS that is down or refuses here is one PacsError, and nothing has been written;
  2. per instance: fetch (WADO-RS, as stored), decode as `ultrasonic predict` does, predict with the
     run's threshold and OOD gate, build the heat map capture (Keras engine) and the SR, and store
     both in one STOW-RS request, the SR last. A failure of one instance (pixel data the decoder
     cannot read, a STOW refused) is recorded with its reason and the batch goes on.
The result UIDs are derived from (source SOP Instance UID, model id) (uids.py), so "has a result"
is whether the SR's UID is already in the study: a second run writes nothing, and a run killed half
way is continued by running it again (--resume says so; there is nothing else to resume).
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from typing import Callable, Iterable, Mapping, NamedTuple

import numpy as np

from ultrasonic.errors import PacsError
from ultrasonic.pacs.capture import CAPTURE_SERIES
from ultrasonic.pacs.dicomweb import ANY_TRANSFER_SYNTAX, answered
from ultrasonic.pacs.report import REPORT_SERIES, report_uids

SR_CLASSES = "1.2.840.10008.5.1.4.1.1.88."  # every Structured Report storage class, key objects included
RESULT_SERIES = {REPORT_SERIES, CAPTURE_SERIES}
PAGE = 500  # instances per QIDO-RS request
# DICOM JSON keywords -> tags (PS3.18 F.2): what QIDO-RS answers with
TAGS = {"study": "0020000D", "series": "0020000E", "sop": "00080018", "sop_class": "00080016",
        "series_description": "0008103E"}


@dataclasses.dataclass(frozen=True)
class Filters:
    """The QIDO-RS search: each None matches everything. study_date is DICOM's YYYYMMDD or YYYYMMDD-YYYYMMDD."""
    modality: str | None = None
    study_date: str | None = None
    study: str | None = None
    series: str | None = None

    def query(self) -> dict[str, str]:
        keys = {"Modality": self.modality, "StudyDate": self.study_date, "SeriesInstanceUID": self.series}
        return {k: v for k, v in keys.items() if v}


class Instance(NamedTuple):
    study: str
    series: str
    sop: str
    sop_class: str
    series_description: str

    @classmethod
    def from_json(cls, item: Mapping) -> "Instance":
        """From a QIDO-RS answer's item; ValueError (the PACS's answer is not DICOM JSON) without a SOP Instance UID."""
        if not isinstance(item, Mapping) or TAGS["sop"] not in item:
            raise ValueError(f"an item without a SOP Instance UID: {str(item)[:80]}")

        def value(name: str) -> str:
            values = item.get(TAGS[name], {}).get("Value") or [""]
            return str(values[0])
        return cls(*(value(name) for name in cls._fields))

    @property
    def is_image(self) -> bool:
        """Not a report and not one of our own result series (a heat map is no image to predict on)."""
        return not self.sop_class.startswith(SR_CLASSES) and self.series_description not in RESULT_SERIES


@dataclasses.dataclass
class Summary:
    """What a run did, instance by instance; `rows` are the prediction rows written (the FHIR report's)."""
    found: int = 0
    not_images: int = 0
    done_before: int = 0
    predicted: int = 0
    refused: int = 0
    written: int = 0
    left: int = 0
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    rows: list[dict] = dataclasses.field(default_factory=list)
    studies: dict[str, str] = dataclasses.field(default_factory=dict)  # row file (SOP UID) -> study

    def lines(self) -> list[str]:
        head = (f"found {self.found} instances: {self.not_images} not images (reports, our heat maps), "
                f"{self.done_before} with this model's result already, {self.predicted} predicted "
                f"({self.refused} refused as not like the training images), {len(self.failures)} failed")
        lines = [head, f"written: {self.written} objects (SR and heat map) into the PACS"]
        if self.left:
            lines.append(f"left for the next run (--limit): {self.left} instances")
        return lines + [f"failed: {sop}: {reason}" for sop, reason in self.failures]


def run_pacs(client, url: str, predictor, filters: Filters, limit: int | None = None, heat_maps: bool = True,
             finding_codes: Mapping | None = None, progress: Callable[[Iterable], Iterable] = iter) -> Summary:
    """Search, then predict and store each instance without a result (at most `limit`); the Summary."""
    summary = Summary()
    todo = pending(client, url, predictor.model_id, filters, summary)
    if limit is not None and len(todo) > limit:
        todo, summary.left = todo[:limit], len(todo) - limit
    explains = heat_maps and predictor.engine.name == "keras"
    for instance in progress(todo):
        try:
            row = process(client, predictor, instance, explains, finding_codes)
        except _InstanceFailure as failure:
            summary.failures.append((instance.sop, str(failure)))
            continue
        except _connection_errors() as exc:
            raise PacsError(f"{url}: the PACS stopped answering after {summary.predicted + len(summary.failures)} "
                            f"of {len(todo)} instances ({summary.written} objects written): {exc}; run the same "
                            "command again to continue (what is done is skipped)") from exc
        summary.predicted += 1
        summary.refused += row["class"] is None
        summary.written += 2 if explains else 1
        summary.rows.append(row)
        summary.studies[row["file"]] = instance.study
    return summary


def pending(client, url: str, model_id: str, filters: Filters, summary: Summary) -> list[Instance]:
    """The matching image instances that have no SR of this model yet; all searching happens here, before any write."""
    with answered(url, "search (QIDO-RS)"):
        found = search_all(client, study_instance_uid=filters.study, search_filters=filters.query(),
                           fields=["SeriesDescription"])
        images = [i for i in found if i.is_image]
        existing = {sop for study in dict.fromkeys(i.study for i in images)
                    for sop in results_in(client, study, model_id)}
    todo = [i for i in images if result_sop(i, model_id) not in existing]
    summary.found, summary.not_images = len(found), len(found) - len(images)
    summary.done_before = len(images) - len(todo)
    return todo


def results_in(client, study: str, model_id: str) -> set[str]:
    """The SOP Instance UIDs in this model's SR series of `study` (one series per study and model: uids.py)."""
    series = report_uids(_Uids(study, ""), model_id)["series"]
    return {i.sop for i in search_all(client, study_instance_uid=study, search_filters={"SeriesInstanceUID": series})}


def search_all(client, **query) -> list[Instance]:
    """Every instance of a QIDO-RS search, a page at a time. Not dicomweb-client's get_remaining: it pages until
    an empty page, forever against a server that ignores `offset`; here a page with nothing new ends it too."""
    found: dict[str, Instance] = {}
    while True:
        page = client.search_for_instances(offset=len(found), limit=PAGE, **query)
        new = [i for i in map(Instance.from_json, page) if i.sop not in found]
        found.update((i.sop, i) for i in new)
        if len(page) < PAGE or not new:
            return list(found.values())


def result_sop(instance: Instance, model_id: str) -> str:
    return report_uids(_Uids(instance.study, instance.sop), model_id)["sop"]


class _Uids(NamedTuple):
    """The two attributes report_uids reads, for an instance known only from its search answer."""
    StudyInstanceUID: str
    SOPInstanceUID: str


class _InstanceFailure(Exception):
    """One instance could not be done; its message is the reason the summary gives."""


def process(client, predictor, instance: Instance, explains: bool, finding_codes) -> dict:
    """Fetch, predict and store one instance; its prediction row, or _InstanceFailure with the reason."""
    source, data = fetch(client, instance)
    decoded = predictor.decode(data, name=instance.sop)
    if decoded.error is not None:
        raise _InstanceFailure(f"not predicted: {decoded.error.problem}")
    probs, scores = predictor.predict_scored(decoded.image[None], batch_size=1)
    row = predictor.rows([instance.sop], probs, scores)[0]
    decided = predictor.decide(probs)[0]  # before the gate: the heat map shows what the model leant to
    objects = [heat_map_capture(predictor, source, decoded.image, row, decided)] if explains else []
    objects.append(_built("the SR", lambda: _report(source, row, predictor.meta, finding_codes)))
    store(client, instance, objects)
    return row


def fetch(client, instance: Instance):
    """The instance as stored (no transcoding), as a pydicom Dataset and as the bytes of a DICOM file."""
    import pydicom

    try:
        source = client.retrieve_instance(instance.study, instance.series, instance.sop,
                                          media_types=ANY_TRANSFER_SYNTAX)
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, source)
    except _connection_errors():
        raise  # the PACS is gone, not this instance: run_pacs stops the run
    except Exception as exc:  # noqa: BLE001 -- an HTTP error, a body that is no DICOM: this instance only
        raise _InstanceFailure(f"not fetched (WADO-RS): {_why(exc)}") from exc
    return source, buffer.getvalue()


def heat_map_capture(predictor, source, image: np.ndarray, row: dict, decided: str):
    """The Grad-CAM Secondary Capture of the class `decided`, made as the service and `explain` make it
    (against the run's threshold; the gate's message when it refused the image)."""
    from ultrasonic.explain.gradcam import predicted_overlay
    from ultrasonic.pacs.capture import overlay_capture

    png, _ = predicted_overlay(predictor, image, row, decided)
    return _built("the heat map", lambda: overlay_capture(source, png, predictor.meta))


def _report(source, row, meta, finding_codes):
    from ultrasonic.pacs.report import structured_report

    return structured_report(source, row, meta, finding_codes)


def _built(what: str, build: Callable):
    """`build()`; a source whose attributes highdicom refuses (a malformed header) fails this instance only.
    highdicom's warnings about the source's own values (a one-part person name) are the source's, not ours."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="highdicom")
            return build()
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise _InstanceFailure(f"{what} could not be made from this source: {_why(exc)}") from exc


def store(client, instance: Instance, objects: list) -> None:
    """STOW-RS of the capture then the SR into the source's study; a refusal (HTTP or per instance) fails it,
    and so does an SR the PACS does not hold afterwards (Orthanc answers success for one its filter dropped):
    the SR is what the next run looks for."""
    try:
        answer = client.store_instances(objects, study_instance_uid=instance.study)
    except _connection_errors():
        raise
    except Exception as exc:  # noqa: BLE001 -- a 4xx/5xx for this request: this instance only
        raise _InstanceFailure(f"not stored (STOW-RS): {_why(exc)}") from exc
    failed = answer.get("FailedSOPSequence") or []
    if failed:
        reasons = ", ".join(f"{item.get('ReferencedSOPInstanceUID', '?')} reason {item.get('FailureReason', '?')}"
                            for item in failed)
        raise _InstanceFailure(f"not stored (STOW-RS): the PACS refused {reasons}")
    sr = objects[-1].SOPInstanceUID
    if not client.search_for_instances(study_instance_uid=instance.study, search_filters={"SOPInstanceUID": sr}):
        raise _InstanceFailure(f"not stored (STOW-RS): the PACS answered success but does not hold the SR {sr} "
                               "(a filter of the PACS dropped it?)")


def _connection_errors() -> tuple[type, ...]:
    import requests

    return (requests.ConnectionError,)


def _why(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    return str(exc) or type(exc).__name__
