"""A one-file HTML report of an evaluation: run info, metrics with 95% CIs (and how each was computed),
confusion counts, a threshold table, calibration before and after, figures.

The file is self-contained (inline CSS, images as base64 data URIs, no scripts,
no links), so it can be mailed or archived and still open years later:

    write_report(run / "eval" / "report.html", "Pneumonia, test split", metrics,
                 {"ROC curve": run / "eval" / "roc.png"}, {"run": "r1", "model": "resnet50"})

Every text that comes from outside (class names, info values, captions) is
HTML-escaped.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

from ultrasonic.atomic import write_text
from ultrasonic.errors import UltrasonicError
from ultrasonic.evaluation.metrics import BINARY_RATES, CONFUSION_COUNTS, OVERALL_RATES, PER_CLASS_RATES, format_metric

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.5rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: right; }
th { background: #f4f6f8; }
td:first-child, th:first-child { text-align: left; }
.ci { color: #666; font-size: 0.9em; }
.warning { background: #fff3cd; border-left: 4px solid #d39e00; padding: 0.4rem 0.7rem; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.95em; }
"""


def write_report(
    out_html: Path, title: str, metrics: dict[str, Any], images: dict[str, Path], info: dict[str, Any]
) -> None:
    """Write the report atomically to `out_html`.

    metrics: the output of `evaluate_predictions` (or metrics.json read back);
    images: caption -> image file (PNG, JPEG or SVG), shown in that order;
    info: label -> value rows of the first table (run, model, data, split, n images, date, ...).
    """
    body = [f"<h1>{escape(title)}</h1>", _info_section(info), _metrics_section(metrics),
            _site_section(metrics.get("site_check")), _external_section(metrics.get("external")), _intervals_section(metrics), _calibration_section(metrics),
            _images_section(images)]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )
    write_text(out_html, page)


# --- tables ---------------------------------------------------------------------------------


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; header texts are escaped here, row cells must already be HTML."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def _value_cells(entry: Mapping[str, Any]) -> list[str]:
    """[value, CI] cells for one {"value", "ci95"} entry."""
    lo, hi = entry["ci95"]
    lo, hi = format_metric(lo), format_metric(hi)
    ci = "n/a" if "n/a" in (lo, hi) else f"{lo} &ndash; {hi}"
    return [format_metric(entry["value"]), f'<span class="ci">{ci}</span>']


