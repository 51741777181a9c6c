"""Two models on the same images: is one better? DeLong's test for the ROC-AUCs, McNemar's for the decisions.

    auc = delong_test(y, p_a, p_b)        # {"auc_a", "auc_b", "difference", "ci95", "z", "p_value"}
    dec = mcnemar_test(y, p_a >= t_a, p_b >= t_b)   # {"a_only_right", "b_only_right", "p_value"}

Both are paired: they use that the same cases were scored twice, which is why they
see differences that two separate intervals overlapping would hide.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ultrasonic.errors import DataError


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    sorted_x = x[order]
    start = 0
    for end in np.r_[np.flatnonzero(np.diff(sorted_x)) + 1, len(x)]:
        ranks[order[start:end]] = (start + end + 1) / 2.0
        start = end
    return ranks


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components V10 (per positive) and V01 (per negative); Sun & Xu 2014."""
    pos, neg = scores[y == 1], scores[y == 0]
    m, n = len(pos), len(neg)
    all_ranks = _midranks(np.r_[pos, neg])
    pos_ranks, neg_ranks = _midranks(pos), _midranks(neg)
    v10 = (all_ranks[:m] - pos_ranks) / n
    v01 = 1.0 - (all_ranks[m:] - neg_ranks) / m
    return float(v10.mean()), v10, v01


def delong_test(y_true: Any, scores_a: Any, scores_b: Any, alpha: float = 0.05) -> dict[str, Any]:
    """DeLong's test of AUC(a) = AUC(b) for two scores of the same cases, with a CI of the difference."""
    from scipy.stats import norm

    y, a, b = _check_paired(y_true, scores_a, scores_b)
    if len(np.unique(y)) < 2:
        raise DataError("DeLong's test needs both classes among the images")
    auc_a, v10_a, v01_a = _placements(y, a)
    auc_b, v10_b, v01_b = _placements(y, b)
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    cov = s10 / len(v10_a) + s01 / len(v01_a)
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = auc_a - auc_b
    se = float(np.sqrt(max(var, 0.0)))
    z = diff / se if se > 0 else 0.0
    p = float(2 * norm.sf(abs(z))) if se > 0 else 1.0
    half = float(norm.ppf(1 - alpha / 2)) * se
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": diff, "ci95": [diff - half, diff + half],
            "se": se, "z": float(z), "p_value": p, "n_positive": int(y.sum()), "n_negative": int(len(y) - y.sum())}


def mcnemar_test(y_true: Any, predicted_a: Any, predicted_b: Any) -> dict[str, Any]:
    """McNemar's exact test: do a and b make different numbers of mistakes on the same cases?"""
    from scipy.stats import binomtest

    y, pa, pb = _check_paired(y_true, predicted_a, predicted_b)
    right_a, right_b = pa.astype(int) == y, pb.astype(int) == y
    a_only, b_only = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    discordant = a_only + b_only
    p = float(binomtest(a_only, discordant, 0.5).pvalue) if discordant else 1.0
    return {"a_only_right": a_only, "b_only_right": b_only, "both_right": int(np.sum(right_a & right_b)),
            "both_wrong": int(np.sum(~right_a & ~right_b)), "p_value": p, "method": "McNemar, exact binomial"}


def _check_paired(y_true: Any, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, a, b = np.asarray(y_true).astype(int).ravel(), np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if not len(y) == len(a) == len(b) or len(y) == 0:
        raise DataError(f"a paired comparison needs the same non-zero number of labels and scores; "
                        f"got {len(y)}, {len(a)} and {len(b)}")
    if not np.isin(y, (0, 1)).all():
        raise DataError("a paired comparison needs 0/1 labels (1 = the positive class)")
    return y, a, b
