"""evaluate: a run + a split (or new data) -> clinical metrics with 95 % CIs, calibration, plots and an HTML report.

    metrics = evaluate("runs/cxr")                      # the run's own test split
    metrics = evaluate("runs/cxr", split="val")         # the run's own validation split
    metrics = evaluate("runs/cxr", "other_hospital/")   # all images of another folder (its test split if it has one)

DATA that is the very data the run was trained on is read with the run's own splits, as without DATA:
its folders may hold no split at all (the run carved them), and all of it would score training images.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ultrasonic.config import load_config
from ultrasonic.data.dataset import Dataset, load_dataset
from ultrasonic.errors import ConfigError, DataError, RunError
from ultrasonic.evaluation.calibration import calibration_report
from ultrasonic.evaluation.summary import evaluate_predictions, write_metrics_json
from ultrasonic.evaluation.plots import plot_confusion_matrix, plot_pr, plot_reliability, plot_roc
from ultrasonic.evaluation.report import write_report
from ultrasonic.evaluation.site import site_check
from ultrasonic.inference.predictor import Predictor
from ultrasonic.rundir import SPLITS, EvalDir, RunDir, RunMeta

log = logging.getLogger("ultrasonic")


def evaluate(run_dir: str | Path, data: str | None = None, split: str | None = None, *,
             out: str | Path | None = None, n_boot: int = 1000) -> dict:
    """Evaluate the run on `split` and write metrics.json, plots and report.html to RUN_DIR/eval.

    split None: the test split of the run's own data or of DATA, or every image of a plain class folder.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {SPLITS}")
    run = RunDir(run_dir)
    predictor = Predictor(run.path)
    if data is not None and _is_trained_on(predictor.meta, data):
        log.info("evaluate: %s is the data %s was trained on; using the run's own splits", data, run.path)
        data = None
    ds, indices, where = images_of(run, data, split, predictor.classes)
    probs = predictor.predict_proba(ds.images[indices]) if len(indices) else None
    if probs is None:
        raise DataError(f"{where}: no images to evaluate")
    y = labels_in_run_classes(ds, indices, predictor.classes)
    positive = predictor.classes.index(predictor.positive_class) if predictor.positive_class else 1
    metrics = evaluate_predictions(y, probs, predictor.classes, threshold=predictor.threshold
                                   if len(predictor.classes) == 2 else None,
                                   positive_index=positive, n_boot=n_boot, seed=0,
                                   groups=_patients(ds, indices))
    metrics["calibration"] = calibration_report(y, probs, predictor.meta.temperature or 1.0)
    metrics["calibration"]["fitted_on"] = (predictor.meta.calibration or {}).get("fitted_on", "validation split")
    metrics["evaluated_on"] = where
    if data is not None:  # another site's data: does the stored operating point still hold there?
        metrics["site_check"] = site_check(metrics, predictor.meta)
    elif predictor.meta.external:  # `train --external`: the other source's figures beside, in the report
        metrics["external"] = {**predictor.meta.external, "validation": predictor.meta.validation}
    out = EvalDir(out) if out else run.evaluation
    _write_outputs(out, run, predictor, metrics, y, probs, positive, where)
    log.info("evaluate: report %s", out.report)
    return metrics


