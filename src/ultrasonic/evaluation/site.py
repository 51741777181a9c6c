"""A new site: does the run's stored operating point still give its validation sensitivity and specificity?

`ultrasonic evaluate RUN NEW_DATA` adds this check to metrics.json ("site_check"),
the printed summary and report.html. A measure "holds" when the new data's 95 %
interval reaches the validation value (the difference could be chance); it is
"below" when the whole interval lies under it: the threshold no longer does
what it was chosen for there, and `ultrasonic recalibrate` is the remedy.

    check = site_check(metrics, run.read_meta())   # None for more than two classes
    for line in site_lines(check): print(line)
"""

from __future__ import annotations

from typing import Any

from ultrasonic.evaluation.metrics import format_metric, is_missing
from ultrasonic.rundir import RunMeta

MEASURES = ("sensitivity", "specificity")
REMEDY = ("recalibrate on a labelled sample of this site: "
          "ultrasonic recalibrate RUN SITE_SAMPLE --out NEW_RUN")


def site_check(metrics: dict[str, Any], meta: RunMeta) -> dict[str, Any] | None:
    """Each measure at the run's threshold here, with its interval, against the run's validation value."""
    if metrics.get("task") != "binary":
        return None
    block = metrics.get("at_threshold", metrics["at_0.5"])  # where `predict` decides
    rows = {}
    for name in MEASURES:
        expected = meta.validation.get(name)
        if not isinstance(expected, (int, float)) or is_missing(expected):
            continue
        here = block[name]
        lo, hi = here["ci95"]
        status = "unknown" if is_missing(hi) else ("holds" if hi >= expected else "below")
        rows[name] = {"validation": float(expected), "here": here["value"], "ci95": [lo, hi],
                      "count": here.get("count"), "status": status}
    if not rows:
        return None
    below = [name for name, row in rows.items() if row["status"] == "below"]
    verdict = (f"the operating point does not hold here: {' and '.join(below)} below validation "
               f"(95 % interval under the validation value); {REMEDY}" if below else
               "the operating point holds here: sensitivity and specificity within their 95 % intervals "
               "of the validation values")
    return {"threshold": block["threshold"], "operating_point": meta.operating_point,
            "measures": rows, "holds": not below, "verdict": verdict,
            "rule": "holds when the 95 % interval here reaches the validation value; below when it lies under"}


def site_lines(check: dict[str, Any] | None) -> list[str]:
    """The check as the command line prints it."""
    if not check:
        return []
    lines = [f"site check at threshold {check['threshold']:.3f}:"]
    for name, row in check["measures"].items():
        lo, hi = row["ci95"]
        lines.append(f"  {name} {format_metric(row['here'])} (95% CI {format_metric(lo)}-{format_metric(hi)}) "
                     f"vs validation {format_metric(row['validation'])}: {row['status']}")
    lines.append(f"  {check['verdict']}")
    return lines
