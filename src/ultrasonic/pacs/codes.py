"""The coded concepts the results are written with: each class name -> a SNOMED CT concept, and the
DICOM (DCM), SNOMED CT (SCT) and UCUM codes of the report's own items.

    finding_code("PNEUMONIA")                         # Code("233604007", "SCT", "Pneumonia")
    finding_code("effusion")                          # None: the report states it as text
    finding_code("effusion", {"effusion": ("60046008", "SCT", "Pleural effusion")})

The class map is a setting (FINDING_CODES is its default; load_finding_codes reads a YAML file of
`class: [code, scheme, meaning]`); a class it does not name is written as a text finding, never
given a guessed code. Class names match whatever their case.
"""

from __future__ import annotations

import os
from typing import Mapping

import yaml
from pydicom.sr.coding import Code

from ultrasonic.errors import ConfigError

# SNOMED CT 233604007 |Pneumonia (disorder)|; 17621005 |Normal (qualifier value)|, the "Normal" of
# DICOM CIDs 222 and 242 (PS3.16), as pydicom's code dictionary lists it
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    "pneumonia": ("233604007", "SCT", "Pneumonia"),
    "normal": ("17621005", "SCT", "Normal"),
}
FINDING = Code("121071", "DCM", "Finding")  # TID 1501's concept name of a qualitative evaluation
PROBABILITY = Code("122157", "DCM", "Probability")
THRESHOLD = Code("122411", "DCM", "Threshold Value")
COMMENT = Code("121106", "DCM", "Comment")
RATIO = Code("{ratio}", "UCUM", "ratio")  # the unit of a probability and of its threshold (CID 7181)
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")  # CID 100: the procedure reported
# FHIR spells the schemes as URIs
FHIR_SYSTEMS = {"SCT": "http://snomed.info/sct", "DCM": "http://dicom.nema.org/resources/ontology/DCM",
                "LN": "http://loinc.org", "UCUM": "http://unitsofmeasure.org"}


def finding_code(class_name: str, codes: Mapping[str, tuple[str, str, str]] | None = None) -> Code | None:
    """The coded concept of a class (FINDING_CODES unless `codes` is given), or None when it has none."""
    table = {k.lower(): v for k, v in (FINDING_CODES if codes is None else codes).items()}
    entry = table.get(class_name.lower())
    return None if entry is None else Code(*entry)


def load_finding_codes(path: str | os.PathLike) -> dict[str, tuple[str, str, str]]:
    """A class map from YAML (`pneumonia: [233604007, SCT, Pneumonia]`); ConfigError names a bad entry."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds a {type(data).__name__}; write one `class: [code, scheme, meaning]` a line")
    for name, entry in data.items():
        if not (isinstance(entry, list) and len(entry) == 3 and all(str(v).strip() for v in entry)):
            raise ConfigError(f"{path}: class {name!r} maps to {entry!r}; write [code, scheme, meaning], "
                              "e.g. [233604007, SCT, Pneumonia]")
    return {str(k): tuple(str(v) for v in entry) for k, entry in data.items()}
