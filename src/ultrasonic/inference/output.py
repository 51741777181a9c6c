"""Prediction rows on standard output, as `predict` and `explain` print them: a table, CSV, JSON or FHIR.

    print_rows(Predictor("runs/cxr").predict_files(["scans/"]), "table")
"""

from __future__ import annotations

import csv
import json
import sys

from ultrasonic.inference.batch import csv_header, csv_row  # the columns of `predict --out CSV` too


def print_rows(rows: list[dict], format: str, meta=None) -> None:
    """`meta` (the run's RunMeta) only for "fhir": the report names the model."""
    if format == "fhir":
        from ultrasonic.pacs.fhir import diagnostic_report_json

        print(diagnostic_report_json(rows, meta))
        return
    {"json": print_json, "csv": print_csv, "table": print_table}[format](rows)


def print_json(rows: list[dict]) -> None:
    print(json.dumps(rows, indent=2))


def print_csv(rows: list[dict]) -> None:
    classes = next((list(r["probabilities"]) for r in rows if "probabilities" in r), [])
    cam = any("cam" in r for r in rows)
    writer = csv.writer(sys.stdout)
    writer.writerow(csv_header(classes, cam))
    writer.writerows(csv_row(r, classes, cam) for r in rows)


def print_table(rows: list[dict]) -> None:
    classes = next((list(r["probabilities"]) for r in rows if "probabilities" in r), [])
    width = max([len("file")] + [len(r["file"]) for r in rows])
    cam = "  cam" if any("cam" in r for r in rows) else ""
    print(f"{'file':<{width}}  {'class':<12}" + "".join(f"  p({c})"[:14].rjust(14) for c in classes) + cam)
    for r in rows:
        note = f"  (note: {r['note']})" if "note" in r else ""
        if "error" in r:
            print(f"{r['file']:<{width}}  ERROR: {r['error']}{note}")
            continue
        probs = "".join(f"{r['probabilities'][c]:14.4f}" for c in classes)
        label = "-" if r["class"] is None else r["class"]  # None: the OOD gate refused a class
        note += f"  {r['message']}" if "message" in r else ""
        print(f"{r['file']:<{width}}  {label:<12}{probs}" + (f"  {r['cam']}" if "cam" in r else "") + note)
    threshold = next((r.get("threshold") for r in rows if r.get("threshold") is not None), None)
    if threshold is not None:
        print(f"(threshold {threshold:.3f} on p({classes[1] if len(classes) > 1 else ''}))")