def images_of(run: RunDir, data: str | None, split: str | None, classes: list[str]) -> tuple[Dataset, np.ndarray, str]:
    """(dataset, indices, where), decoded at the run's size and channels: without DATA the run's own `split`
    (the files training saw; None is its test split); with DATA its `split`, where None is its test split
    or, in a plain class folder, every image; "all" is every readable image of DATA, whatever its splits."""
    cfg = load_config(file=run.config)
    if data is None:
        split = split or "test"
        trained_on = _trained_on(run)
        if not Path(trained_on).exists():
            raise RunError(f"{run.path}: the data it was trained on ({trained_on}) is gone; pass DATA to evaluate on")
        ds = load_dataset(replace(cfg, data=trained_on, classes=classes), split_of=run.read_splits())
        return ds, ds.indices(split), f"{cfg.data} [{split} split of the run]"
    named = None if Path(data).is_dir() else classes  # an .npz has no class names of its own
    # every given split kept as it is (a test/ folder or test_* arrays alone too), no image moved or dropped
    ds = load_dataset(replace(cfg, data=data, classes=named, val_fraction=0.0, test_fraction=0.0,
                              min_split_images=0, drop_duplicates=False))
    given = sorted({g for g in ds.catalog.given_split if g}, key=SPLITS.index)
    if split == "all":
        return ds, np.flatnonzero(ds.split != "bad"), f"{data} [all images]"
    if not given:  # a plain class folder: every image, and no split to choose
        if split is None:
            return ds, ds.indices("train"), f"{data} [all images]"
        raise DataError(f"{data}: a class folder without split folders, so it has no {split} split; leave out "
                        "--split to score all its images (the splits a run carved of it: evaluate that run "
                        "without DATA)")
    split = split or "test"
    if split not in given:
        raise DataError(f"{data}: has no {split} split, only {', '.join(given)}; "
                        f"pass --split {given[-1]}, or give the folder or .npz of that split")
    return ds, ds.indices(split), f"{data} [{split} split]"


def _patients(ds: Dataset, indices: np.ndarray) -> list[str | None] | None:
    """The patient of each evaluated image, or None when no image has one (the bootstrap then takes images)."""
    patients = [ds.patients[i] for i in indices]
    return patients if any(patients) else None


def _is_trained_on(meta: RunMeta, data: str) -> bool:
    """Is DATA the data the run was trained on (the same file or folder)?"""
    stored = _stored_path(meta)
    return stored is not None and Path(stored).exists() and Path(stored).resolve() == Path(data).resolve()


def _stored_path(meta: RunMeta) -> str | None:
    """meta.json's `data.path`: the data the run was trained on, an absolute path; None if it has none."""
    path = (meta.data or {}).get("path")
    return path if isinstance(path, str) else None


def _trained_on(run: RunDir) -> str:
    """The data the run was trained on: an absolute path, whatever the working folder was."""
    path = _stored_path(run.read_meta())
    if path is None:
        raise RunError(f"{run.meta_path}: says nothing about the data it was trained on (key 'data.path'); "
                       "pass DATA to evaluate on")
    return path


def labels_in_run_classes(ds: Dataset, indices: np.ndarray, classes: list[str]) -> np.ndarray:
    """Map the data's class indices onto the run's; a class the model never saw is an error."""
    unknown = sorted(set(ds.classes) - set(classes))
    if unknown:
        raise DataError(f"{ds.catalog.root}: classes {unknown} are not among the model's {classes}")
    mapping = np.array([classes.index(c) for c in ds.classes])
    return mapping[ds.labels[indices]]


def _write_outputs(out: EvalDir, run: RunDir, predictor: Predictor, metrics: dict, y: np.ndarray,
                   probs: np.ndarray, positive: int, where: str) -> None:
    classes = predictor.classes
    write_metrics_json(out.metrics, metrics)
    images = {"Confusion matrix": out.confusion_matrix, "ROC curve": out.roc, "Precision-recall curve": out.pr}
    threshold = predictor.threshold if len(classes) == 2 else None
    title = f"Confusion matrix at threshold {threshold:.3f}" if threshold is not None else "Confusion matrix"
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), metrics.get("confusion_labels", classes),
                          images["Confusion matrix"], title=title)
    plot_roc(y, probs, classes, images["ROC curve"], positive_index=positive, threshold=threshold)
    plot_pr(y, probs, classes, images["Precision-recall curve"], positive_index=positive)
    images["Reliability diagram"] = out.reliability
    plot_reliability(metrics["calibration"], out.reliability)
    if run.curves.exists():
        images["Training curves"] = run.curves
    info = {"run": str(run.path), "model id": predictor.model_id, "preset": predictor.meta.preset,
            "evaluated on": where, "images": len(y), "classes": ", ".join(classes),
            "threshold": f"{predictor.threshold:.3f} ({predictor.meta.threshold_method})",
            "temperature": f"{predictor.meta.temperature:.3f} (fitted on the {metrics['calibration']['fitted_on']})"
            if predictor.meta.temperature else "none (a run from before calibration)",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_report(out.report, f"ultrasonic evaluation: {run.path.name}", metrics, images, info)
