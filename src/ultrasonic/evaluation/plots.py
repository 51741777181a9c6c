"""Figures for a run: training curves, confusion matrix, ROC and precision-recall curves, reliability diagram.

Every figure is drawn off-screen (Agg backend, no display needed), written
atomically as PNG and closed, so a long evaluation never leaks figures:

    plot_history(run / "history.csv", run / "eval" / "history.png")
    plot_confusion_matrix(metrics["confusion_matrix"], classes, run / "eval" / "confusion.png")
    plot_roc(y_true, probs, classes, run / "eval" / "roc.png", threshold=0.37)
    plot_reliability(metrics["calibration"], run / "eval" / "reliability.png")
"""

from __future__ import annotations

import contextlib
import csv
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")  # must come before pyplot: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve  # noqa: E402

from ultrasonic.atomic import atomic_path  # noqa: E402
from ultrasonic.errors import DataError  # noqa: E402
from ultrasonic.evaluation.metrics import format_metric  # noqa: E402

DPI = 120
PANEL_SIZE = (4.5, 3.5)  # inches per subplot
MAX_COLUMNS = 3


@contextlib.contextmanager
def _figure(out_png: Path, nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (5.5, 5)) -> Iterator:
    """Yield (figure, 2-D array of axes); on success save the figure as PNG. It is always closed."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    try:
        yield fig, axes
        _save(fig, Path(out_png))
    finally:
        plt.close(fig)


def _save(fig: plt.Figure, out_png: Path) -> None:
    """Write `fig` as PNG atomically: a reader never sees half an image."""
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


# --- training history -----------------------------------------------------------------------


def _read_history(history_csv: Path) -> dict[str, list[float]]:
    """Numeric columns of a Keras CSVLogger file, by name; non-numeric columns are skipped."""
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{history_csv}: no epochs recorded; train for at least one epoch first")
    columns = {}
    for name in rows[0]:
        try:
            columns[name] = [float(row[name]) if row[name] not in ("", None) else math.nan for row in rows]
        except ValueError:
            continue  # e.g. a text column; nothing to plot
    return columns


def _metric_pairs(columns: dict[str, list[float]]) -> list[tuple[str, str | None]]:
    """(train column, its val_ column or None) for every metric, e.g. ("loss", "val_loss")."""
    names = [n for n in columns if n != "epoch" and not n.endswith("_seconds")]  # timings are not curves
    pairs = [(n, f"val_{n}" if f"val_{n}" in columns else None) for n in names if not n.startswith("val_")]
    # A val_ column without a training twin still deserves a panel.
    pairs += [(n, None) for n in names if n.startswith("val_") and n[4:] not in columns]
    return pairs


def plot_history(history_csv: Path, out_png: Path) -> None:
    """One panel per metric (loss, accuracy, auc, learning_rate, ...), train and val lines per epoch."""
    columns = _read_history(Path(history_csv))
    pairs = _metric_pairs(columns)
    if not pairs:
        raise DataError(f"{history_csv}: no numeric metric columns to plot")
    n_rows_data = len(next(iter(columns.values())))
    epochs = [e + 1 for e in columns["epoch"]] if "epoch" in columns else list(range(1, n_rows_data + 1))
    ncols = min(MAX_COLUMNS, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    size = (PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows)
    with _figure(out_png, nrows, ncols, figsize=size) as (_, axes):
        for ax, (train, val) in zip(axes.flat, pairs):
            ax.plot(epochs, columns[train], marker="o", label=train)  # markers: one epoch is one dot
            if val is not None:
                ax.plot(epochs, columns[val], marker="o", label=val)
            ax.set(title=train, xlabel="epoch")
            ax.legend()
        for ax in list(axes.flat)[len(pairs):]:
            ax.set_visible(False)


# --- confusion matrix -----------------------------------------------------------------------


def _cell_text(count: int, total: int) -> str:
    """Annotation of one confusion-matrix cell: count and percent of all images, e.g. "180 | 30.0%"."""
    percent = 100.0 * count / total if total else 0.0
    return f"{int(count)} | {percent:.1f}%"


def plot_confusion_matrix(
    cm: Any, classes: Sequence[str], out_png: Path, title: str = "Confusion matrix"
) -> None:
    """Heat map of `cm` (rows = true class, columns = predicted), each cell annotated "count | percent"."""
    cm = np.asarray(cm, dtype=int)
    if cm.shape != (len(classes), len(classes)):
        raise DataError(f"confusion matrix of shape {cm.shape} does not match {len(classes)} classes")
    size = 2.0 + 1.2 * len(classes)
    total, half, ticks = int(cm.sum()), cm.max() / 2.0, np.arange(len(classes))
    with _figure(out_png, figsize=(size + 1.0, size)) as (fig, axes):
        ax = axes[0, 0]
        fig.colorbar(ax.imshow(cm, cmap="Blues"), ax=ax)
        for (i, j), count in np.ndenumerate(cm):
            # White text on dark cells, black on light ones, so every number stays readable.
            color = "white" if count > half else "black"
            ax.text(j, i, _cell_text(count, total), ha="center", va="center", color=color)
        ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes,
               xlabel="Predicted", ylabel="True", title=title)


# --- ROC and precision-recall ---------------------------------------------------------------


def _curves_to_draw(
    y_true: Any, probs: Any, classes: Sequence[str], positive_index: int
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(class name, is-this-class labels, its probabilities): one entry for binary, K for multiclass."""
    y, p = np.asarray(y_true).astype(int), np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape != (len(y), len(classes)):
        raise DataError(f"probabilities {p.shape} do not match {len(y)} labels and {len(classes)} classes")
    wanted = [positive_index] if len(classes) == 2 else range(len(classes))
    # A class with no positive (or no negative) cases has no curve; leave it out.
    curves = [(classes[k], (y == k).astype(int), p[:, k]) for k in wanted if 0 < np.sum(y == k) < len(y)]
    if not curves:
        raise DataError("cannot draw ROC/PR curves: the labels hold only one class; both are needed")
    return curves


