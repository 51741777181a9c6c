"""The metrics.json object: every metric of one split with its 95 % interval and how it was computed.

    metrics = evaluate_predictions(y_true, probs, ["NORMAL", "PNEUMONIA"], threshold=0.37)
    write_metrics_json("run/eval/metrics.json", metrics)
    headline(metrics)      # {"roc_auc": {"value", "ci95"}, "accuracy": ..., "sensitivity": ..., "specificity": ...}
    for line in summary_lines(metrics):
        ...
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from ultrasonic.atomic import write_json
from ultrasonic.errors import ConfigError
from ultrasonic.evaluation.intervals import bootstrap_ci, n_groups, proportion_ci
from ultrasonic.evaluation.metrics import (
    BINARY_RATES, CONFUSION_COUNTS, OVERALL_RATES, PER_CLASS_RATES, binary_metrics, check_multiclass,
    format_metric, is_missing, multiclass_metrics,
)
from ultrasonic.evaluation.thresholds import threshold_table

# The proportions, as (successes, trials) of the confusion counts: they get exact binomial intervals.
PROPORTIONS = {
    "accuracy": lambda tp, tn, fp, fn: (tp + tn, tp + tn + fp + fn),
    "sensitivity": lambda tp, tn, fp, fn: (tp, tp + fn),
    "specificity": lambda tp, tn, fp, fn: (tn, tn + fp),
    "precision": lambda tp, tn, fp, fn: (tp, tp + fp),
    "npv": lambda tp, tn, fp, fn: (tn, tn + fn),
}
EXACT = "exact binomial (Clopper-Pearson), from the counts"


def evaluate_predictions(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    threshold: float | None = None,
    positive_index: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """All metrics of one split, with 95% intervals: the content of eval/metrics.json.

    y_true: class indices (N,); probs: class probabilities (N, K). With two classes the
    task is binary (positive = classes[positive_index]) and metrics are given at 0.5 and,
    if `threshold` is given and differs, at that threshold too; the confusion matrix is
    at `threshold` (the one `predict` decides at). Proportions (accuracy, sensitivity,
    specificity, precision, npv) get exact binomial intervals; the others (f1, AUCs,
    macro means) the percentile bootstrap, of `groups` (patient ids, one per case) when
    given, stratified by class. n_boot=0 skips the bootstrap (those ci95 are [nan, nan]).
    """
    y, p = check_multiclass(y_true, probs, classes)
    if n_boot < 0:
        raise ConfigError(f"n_boot must be >= 0; got {n_boot}")
    counts = {name: int(np.sum(y == i)) for i, name in enumerate(classes)}
    boot = _Bootstrap(n_boot, seed, groups)
    common = {"n": len(y), "classes": list(classes), "counts": counts,
              "intervals": {"level": 0.95, "proportions": EXACT, "others": boot.method(len(y))}}
    if len(classes) == 2:
        return _evaluate_binary(y, p, list(classes), threshold, positive_index, boot, common)
    return _evaluate_multiclass(y, p, list(classes), boot, common)


class _Bootstrap:
    """The bootstrap settings of one evaluation: how many resamples, the seed, the patients."""

    def __init__(self, n_boot: int, seed: int, groups: Sequence[Any] | None):
        self.n_boot, self.seed, self.groups = n_boot, seed, groups

    def __call__(self, metric_fn, y: np.ndarray, scores: np.ndarray) -> dict[str, tuple[float, float]]:
        if self.n_boot == 0:
            return {}
        return bootstrap_ci(metric_fn, y, scores, n_boot=self.n_boot, seed=self.seed, groups=self.groups,
                            stratify=True)

    def method(self, n: int) -> str:
        if self.n_boot == 0:
            return "none (n_boot = 0)"
        what = f"{n_groups(self.groups, n)} patients" if self.groups is not None else f"{n} images"
        return f"percentile bootstrap, {self.n_boot} resamples of the {what}, stratified by class"


def _evaluate_binary(
    y: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float | None,
    positive_index: int, boot: _Bootstrap, common: dict[str, Any],
) -> dict[str, Any]:
    if positive_index not in (0, 1):
        raise ConfigError(f"positive_index must be 0 or 1 for two classes; got {positive_index}")
    y_pos, p_pos = (y == positive_index).astype(int), probs[:, positive_index]
    result = {"task": "binary", **common, "positive_class": classes[positive_index]}
    result["at_0.5"] = _binary_block(y_pos, p_pos, 0.5, boot)
    if threshold is not None and threshold != 0.5:
        result["at_threshold"] = _binary_block(y_pos, p_pos, float(threshold), boot)
    decided = result.get("at_threshold", result["at_0.5"])  # where `predict` decides
    # Rows are true [negative, positive], columns predicted, whatever positive_index is.
    result["confusion_matrix"] = [[decided["tn"], decided["fp"]], [decided["fn"], decided["tp"]]]
    result["confusion_threshold"] = decided["threshold"]
    result["confusion_labels"] = [classes[1 - positive_index], classes[positive_index]]
    result["threshold_table"] = threshold_table(y_pos, p_pos, threshold)
    return result


def _binary_block(y_pos: np.ndarray, p_pos: np.ndarray, threshold: float, boot: _Bootstrap) -> dict:
    """{rate: {"value", "ci95", "ci_method"}} plus plain tp/tn/fp/fn and the threshold."""
    point = binary_metrics(y_pos, p_pos, threshold)
    ci = boot(lambda y, s: binary_metrics(y, s, threshold), y_pos, p_pos)
    counts = tuple(point[name] for name in CONFUSION_COUNTS)
    block: dict[str, Any] = {name: _interval(point[name], ci.get(name), PROPORTIONS.get(name), counts)
                             for name in BINARY_RATES}
    block.update({name: point[name] for name in CONFUSION_COUNTS})
    block["threshold"] = threshold
    return block


def _interval(value: float, ci: tuple[float, float] | None, proportion: Callable | None,
              counts: tuple[int, int, int, int]) -> dict[str, Any]:
    """{"value", "ci95", "ci_method"}: exact for a proportion of the counts, else the bootstrap's."""
    if proportion is None:
        return {**_value_ci(value, ci), "ci_method": "bootstrap"}
    successes, trials = proportion(*counts)
    return {"value": float(value), "ci95": list(proportion_ci(successes, trials)), "ci_method": "exact",
            "count": [int(successes), int(trials)]}


