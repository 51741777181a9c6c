"""Cross-validation's estimate (`train --cv K`, OUT/cv.json): per fold the validation figures with their
intervals, across folds their spread, and the ROC-AUC of all out-of-fold predictions pooled.

One split's validation figure depends on which patients happened to land in it; k folds show how much.
Each fold's threshold is its own (chosen on its own validation split, as `train` does), so the pooled
figure is the ROC-AUC only, which needs no threshold.

    summary = cv_summary(folds, pooled_metrics, final="...")   # the cv.json object
    print(cv_line(summary))   # 5-fold CV ROC-AUC 0.981 +- 0.006 (min 0.972, max 0.989); pooled out-of-fold ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ultrasonic.evaluation.metrics import format_metric, is_missing
from ultrasonic.evaluation.summary import HEADLINE, headline

INTERVALS = ("95 %; ROC-AUC: percentile bootstrap of patients ('interval' says how many resamples of how many); "
             "binary accuracy, sensitivity and specificity: exact binomial (Clopper-Pearson) at the fold's own "
             "threshold")
SPREAD = "mean, sample standard deviation (n - 1), min and max of the per-fold values"


def fold_entry(k: int, run: str, metrics: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """One fold's row of cv.json: where its run is, what it validated on, its headline figures there."""
    return {"fold": k, "run": run, "images": metrics["n"], "counts": metrics["counts"],
            "threshold": threshold, **headline(metrics), "interval": metrics["intervals"]["others"]}


def cv_summary(folds: list[dict[str, Any]], pooled: dict[str, Any], final: str) -> dict[str, Any]:
    """The cv.json object: the folds, their spread per figure, the pooled out-of-fold ROC-AUC."""
    across = {}
    for name in HEADLINE:
        values = np.array([f[name]["value"] for f in folds], dtype=float)
        if np.isnan(values).any():
            continue
        across[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                        "min": float(values.min()), "max": float(values.max())}
    auc = headline(pooled)["roc_auc"]
    return {"k": len(folds), "folds": folds, "across_folds": across, "spread": SPREAD,
            "pooled_out_of_fold": {"roc_auc": auc, "images": pooled["n"], "counts": pooled["counts"],
                                   "interval": pooled["intervals"]["others"]},
            "intervals": INTERVALS,
            "final_model": final}


def cv_line(summary: dict[str, Any]) -> str:
    """5-fold CV ROC-AUC 0.981 +- 0.006 (min 0.972, max 0.989); pooled out-of-fold 0.980 (95 % CI 0.97-0.99)."""
    auc = summary["across_folds"].get("roc_auc")
    spread = (f"{format_metric(auc['mean'])} +- {format_metric(auc['std'])} (min {format_metric(auc['min'])}, "
              f"max {format_metric(auc['max'])})" if auc else "n/a")
    pooled = summary["pooled_out_of_fold"]["roc_auc"]
    lo, hi = pooled["ci95"]
    ci = "" if is_missing(lo) or is_missing(hi) else f" (95 % CI {format_metric(lo)}-{format_metric(hi)})"
    return f"{summary['k']}-fold CV ROC-AUC {spread}; pooled out-of-fold {format_metric(pooled['value'])}{ci}"