def plot_roc(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    out_png: Path,
    positive_index: int = 1,
    threshold: float | None = None,
) -> None:
    """ROC curve (binary) or one-vs-rest curves (multiclass), AUC in the legend.

    For binary, `threshold` marks the operating point (1 - specificity, sensitivity) on the curve.
    """
    curves = _curves_to_draw(y_true, probs, classes, positive_index)
    with _figure(out_png) as (_, axes):
        ax = axes[0, 0]
        for name, y_k, p_k in curves:
            fpr, tpr, _ = roc_curve(y_k, p_k)
            ax.plot(fpr, tpr, label=f"{name} (AUC = {format_metric(roc_auc_score(y_k, p_k))})")
            if threshold is not None and len(classes) == 2:
                pred = p_k >= threshold
                point = (np.mean(pred[y_k == 0]), np.mean(pred[y_k == 1]))
                ax.plot(*point, "o", color="black", label=f"threshold {threshold:.2f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
               title="ROC curve", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower right")


def plot_pr(
    y_true: Any, probs: Any, classes: Sequence[str], out_png: Path, positive_index: int = 1
) -> None:
    """Precision-recall curve(s), average precision (AP) in the legend; binary also shows the prevalence."""
    curves = _curves_to_draw(y_true, probs, classes, positive_index)
    with _figure(out_png) as (_, axes):
        ax = axes[0, 0]
        for name, y_k, p_k in curves:
            precision, recall, _ = precision_recall_curve(y_k, p_k)
            ax.plot(recall, precision, label=f"{name} (AP = {format_metric(average_precision_score(y_k, p_k))})")
        if len(classes) == 2:
            # A classifier that guesses has precision equal to the share of positives.
            prevalence = float(np.mean(curves[0][1]))
            ax.axhline(prevalence, linestyle="--", color="grey", label=f"chance ({prevalence:.2f})")
        ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall curve",
               xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower left")


# --- calibration ----------------------------------------------------------------------------


def plot_reliability(calibration: dict[str, Any], out_png: Path) -> None:
    """Reliability diagram: accuracy against confidence per bin, before and after temperature scaling.

    `calibration` is metrics.json's block (evaluation/calibration.py calibration_report):
    its bins, bins_before, temperature and ECEs. A calibrated model lies on the diagonal;
    dots are sized by how many images their bin holds.
    """
    with _figure(out_png) as (_, axes):
        ax = axes[0, 0]
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        series = [("bins_before", "before", "T = 1", "tab:orange"),
                  ("bins", "after", f"T = {calibration['temperature']:.2f}", "tab:blue")]
        for key, when, label, color in series:
            rows = [r for r in calibration[key] if r["count"]]
            if not rows:
                continue
            total = sum(r["count"] for r in rows)
            ece = format_metric(calibration[when]["ece"])
            ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], color=color, alpha=0.8,
                    label=f"{when}: {label}, ECE {ece}")
            ax.scatter([r["confidence"] for r in rows], [r["accuracy"] for r in rows], color=color,
                       s=[20 + 200 * r["count"] / total for r in rows])
        ax.set(xlabel="confidence (largest class probability)", ylabel="accuracy (share right)",
               title=f"Reliability diagram ({len(calibration['bins'])} equal-width bins)",
               xlim=(0, 1.02), ylim=(0, 1.02))
        ax.legend(loc="upper left")
