"""Classification metrics for medical images, with bootstrap confidence intervals.

Pure functions on labels and predicted probabilities (numpy in, plain Python
out). `evaluate_predictions` builds the object saved as `eval/metrics.json`:

    metrics = evaluate_predictions(y_true, probs, ["NORMAL", "PNEUMONIA"], threshold=0.37)
    write_metrics_json("run/eval/metrics.json", metrics)
    for line in summary_lines(metrics):
        ...

Vocabulary: sensitivity = recall = true positive rate, specificity = true
negative rate, precision = positive predictive value (PPV), npv = negative
predictive value. A ratio whose denominator is zero is `nan`, never 0.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import roc_curve

from ultrasonic.atomic import write_json
from ultrasonic.evaluation.intervals import bootstrap_ci, is_number, n_groups, proportion_ci
from ultrasonic.errors import ConfigError, DataError

# Rates reported with a confidence interval; tp/tn/fp/fn are reported as plain counts.
BINARY_RATES = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1", "roc_auc", "pr_auc")
CONFUSION_COUNTS = ("tp", "tn", "fp", "fn")
PER_CLASS_RATES = ("sensitivity", "specificity", "precision", "npv", "f1", "roc_auc")
OVERALL_RATES = (
    "accuracy", "macro_sensitivity", "macro_specificity", "macro_precision", "macro_f1", "macro_roc_auc",
)
# The proportions, as (successes, trials) of the confusion counts: they get exact binomial intervals.
PROPORTIONS = {
    "accuracy": lambda tp, tn, fp, fn: (tp + tn, tp + tn + fp + fn),
    "sensitivity": lambda tp, tn, fp, fn: (tp, tp + fn),
    "specificity": lambda tp, tn, fp, fn: (tn, tn + fp),
    "precision": lambda tp, tn, fp, fn: (tp, tp + fp),
    "npv": lambda tp, tn, fp, fn: (tn, tn + fn),
}
EXACT = "exact binomial (Clopper-Pearson), from the counts"
# The thresholds of the report's threshold table, besides the run's own.
TABLE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# --- input checks ---------------------------------------------------------------------------


def _check_binary(y_true: Any, p_pos: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels as int 0/1, probabilities as float), or raise one DataError."""
    y = np.asarray(y_true)
    p = np.asarray(p_pos, dtype=float)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p) or len(y) == 0:
        raise DataError(
            f"labels {y.shape} and positive-class probabilities {p.shape} must be two 1-D arrays "
            "of the same non-zero length"
        )
    if not np.isin(y, (0, 1)).all():
        raise DataError("binary labels must be 0 (negative) or 1 (positive); map class indices first")
    if not np.isfinite(p).all():
        raise DataError("probabilities contain NaN or infinity; check the model's output")
    return y.astype(int), p


def _check_multiclass(y_true: Any, probs: Any, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels as int class indices, probabilities (N, K)), or raise one DataError."""
    _check_classes(classes)
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=float)
    if y.ndim != 1 or p.ndim != 2 or len(y) != len(p) or len(y) == 0 or p.shape[1] != len(classes):
        raise DataError(
            f"labels {y.shape} and probabilities {p.shape} do not match {len(classes)} classes: "
            "expected labels (N,) and probabilities (N, K) with K = number of classes"
        )
    if not np.isin(y, np.arange(len(classes))).all():
        raise DataError(f"labels must be class indices 0..{len(classes) - 1}; found {sorted(set(y.tolist()))}")
    if not np.isfinite(p).all():
        raise DataError("probabilities contain NaN or infinity; check the model's output")
    return y.astype(int), p


def _check_classes(classes: Sequence[str]) -> None:
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"classes must be at least two distinct names; got {list(classes)}")


def _check_threshold(threshold: float) -> None:
    if not (is_number(threshold) and 0.0 <= threshold <= 1.0):
        raise ConfigError(f"threshold must be a number in [0, 1]; got {threshold!r}")


# --- building blocks ------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    """num / den, or nan when the ratio is undefined (0/0 and x/0)."""
    return float(num) / float(den) if den else float("nan")


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of `scores`; tied scores share the mean of their ranks."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2.0)[inverse]


def _roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (equals sklearn's roc_auc_score).

    Written in numpy because the bootstrap calls it thousands of times.
    """
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(scores)[y.astype(bool)].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Average precision, sum over thresholds of (recall step) x precision (equals sklearn's)."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    ranked_scores, ranked_y = scores[order], y[order]
    # One point per distinct score: the last position holding that score.
    cut = np.r_[np.flatnonzero(np.diff(ranked_scores)), len(y) - 1]
    tp = np.cumsum(ranked_y)[cut]
    precision = tp / (cut + 1.0)
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_step * precision))


