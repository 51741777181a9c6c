"""`ultrasonic dicomize IMAGE... --out DIR`: its options and what it runs (cli.py registers both).

Importing this module imports neither highdicom nor Keras: `ultrasonic --help` stays fast.
"""

from __future__ import annotations

import argparse


def add_parser(sub, command_factory) -> argparse.ArgumentParser:
    """The `dicomize` sub-command; `command_factory(sub, name, help)` makes it (the CLI's shared options)."""
    p = command_factory(sub, "dicomize", "JPEG/PNG pictures as DICOM Secondary Capture files (for a PACS)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the <name>.dcm files")
    p.add_argument("--study-uid", help="put every picture in this study, one series (default: a study per "
                                       "picture, its UID derived from the file's content)")
    p.add_argument("--series-uid", help="with --study-uid: the series' UID (default: derived from the study's)")
    p.add_argument("--patient-id", help="Patient ID (default: empty)")
    p.add_argument("--patient-name", help="Patient's Name, DICOM style FAMILY^GIVEN (default: empty)")
    p.add_argument("--modality", default="OT", help="Modality, e.g. CR or DX for a radiograph, US (default OT: other)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ultrasonic.errors import ConfigError
    from ultrasonic.pacs.picture import write_dicomized

    if args.series_uid and not args.study_uid:
        raise ConfigError("--series-uid goes with --study-uid: a series belongs to one study")
    written = write_dicomized(args.images, args.out, study_uid=args.study_uid, series_uid=args.series_uid,
                              patient_id=args.patient_id, patient_name=args.patient_name, modality=args.modality)
    for path in written:
        print(path)
    return 0