def _evaluate_multiclass(
    y: np.ndarray, probs: np.ndarray, classes: list[str], boot: _Bootstrap, common: dict[str, Any],
) -> dict[str, Any]:
    point = multiclass_metrics(y, probs, classes)
    ci = boot(lambda yy, pp: _flat_multiclass(yy, pp, classes), y, probs)
    cm = np.asarray(point["confusion_matrix"])
    overall = {name: _value_ci(point[name], ci.get(name)) | {"ci_method": "bootstrap"} for name in OVERALL_RATES}
    overall["accuracy"] = _interval(point["accuracy"], None, PROPORTIONS["accuracy"],
                                    (int(np.trace(cm)), 0, len(y) - int(np.trace(cm)), 0))
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(cm[i, i])
        fn, fp = int(cm[i].sum()) - tp, int(cm[:, i].sum()) - tp
        counts = (tp, len(y) - tp - fn - fp, fp, fn)
        per_class[name] = {rate: _interval(point["per_class"][name][rate], ci.get(f"per_class.{i}.{rate}"),
                                           PROPORTIONS.get(rate), counts) for rate in PER_CLASS_RATES}
    return {"task": "multiclass", **common, "overall": overall, "per_class": per_class,
            "confusion_matrix": point["confusion_matrix"]}


def _flat_multiclass(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """multiclass_metrics as one flat dict of floats; per-class keys use the class index."""
    m = multiclass_metrics(y, probs, classes)
    flat = {name: m[name] for name in OVERALL_RATES}
    for i, name in enumerate(classes):
        flat.update({f"per_class.{i}.{rate}": v for rate, v in m["per_class"][name].items()})
    return flat


def _value_ci(value: float, ci: tuple[float, float] | None) -> dict[str, Any]:
    lo, hi = ci if ci is not None else (float("nan"), float("nan"))
    return {"value": float(value), "ci95": [lo, hi]}


HEADLINE = ("roc_auc", "accuracy", "sensitivity", "specificity")


def headline(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The four figures a run is judged by, each {"value", "ci95"}: binary at the decision threshold (where
    `predict` decides), more classes their macro means (macro_roc_auc, ...) and accuracy."""
    if metrics.get("task") == "binary":
        block = metrics.get("at_threshold", metrics["at_0.5"])
        return {name: {"value": block[name]["value"], "ci95": block[name]["ci95"]} for name in HEADLINE}
    overall = metrics["overall"]
    return {name: {"value": overall[key]["value"], "ci95": overall[key]["ci95"]}
            for name, key in zip(HEADLINE, ("macro_roc_auc", "accuracy", "macro_sensitivity", "macro_specificity"))}


# --- output ---------------------------------------------------------------------------------


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """Short human-readable lines for the CLI, from `evaluate_predictions` output or its JSON.

    e.g. "accuracy 0.912 (95% CI 0.889-0.934)" and "TP 180  TN 120  FP 14  FN 10 (positive = PNEUMONIA)".
    """
    if metrics.get("task") == "binary":
        lines = []
        for key in ("at_0.5", "at_threshold"):
            if key in metrics:
                lines += _binary_summary(metrics[key], metrics["positive_class"])
        return lines
    lines = [_metric_line(name, metrics["overall"][name]) for name in OVERALL_RATES]
    for name, per in metrics["per_class"].items():
        rates = "  ".join(f"{rate} {format_metric(per[rate]['value'])}" for rate in ("sensitivity", "specificity", "f1"))
        lines.append(f"{name}: {rates}")
    return lines


def _binary_summary(block: dict[str, Any], positive_class: str) -> list[str]:
    lines = [f"at threshold {block['threshold']:.3f}:"]
    lines += [f"  {_metric_line(name, block[name])}" for name in BINARY_RATES]
    counts = "  ".join(f"{name.upper()} {block[name]}" for name in CONFUSION_COUNTS)
    lines.append(f"  {counts} (positive = {positive_class})")
    return lines


def _metric_line(name: str, entry: dict[str, Any]) -> str:
    lo, hi = entry["ci95"]
    if is_missing(lo) or is_missing(hi):
        return f"{name} {format_metric(entry['value'])}"
    return f"{name} {format_metric(entry['value'])} (95% CI {format_metric(lo)}-{format_metric(hi)})"


def write_metrics_json(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Write `metrics` atomically as JSON; nan and infinity become null (JSON has neither)."""
    write_json(path, json_safe(metrics))


def json_safe(value: Any) -> Any:
    """Copy of `value` with numpy values made plain and non-finite floats made None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
