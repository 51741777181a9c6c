"""Operating thresholds, chosen on the validation split, and the report's threshold table.

    threshold, how = operating_threshold(y_val, p_val, ("sensitivity", 0.95))
    table = threshold_table(y_test, p_test, threshold)   # sensitivity, specificity, PPV, NPV per cut
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from ultrasonic.errors import ConfigError, DataError
from ultrasonic.evaluation.metrics import binary_metrics, check_binary

# The thresholds of the report's threshold table, besides the run's own.
TABLE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def choose_threshold(y_true: Any, p_pos: Any) -> float:
    """The operating threshold that maximises Youden's J = sensitivity + specificity - 1.

    Use it on the validation split, never the test split. Ties go to the threshold
    closest to 0.5. Always a finite float in [0, 1].

        t = choose_threshold(y_val, p_val)   # then binary_metrics(y_test, p_test, t)
    """
    y, p = check_binary(y_true, p_pos)
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
    y, p = check_binary(y_true, p_pos)
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
    y, p = check_binary(y_true, p_pos)
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


def threshold_table(y_pos: Any, p_pos: Any, threshold: float | None = None) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and NPV at several thresholds, and the prevalence PPV and NPV assume.

    PPV and NPV depend on how common the disease is: they hold for data with this
    data's prevalence (positives / images), not for a clinic with another.
    """
    y, p = check_binary(y_pos, p_pos)
    cuts = sorted({*TABLE_THRESHOLDS, *([float(threshold)] if threshold is not None else [])})
    rows = []
    for t in cuts:
        m = binary_metrics(y, p, t)
        rows.append({"threshold": t, "sensitivity": m["sensitivity"], "specificity": m["specificity"],
                     "ppv": m["precision"], "npv": m["npv"], "run_threshold": threshold is not None and t == threshold})
    return {"prevalence": float(y.mean()), "rows": rows}