def _rates(tp: int, tn: int, fp: int, fn: int) -> dict[str, float]:
    """The one-class rates from confusion counts (nan where undefined)."""
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


# --- point metrics --------------------------------------------------------------------------


def binary_metrics(y_true: Any, p_pos: Any, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of a binary classifier; a case is predicted positive when p_pos >= threshold.

    y_true: 0/1 labels (1 = positive class); p_pos: probability of the positive class.
    Returns accuracy, sensitivity, specificity, precision, npv, f1, roc_auc, pr_auc
    (average precision), tp, tn, fp, fn and threshold. Undefined ratios are nan;
    the AUCs are nan when only one class is present.
    """
    _check_threshold(threshold)
    y, p = _check_binary(y_true, p_pos)
    pred = p >= threshold
    truth = y == 1
    tp, tn = int(np.sum(pred & truth)), int(np.sum(~pred & ~truth))
    fp, fn = int(np.sum(pred & ~truth)), int(np.sum(~pred & truth))
    return {
        "accuracy": _ratio(tp + tn, len(y)),
        **_rates(tp, tn, fp, fn),
        "roc_auc": _roc_auc(y, p),
        "pr_auc": _average_precision(y, p),
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        "threshold": float(threshold),
    }


def multiclass_metrics(y_true: Any, probs: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of a K-class classifier; the prediction is the most probable class.

    Per class (one-vs-rest): sensitivity, specificity, precision, npv, f1, roc_auc.
    Macro values are the mean over classes where the value is defined (a class absent
    from a bootstrap sample has no sensitivity and is left out, not counted as 0).
    confusion_matrix is K x K, rows = true class, columns = predicted class.
    """
    y, p = _check_multiclass(y_true, probs, classes)
    k = len(classes)
    cm = np.bincount(y * k + p.argmax(axis=1), minlength=k * k).reshape(k, k)
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(cm[i, i])
        fn, fp = int(cm[i].sum()) - tp, int(cm[:, i].sum()) - tp
        per_class[name] = {**_rates(tp, len(y) - tp - fn - fp, fp, fn), "roc_auc": _roc_auc(y == i, p[:, i])}
    result: dict[str, Any] = {"accuracy": _ratio(np.trace(cm), len(y)), "per_class": per_class}
    for rate in ("sensitivity", "specificity", "precision", "f1", "roc_auc"):
        result[f"macro_{rate}"] = _nanmean([m[rate] for m in per_class.values()])
    result["confusion_matrix"] = cm.tolist()
    return result


def _nanmean(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def choose_threshold(y_true: Any, p_pos: Any) -> float:
    """The operating threshold that maximises Youden's J = sensitivity + specificity - 1.

    Use it on the validation split, never the test split. Ties go to the threshold
    closest to 0.5. Always a finite float in [0, 1].

        t = choose_threshold(y_val, p_val)   # then binary_metrics(y_test, p_test, t)
    """
    y, p = _check_binary(y_true, p_pos)
    if y.min() == y.max():
        raise DataError(
            "cannot choose a threshold: the validation split has only one class; "
            "it needs both positive and negative images"
        )
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # sklearn's first threshold is inf ("predict nothing positive"); it is never a usable answer.
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    youden = tpr - fpr
    best = np.flatnonzero(youden >= youden.max() - 1e-12)
    chosen = thresholds[best[np.argmin(np.abs(thresholds[best] - 0.5))]]
    return float(np.clip(chosen, 0.0, 1.0))


def threshold_for_sensitivity(y_true: Any, p_pos: Any, target: float) -> float:
    """The highest threshold whose sensitivity is at least `target`: the most specific that keeps it.

        threshold_for_sensitivity(y_val, p_val, 0.95)   # screening: miss at most 1 in 20
    """
    y, p = _check_binary(y_true, p_pos)
    positives = np.sort(p[y == 1])[::-1]
    if len(positives) == 0:
        raise DataError("cannot choose a threshold for a sensitivity: the validation split has no positive image")
    needed = max(1, math.ceil(target * len(positives) - 1e-9))  # positives at or above the threshold
    return float(positives[needed - 1])


def threshold_for_specificity(y_true: Any, p_pos: Any, target: float) -> float:
    """The lowest threshold whose specificity is at least `target`: the most sensitive that keeps it.

    The threshold is the next score above the last negative that must stay below it
    (so that image is the first called positive), or just above it if none is higher.
    """
    y, p = _check_binary(y_true, p_pos)
    negatives = np.sort(p[y == 0])
    if len(negatives) == 0:
        raise DataError("cannot choose a threshold for a specificity: the validation split has no negative image")
    below = math.ceil(target * len(negatives) - 1e-9)  # negatives strictly below the threshold
    if below == 0:
        return float(max(0.0, p.min()))
    highest_below = negatives[below - 1]
    above = p[p > highest_below]
    return float(above.min()) if len(above) else float(min(1.0, np.nextafter(highest_below, np.inf)))


def operating_threshold(y_true: Any, p_pos: Any, point: tuple[str, float | None]) -> tuple[float, str]:
    """(threshold, how it was chosen) for an operating point of config.parse_operating_point.

        operating_threshold(y_val, p_val, ("sensitivity", 0.95))   # (0.21, "sensitivity >= 0.95 on ...")
    """
    kind, value = point
    if kind == "youden":
        return choose_threshold(y_true, p_pos), "Youden's J on the validation split"
    if kind == "sensitivity":
        return threshold_for_sensitivity(y_true, p_pos, value), f"sensitivity >= {value:g} on the validation split"
    if kind == "specificity":
        return threshold_for_specificity(y_true, p_pos, value), f"specificity >= {value:g} on the validation split"
    if kind == "threshold":
        return float(value), f"fixed threshold {value:g}"
    raise ConfigError(f"operating point {kind!r} is not one of youden, sensitivity=, specificity=, threshold=")


# --- the metrics.json object ----------------------------------------------------------------


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
    y, p = _check_multiclass(y_true, probs, classes)
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


def threshold_table(y_pos: Any, p_pos: Any, threshold: float | None = None) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and NPV at several thresholds, and the prevalence PPV and NPV assume.

    PPV and NPV depend on how common the disease is: they hold for data with this
    data's prevalence (positives / images), not for a clinic with another.
    """
    y, p = _check_binary(y_pos, p_pos)
    cuts = sorted({*TABLE_THRESHOLDS, *([float(threshold)] if threshold is not None else [])})
    rows = []
    for t in cuts:
        m = binary_metrics(y, p, t)
        rows.append({"threshold": t, "sensitivity": m["sensitivity"], "specificity": m["specificity"],
                     "ppv": m["precision"], "npv": m["npv"], "run_threshold": threshold is not None and t == threshold})
    return {"prevalence": float(y.mean()), "rows": rows}


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
    if _is_missing(lo) or _is_missing(hi):
        return f"{name} {format_metric(entry['value'])}"
    return f"{name} {format_metric(entry['value'])} (95% CI {format_metric(lo)}-{format_metric(hi)})"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_metric(value: Any) -> str:
    """A metric value with three decimals, as every report, figure and summary line shows it; nan/null -> n/a."""
    return "n/a" if _is_missing(value) else f"{value:.3f}"


def write_metrics_json(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Write `metrics` atomically as JSON; nan and infinity become null (JSON has neither)."""
    write_json(path, _json_safe(metrics))


def _json_safe(value: Any) -> Any:
    """Copy of `value` with numpy values made plain and non-finite floats made None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