def _matrix_table(cm: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """Confusion matrix, rows = true class, columns = predicted class."""
    header = ["true \\ predicted", *labels]
    rows = [[escape(label), *(str(int(c)) for c in row)] for label, row in zip(labels, cm)]
    return html_table(header, rows)


def _info_section(info: Mapping[str, Any]) -> str:
    if not info:
        return ""
    rows = [[escape(str(key)), escape(str(value))] for key, value in info.items()]
    return "<h2>Run</h2>\n" + html_table(["", ""], rows)


# --- metrics --------------------------------------------------------------------------------


def _metrics_section(metrics: Mapping[str, Any]) -> str:
    if metrics.get("task") == "binary":
        return _binary_section(metrics)
    return _multiclass_section(metrics)


def _binary_section(metrics: Mapping[str, Any]) -> str:
    """Rates at 0.5 and at the chosen threshold side by side, then the confusion counts."""
    blocks = [metrics[key] for key in ("at_0.5", "at_threshold") if key in metrics]
    header = ["metric"]
    for block in blocks:
        header += [f"at threshold {block['threshold']:.3f}", "95% CI"]
    rates = [[name, *sum((_value_cells(b[name]) for b in blocks), [])] for name in BINARY_RATES]
    counts = [[name.upper(), *(str(b[name]) for b in blocks)] for name in CONFUSION_COUNTS]
    labels = metrics.get("confusion_labels", metrics["classes"])
    positive = escape(str(metrics["positive_class"]))
    at = metrics.get("confusion_threshold", 0.5)  # metrics.json of before it named its threshold: 0.5
    return (
        f"<h2>Metrics</h2>\n<p>{metrics['n']} images; positive class = {positive}.</p>\n"
        + html_table(header, rates)
        + "\n<h2>Confusion counts</h2>\n"
        + html_table(["count", *(h for h in header[1::2])], counts)
        + f"\n<p>Confusion matrix at threshold {at:.3f} (the threshold <code>predict</code> decides at):</p>\n"
        + _matrix_table(metrics["confusion_matrix"], labels)
        + _threshold_table(metrics.get("threshold_table"))
    )


def _threshold_table(table: Mapping[str, Any] | None) -> str:
    """Sensitivity, specificity, PPV, NPV at several thresholds, with the prevalence PPV and NPV assume."""
    if not table:
        return ""
    rows = [[f"{r['threshold']:.3f}" + (" (run)" if r.get("run_threshold") else ""),
             *(format_metric(r[k]) for k in ("sensitivity", "specificity", "ppv", "npv"))] for r in table["rows"]]
    return ("\n<h2>Threshold table</h2>\n"
            f"<p>PPV and NPV assume a prevalence of {format_metric(table['prevalence'])} (the share of positive "
            "images in the evaluated data); at another prevalence they differ, sensitivity and specificity "
            "do not.</p>\n" + html_table(["threshold", "sensitivity", "specificity", "PPV", "NPV"], rows))


def _site_section(check: Mapping[str, Any] | None) -> str:
    """evaluation/site.py's check: the run's sensitivity and specificity here against validation."""
    if not check:
        return ""
    rows = [[escape(name), format_metric(row["validation"]), *_value_cells({"value": row["here"],
                                                                          "ci95": row["ci95"]}),
             escape(row["status"])] for name, row in check["measures"].items()]
    css = "" if check["holds"] else ' class="warning"'
    return (f"<h2>Site check</h2>\n<p{css}>{escape(check['verdict'])}.</p>\n"
            f"<p>At the run's threshold {check['threshold']:.3f}; {escape(check['rule'])}.</p>\n"
            + html_table(["measure", "validation", "here", "95% CI", "status"], rows))


def _external_section(block: Mapping[str, Any] | None) -> str:
    """`train --external`: the run on another source's images (meta.json's block), beside validation."""
    if not block:
        return ""
    validation = block.get("validation", {})
    rows = [[escape(name), format_metric(validation.get(name)), *_value_cells(block[name])]
            for name in ("roc_auc", "accuracy", "sensitivity", "specificity")]
    warnings = "".join(f'<p class="warning">{escape(w)}.</p>\n' for w in block["warnings"])
    where = f"{block['evaluated_on']}, {block['n']} images; details in {block['metrics']}"
    return (f"<h2>External data</h2>\n{warnings}<p>{escape(where)}.</p>\n"
            + html_table(["measure", "validation", "external", "95% CI"], rows))


def _intervals_section(metrics: Mapping[str, Any]) -> str:
    """How each 95% interval was computed."""
    intervals = metrics.get("intervals")
    if not intervals:
        return ""
    return ("<h2>Intervals</h2>\n<p>95% intervals. Accuracy, sensitivity, specificity, precision (PPV) and NPV: "
            f"{escape(intervals['proportions'])}. F1, the AUCs and the macro means: "
            f"{escape(intervals['others'])}.</p>")


def _calibration_section(metrics: Mapping[str, Any]) -> str:
    """ECE, Brier score and log loss before (T = 1) and after temperature scaling."""
    calibration = metrics.get("calibration")
    if not calibration:
        return ""
    rows = [[name, format_metric(calibration["before"][key]), format_metric(calibration["after"][key])]
            for key, name in (("ece", "ECE"), ("brier", "Brier score"), ("log_loss", "log loss"))]
    return ("<h2>Calibration</h2>\n"
            f"<p>Temperature scaling, T = {calibration['temperature']:.3f} (fitted on the "
            f"{escape(str(calibration.get('fitted_on', 'validation split')))}). "
            f"ECE over {escape(calibration['ece_binning'])}; Brier score: "
            f"{escape(calibration['brier_definition'])}. Lower is better for all three.</p>\n"
            + html_table(["measure", "before (T = 1)", f"after (T = {calibration['temperature']:.3f})"], rows))


def _multiclass_section(metrics: Mapping[str, Any]) -> str:
    """Overall rates, a per-class table (value and CI per cell), then the confusion matrix."""
    overall = [[name, *_value_cells(metrics["overall"][name])] for name in OVERALL_RATES]
    per_class = [
        [escape(str(name)), *("<br>".join(_value_cells(entry[rate])) for rate in PER_CLASS_RATES)]
        for name, entry in metrics["per_class"].items()
    ]
    return (
        f"<h2>Metrics</h2>\n<p>{metrics['n']} images, {len(metrics['classes'])} classes.</p>\n"
        + html_table(["metric", "value", "95% CI"], overall)
        + "\n<h2>Per class (one-vs-rest)</h2>\n"
        + html_table(["class", *PER_CLASS_RATES], per_class)
        + "\n<h2>Confusion matrix</h2>\n"
        + _matrix_table(metrics["confusion_matrix"], metrics["classes"])
    )


# --- images ---------------------------------------------------------------------------------


def _data_uri(path: Path) -> str:
    """The image file as a data: URI, so the report needs no other file."""
    path = Path(path)
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise UltrasonicError(f"{path}: cannot embed a {path.suffix or 'suffix-less'} file; use PNG, JPEG or SVG")
    if not path.is_file():
        raise UltrasonicError(f"{path}: image not found; draw the figures before writing the report")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _images_section(images: Mapping[str, Path]) -> str:
    figures = [
        f'<figure><img src="{_data_uri(path)}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for caption, path in images.items()
    ]
    return "<h2>Figures</h2>\n" + "\n".join(figures) if figures else ""
