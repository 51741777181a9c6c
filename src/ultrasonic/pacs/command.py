"""`ultrasonic pacs RUN --url DICOMWEB_URL`: its options and what it runs (cli.py registers both).

Importing this module imports neither requests, highdicom nor Keras: `ultrasonic --help` stays fast.
"""

from __future__ import annotations

import argparse
import re
import sys

DATE_RANGE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")  # DICOM DA range matching: 20240101-20241231, -20241231, 20240101-


def add_parser(sub, command_factory, add_ood_option) -> argparse.ArgumentParser:
    """The `pacs` sub-command; `command_factory(sub, name, help)` makes it with the CLI's shared options."""
    p = command_factory(sub, "pacs", "predict the images of a PACS over DICOMweb, store an SR and heat map back")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--url", required=True, help="the PACS's DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web "
                   "(Orthanc); credentials only from ULTRASONIC_PACS_USER + ULTRASONIC_PACS_PASSWORD (HTTP basic) "
                   "or ULTRASONIC_PACS_TOKEN (bearer)")
    p.add_argument("--modality", help="only instances of this modality, e.g. CR (default: any)")
    p.add_argument("--study-date", metavar="FROM-TO", help="only studies of these dates, YYYYMMDD-YYYYMMDD; "
                                                           "either end may be left out (default: any)")
    p.add_argument("--study", metavar="UID", help="only this study (Study Instance UID; default: every study)")
    p.add_argument("--series", metavar="UID", help="only this series (Series Instance UID; default: every series)")
    p.add_argument("--limit", type=int, metavar="N", help="predict at most N instances this run (default: all)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run that was stopped: what every run does (instances with this model's SR "
                        "are skipped), accepted so scripts can say so (default: on)")
    p.add_argument("--no-heat-map", dest="heat_maps", action="store_false",
                   help="store the SR only, no Grad-CAM Secondary Capture (default: both, with the keras engine)")
    p.add_argument("--engine", choices=["keras", "onnx"], default="keras",
                   help="keras (model.keras) or onnx (model.onnx: no heat maps)")
    p.add_argument("--finding-codes", metavar="YAML",
                   help="class -> [code, scheme, meaning] for the SR's finding (default: pneumonia and normal "
                        "as SNOMED CT; see docs/pacs.md)")
    p.add_argument("--format", choices=["dicom", "fhir"], default="dicom",
                   help="fhir: also write an R4 DiagnosticReport of this run's predictions to --fhir-out")
    p.add_argument("--fhir-out", metavar="FILE",
                   help="with --format fhir: the DiagnosticReport's JSON file (default: none; fhir needs it)")
    add_ood_option(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Check the options, search and process (workflow.run_pacs), print the summary; 1 if an instance failed."""
    from ultrasonic.inference.predictor import Predictor
    from ultrasonic.pacs.dicomweb import connect
    from ultrasonic.pacs.workflow import Filters, run_pacs

    _check(args)
    filters = Filters(modality=args.modality, study_date=args.study_date, study=args.study, series=args.series)
    client = connect(args.url)  # before the run is loaded: a bad URL or half-set credentials fail fast
    predictor = Predictor(args.run_dir, engine=args.engine, ood=args.ood or "abstain")
    codes = _finding_codes(args.finding_codes)
    summary = run_pacs(client, args.url, predictor, filters, limit=args.limit, heat_maps=args.heat_maps,
                       finding_codes=codes, progress=_progress(args.quiet))
    if args.format == "fhir":
        _write_fhir(args.fhir_out, summary, predictor.meta, codes)
    print("\n".join(summary.lines()))
    return 1 if summary.failures else 0


def _check(args) -> None:
    from ultrasonic.errors import ConfigError

    if args.format == "fhir" and not args.fhir_out:
        raise ConfigError("--format fhir needs --fhir-out FILE (the summary goes to the terminal)")
    if args.fhir_out and args.format != "fhir":
        raise ConfigError("--fhir-out goes with --format fhir")
    if args.study_date and not (DATE_RANGE.match(args.study_date) and args.study_date.strip("-")):
        raise ConfigError(f"--study-date {args.study_date!r}: write YYYYMMDD or YYYYMMDD-YYYYMMDD, e.g. 20240101-20241231")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give at least 1 (leave it out for all instances)")


def _finding_codes(path: str | None):
    from ultrasonic.pacs.codes import load_finding_codes

    return load_finding_codes(path) if path else None


def _progress(quiet: bool):
    from tqdm import tqdm

    return lambda items: tqdm(items, unit="img", desc="pacs", disable=quiet or None, file=sys.stderr)


def _write_fhir(path: str, summary, meta, codes) -> None:
    from ultrasonic.atomic import write_text
    from ultrasonic.pacs.fhir import diagnostic_report_json

    write_text(path, diagnostic_report_json(summary.rows, meta, study_uids=summary.studies, finding_codes=codes))
    print(f"FHIR DiagnosticReport: {path}", file=sys.stderr)
