"""Point metrics of a classifier: pure functions on labels and predicted probabilities.

numpy in, plain Python out; their intervals and the metrics.json object are
summary.py's, the operating thresholds thresholds.py's:

    binary_metrics(y_true, p_pos, threshold=0.37)    # accuracy, sensitivity, ..., tp, tn, fp, fn
    multiclass_metrics(y_true, probs, classes)       # per class one-vs-rest, macro means, confusion

Vocabulary: sensitivity = recall = true positive rate, specificity = true
negative rate, precision = positive predictive value (PPV), npv = negative
predictive value. A ratio whose denominator is zero is `nan`, never 0.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ultrasonic.errors import ConfigError, DataError
from ultrasonic.evaluation.intervals import is_number

# Rates reported with a confidence interval; tp/tn/fp/fn are reported as plain counts.
BINARY_RATES = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1", "roc_auc", "pr_auc")
CONFUSION_COUNTS = ("tp", "tn", "fp", "fn")
PER_CLASS_RATES = ("sensitivity", "specificity", "precision", "npv", "f1", "roc_auc")
OVERALL_RATES = (
    "accuracy", "macro_sensitivity", "macro_specificity", "macro_precision", "macro_f1", "macro_roc_auc",
)


# --- input checks ---------------------------------------------------------------------------


def check_binary(y_true: Any, p_pos: Any) -> tuple[np.ndarray, np.ndarray]:
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


def check_multiclass(y_true: Any, probs: Any, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
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
    y, p = check_binary(y_true, p_pos)
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
    y, p = check_multiclass(y_true, probs, classes)
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


# --- output ---------------------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """True for a metric with no value: None (null in metrics.json) or nan."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_metric(value: Any) -> str:
    """A metric value with three decimals, as every report, figure and summary line shows it; nan/null -> n/a."""
    return "n/a" if is_missing(value) else f"{value:.3f}"
