"""Deterministic DICOM UIDs: the same inputs give the same UID, so a second run finds what the first wrote.

A UID under the 2.25 root is the decimal value of a UUID (PS3.5 B.2). A name-based UUID (version 5,
RFC 4122) of the given parts is the same every time for the same parts, and unique to them.

    result_uid(source_sop_uid, model_id, "sr")         # the SR's SOP Instance UID for this image and model
    result_uid(study_uid, model_id, "sr-series")       # the series every SR of this model in the study joins
"""

from __future__ import annotations

import uuid

# the namespace of every derived UID: another tool deriving UIDs from the same parts gets other UIDs
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/ultrasonic/ultrasonic#dicom-uid")


def result_uid(*parts: str) -> str:
    """The UID derived from `parts`: unique to them, the same on every run."""
    return f"2.25.{uuid.uuid5(NAMESPACE, chr(0).join(map(str, parts))).int}"


def new_uid() -> str:
    """A fresh random UID (a version 4 UUID): for what has no stable identity to derive one from."""
    return f"2.25.{uuid.uuid4().int}"
