"""Calibration: does a probability of 0.8 come true 8 times in 10? Temperature scaling and its measures.

Pure functions on labels and probabilities (or logits), numpy in, plain Python out:

    t = fit_temperature(val_logits, y_val)          # one T; probabilities of logits / T
    ece(y, probs)                                   # expected calibration error, 15 equal-width bins
    raw = uncalibrated(probs, t)                    # the probabilities the network gave before T

Conventions. `probs` are (N, K) class probabilities (a binary model's two
columns [1 - p, p]); a binary model's logits are (N,) or (N, 1), of the
positive class. ECE and the reliability diagram bin the top-label confidence
(the largest probability, whether its class is right; Guo et al. 2017). The
Brier score of a binary model is the mean squared error of the positive-class
probability; of K classes, the sum over classes of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ultrasonic.errors import DataError

ECE_BINS = 15
BINNING = f"{ECE_BINS} equal-width bins of the top-label confidence (largest class probability)"
TEMPERATURE_BOUNDS = (0.05, 20.0)
EPS = 1e-15  # probabilities are clipped to [EPS, 1 - EPS] in the log loss, as scikit-learn did


def fit_temperature(logits: Any, y_true: Any, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature T that minimises the negative log-likelihood of softmax(logits / T) on (logits, y).

    Why one number: it changes how sure the model is, never its ranking of
    images (so AUC and the decision at argmax stay), and cannot over-fit a
    validation split of a few hundred images. Fitted on validation, never test.

        fit_temperature([[4.0], [-4.0], [4.0]], [1, 0, 0])   # > 1: the model was too sure
    """
    from scipy.optimize import minimize_scalar

    z, y = _check_logits(logits, y_true)
    found = minimize_scalar(lambda t: _nll(z / t, y), bounds=bounds, method="bounded",
                            options={"xatol": 1e-5})
    return float(found.x)


def _check_logits(logits: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float64 logits (a binary column becomes [0, z]) and int labels, or one DataError."""
    z = np.asarray(logits, dtype=float)
    z = z[:, None] if z.ndim == 1 else z
    y = np.asarray(y_true)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0 or y.ndim != 1:
        raise DataError(f"logits {z.shape} and labels {y.shape} must be (N, K) or (N,) and (N,), N > 0")
    if not np.isfinite(z).all():
        raise DataError("logits contain NaN or infinity; check the model's output")
    if z.shape[1] == 1:  # sigmoid(z) is softmax([0, z])
        z = np.concatenate([np.zeros_like(z), z], axis=1)
    if not np.isin(y, np.arange(z.shape[1])).all():
        raise DataError(f"labels must be class indices 0..{z.shape[1] - 1}; found {sorted(set(y.tolist()))}")
    return z, y.astype(int)


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of softmax(z), computed stably from the logits."""
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_norm - shifted[np.arange(len(y)), y]))


def uncalibrated(probs: Any, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling, from the calibrated ones: softmax(T * log p).

    log p = z / T - c for every class, so T * log p = z - T c: the softmax of it is
    softmax(z). For a binary model this is sigmoid(T * logit(p)).
    """
    p = np.clip(_check_probs(probs), 1e-300, None)
    z = float(temperature) * np.log(p)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_probs(probs: Any) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2 or len(p) == 0:
        raise DataError(f"probabilities {p.shape} must be (N, K) with N > 0 and K >= 2 classes")
    if not np.isfinite(p).all():
        raise DataError("probabilities contain NaN or infinity; check the model's output")
    return p


def _check(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _check_probs(probs)
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) != len(p) or not np.isin(y, np.arange(p.shape[1])).all():
        raise DataError(f"labels {y.shape} must be class indices 0..{p.shape[1] - 1}, one per row of "
                        f"probabilities {p.shape}")
    return y.astype(int), p


def log_loss(y_true: Any, probs: Any) -> float:
    """Mean -log p(true class); probabilities clipped to [1e-15, 1 - 1e-15] so a sure mistake is finite."""
    y, p = _check(y_true, probs)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1 - EPS))))


def brier(y_true: Any, probs: Any) -> float:
    """Mean squared error of the probabilities: of the positive class (binary), summed over classes (K > 2)."""
    y, p = _check(y_true, probs)
    if p.shape[1] == 2:
        return float(np.mean((p[:, 1] - (y == 1)) ** 2))
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)))


def reliability_bins(y_true: Any, probs: Any, n_bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """One row per equal-width bin of the top-label confidence: lower, upper, count, confidence, accuracy.

    Bin k holds confidences in (k/n, (k+1)/n], the first also 0. Confidence and
    accuracy (the share whose top class is the true one) are the bin's means;
    nan in an empty bin.
    """
    y, p = _check(y_true, probs)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    rows = []
    for k in range(n_bins):
        inside = which == k
        count = int(inside.sum())
        rows.append({"lower": float(edges[k]), "upper": float(edges[k + 1]), "count": count,
                     "confidence": float(confidence[inside].mean()) if count else float("nan"),
                     "accuracy": float(correct[inside].mean()) if count else float("nan")})
    return rows


def ece(y_true: Any, probs: Any, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (share of images) x |accuracy - confidence|."""
    rows = reliability_bins(y_true, probs, n_bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]))


def calibration_metrics(y_true: Any, probs: Any) -> dict[str, float]:
    """ECE, Brier score and log loss of one set of probabilities."""
    return {"ece": ece(y_true, probs), "brier": brier(y_true, probs), "log_loss": log_loss(y_true, probs)}


def calibration_report(y_true: Any, probs: Any, temperature: float) -> dict[str, Any]:
    """The metrics.json block: the temperature, the binning, and the measures before (T = 1) and after."""
    before = uncalibrated(probs, temperature)
    return {"temperature": float(temperature), "ece_binning": BINNING,
            "brier_definition": "mean squared error of the positive-class probability (binary); summed over classes (K > 2)",
            "before": calibration_metrics(y_true, before), "after": calibration_metrics(y_true, probs),
            "bins": reliability_bins(y_true, probs), "bins_before": reliability_bins(y_true, before)}
