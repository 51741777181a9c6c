"""`train --external DATA`: the finished run scored on labelled images from another source, beside validation.

Validation comes from the same source as training and flatters; another source's images say what a
clinic will see. The run is evaluated on DATA as `ultrasonic evaluate RUN DATA` does (into
RUN/eval_external), and meta.json's `external` block keeps the headline figures and whether they agree
with validation. They disagree when validation's ROC-AUC lies above the whole external 95 % interval, or
when the stored threshold's sensitivity or specificity falls below validation there (evaluation/site.py's
rule): a warning in the log, the block and the run's eval report.

    block = evaluate_external("runs/cxr", "other_hospital/")   # also written into runs/cxr/meta.json
    for line in external_lines(block): print(line)
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ultrasonic.evaluation.evaluate import evaluate
from ultrasonic.evaluation.metrics import format_metric, is_missing
from ultrasonic.evaluation.summary import headline, json_safe
from ultrasonic.rundir import RunDir, RunMeta

log = logging.getLogger("ultrasonic")
NAMES = {"roc_auc": "ROC-AUC", "accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity"}


def evaluate_external(run_dir: str | Path, data: str, n_boot: int = 1000) -> dict[str, Any]:
    """Evaluate the run on DATA into RUN/eval_external, record the block in meta.json, warn on disagreement."""
    run = RunDir(run_dir)
    metrics = evaluate(run.path, data, out=run.eval_external, n_boot=n_boot)
    meta = run.read_meta()
    block = external_block(metrics, meta, data, str(Path(run.eval_external.name) / "metrics.json"))
    run.write_meta(replace(meta, external=block))
    for warning in block["warnings"]:
        log.warning("external: %s", warning)
    return block


def external_block(metrics: dict[str, Any], meta: RunMeta, data: str, metrics_file: str) -> dict[str, Any]:
    """meta.json's `external`: where, how many, the headline figures, and whether validation agrees."""
    figures = headline(metrics)
    warnings = disagreements(meta.validation, figures, metrics.get("site_check"))
    return json_safe({"data": str(Path(data).resolve()) if Path(data).exists() else data,
                      "evaluated_on": metrics["evaluated_on"], "n": metrics["n"], "counts": metrics["counts"],
                      "metrics": metrics_file, "threshold": meta.threshold if len(meta.classes) == 2 else None,
                      **figures, "agrees": not warnings, "warnings": warnings})


def disagreements(validation: dict[str, Any], figures: dict[str, Any], check: dict[str, Any] | None) -> list[str]:
    """Why the external figures contradict validation's, one sentence each; [] when they agree.

    ROC-AUC: validation's value above the external interval's upper bound. Sensitivity and specificity
    at the stored threshold: `site_check`'s verdict (its 95 % interval lies under validation's value).
    """
    reasons = []
    expected, auc = validation.get("roc_auc"), figures["roc_auc"]
    hi = auc["ci95"][1]
    if isinstance(expected, (int, float)) and not is_missing(expected) and not is_missing(hi) and expected > hi:
        reasons.append(f"ROC-AUC {format_metric(auc['value'])} (95 % CI {format_metric(auc['ci95'][0])}-"
                       f"{format_metric(hi)}) on the external data, validation said {format_metric(expected)}: "
                       "validation overstates how well the model separates the classes on other sources")
    if check and not check["holds"]:
        reasons.append(check["verdict"])
    return reasons


def external_lines(block: dict[str, Any] | None) -> list[str]:
    """What `train --external` prints: the figures, then every warning."""
    if not block:
        return []
    figures = ", ".join(f"{label} {_with_ci(block[name])}" for name, label in NAMES.items())
    lines = [f"external {block['evaluated_on']} ({block['n']} images): {figures}"]
    return lines + [f"  warning: {w}" for w in block["warnings"]]


def _with_ci(entry: dict[str, Any]) -> str:
    lo, hi = entry["ci95"]
    ci = "" if is_missing(lo) or is_missing(hi) else f" ({format_metric(lo)}-{format_metric(hi)})"
    return format_metric(entry["value"]) + ci
