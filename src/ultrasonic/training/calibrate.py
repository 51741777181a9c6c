"""After the weights: the temperature, the operating point and the out-of-distribution gate.

`train` fits all three on its validation split once the best weights are known;
`recalibrate` fits them again on a new site's labelled sample, weights untouched,
into a new run directory (the old one stays as it was):

    recalibrate("runs/cxr", "site_b_labelled/", "runs/cxr_site_b")
    ultrasonic recalibrate runs/cxr site_b_labelled/ --out runs/cxr_site_b
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from ultrasonic.backend import require_keras

keras = require_keras("recalibration")

import numpy as np

from ultrasonic.atomic import atomic_path
from ultrasonic.config import load_config, parse_operating_point
from ultrasonic.data.dataset import Dataset
from ultrasonic.data.split import assign_splits
from ultrasonic.errors import ConfigError, DataError, RunError
from ultrasonic.evaluation.calibration import calibration_metrics, fit_temperature, uncalibrated
from ultrasonic.evaluation.evaluate import images_of, labels_in_run_classes
from ultrasonic.evaluation.metrics import binary_metrics
from ultrasonic.evaluation.thresholds import operating_threshold
from ultrasonic.inference.engines import load_model, predict_array, predict_with_features, scoring_model
from ultrasonic.inference.ood import DEFAULT_METHOD, OodGate, fit_gate, pooled_gate
from ultrasonic.models.build import logit_model, with_temperature
from ultrasonic.rundir import RunDir, RunMeta

log = logging.getLogger("ultrasonic")

# What a recalibrated run takes from its parent: the record of how the weights were made.
INHERITED = ("config", "splits", "history", "curves", "data_report", "checkpoint_state")


def calibrate(network: keras.Model, images: np.ndarray, labels: np.ndarray, idx: np.ndarray,
              model_path: Path, fitted_on: str) -> tuple[keras.Model, dict]:
    """Fit one temperature on the logits of images[idx] and bake it into model_path (temperature scaling).

    The logits come before the temperature layer, so calibrating a calibrated
    model fits the same temperature again: calibrating twice is calibrating once.
    """
    logits = predict_array(logit_model(network), images, idx)
    logits = logits[:, 1:] if network.output_shape[-1] == 1 else logits  # predict_array's [1 - z, z]: z
    y = labels[idx]
    temperature = fit_temperature(logits, y)
    calibrated = with_temperature(network, temperature)
    with atomic_path(model_path) as tmp:
        calibrated.save(tmp)
    after = predict_array(calibrated, images, idx)
    before, after = calibration_metrics(y, uncalibrated(after, temperature)), calibration_metrics(y, after)
    log.info("calibration: temperature %.3f fitted on the %s; ECE %.4f -> %.4f, log loss %.4f -> %.4f",
             temperature, fitted_on, before["ece"], after["ece"], before["log_loss"], after["log_loss"])
    return calibrated, {"temperature": round(temperature, 6), "method": "temperature scaling (NLL)",
                        "fitted_on": fitted_on, "before": before, "after": after}


def operating_point(model: keras.Model, images: np.ndarray, labels: np.ndarray, idx: np.ndarray,
                    classes: list[str], positive: int, setting: str, where: str) -> tuple[float, str, dict]:
    """(threshold, how it was chosen, metrics there): the setting's operating point on the calibrated
    probabilities of images[idx] (binary); argmax for more classes."""
    probs = predict_array(model, images, idx)
    if len(classes) != 2:
        return 0.5, "argmax", {"accuracy": float((probs.argmax(1) == labels[idx]).mean())}
    y = (labels[idx] == positive).astype(int)
    p = probs[:, positive]
    threshold, method = operating_threshold(y, p, parse_operating_point(setting))
    method = method.replace("the validation split", f"the {where}")
    metrics = binary_metrics(y, p, threshold)
    log.info("calibration: ROC-AUC %.4f on the %s; threshold %.3f (%s) gives sensitivity %.3f, specificity %.3f",
             metrics["roc_auc"], where, threshold, method, metrics["sensitivity"], metrics["specificity"])
    return threshold, method, {k: metrics[k] for k in ("roc_auc", "accuracy", "sensitivity", "specificity")}


def fit_ood_gate(model: keras.Model, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
                 val_idx: np.ndarray, n_classes: int, run: RunDir, method: str = DEFAULT_METHOD,
                 false_rejection: float = 0.01, base: OodGate | None = None, base_images: int = 0) -> dict:
    """Mahalanobis statistics of the features of images[train_idx], a threshold per score on images[val_idx];
    the statistics go to run.ood (ood.npz), and the block for meta.json's `ood` is returned.

    With `base` (a run's gate, fitted on `base_images` images), the new statistics are pooled with it
    (inference/ood.py pooled_gate): an image near either the old or the new classes is in distribution.
    """
    scoring = scoring_model(model)
    _, train_features = predict_with_features(scoring, images, train_idx)
    val_probs, val_features = predict_with_features(scoring, images, val_idx)
    gate = fit_gate(train_features, labels[train_idx], n_classes, val_probs, val_features, method,
                    false_rejection)
    if base is not None:
        gate = pooled_gate(base, base_images, gate, len(train_idx), val_probs, val_features, false_rejection)
    gate.save(run.ood)
    refused = float(np.mean(gate.scores(val_probs, val_features) > gate.threshold))
    log.info("calibration: OOD gate %s, threshold %.4g refuses %.1f %% of its threshold images (target %.1f %%)",
             gate.method, gate.threshold, 100 * refused, 100 * false_rejection)
    fitted_on = {"train": len(train_idx) + base_images, "val": len(val_idx)}
    return {"method": gate.method, "thresholds": gate.thresholds, "false_rejection": false_rejection,
            "validation_false_rejection": round(refused, 4), "file": run.ood.name, "fitted_on": fitted_on,
            "score": "higher = less like the training images; above the threshold = out of distribution"}


def recalibrate(run_dir: str | Path, data: str, out: str | Path, *, operating_point_setting: str | None = None,
                overwrite: bool = False) -> RunMeta:
    """A copy of the run at `out` whose temperature, threshold and OOD gate are fitted on DATA.

    DATA is a site's labelled sample (a class folder or .npz, every image used). The
    temperature and the operating point are fitted on all of it; the gate's statistics on
    half of its patients (pooled with the run's own) and its threshold on the other half.
    The weights are the run's own, byte for byte; meta.json's `lineage` says where it came
    from. `operating_point_setting` (e.g. "sensitivity=0.95"): default, the run's own.
    """
    source, target = RunDir(run_dir), RunDir(out)
    meta = source.read_meta()
    if source.path.resolve() == target.path.resolve():
        raise ConfigError(f"{target.path}: recalibrate writes a new run; give --out another folder "
                          "(the run it starts from stays as it was)")
    setting = operating_point_setting or meta.operating_point or "youden"
    parse_operating_point(setting)  # a bad setting is one error before any image is read
    ds, idx, where = _site_images(source, data, meta.classes)
    target.prepare(overwrite=overwrite)
    _inherit(source, target)
    images, labels = ds.images, _labels_in(ds, meta.classes)
    positive = meta.classes.index(meta.positive_class) if meta.positive_class else 1
    fitted_on = f"site sample {data} ({len(idx)} images)"
    model, calibration = calibrate(load_model(source.model), images, labels, idx, target.model, fitted_on)
    threshold, method, site_metrics = operating_point(model, images, labels, idx, meta.classes, positive,
                                                      setting, f"site sample ({len(idx)} images)")
    ood = _refit_gate(source, target, meta, ds, labels, idx)
    new = replace(meta, model_id=hashlib.sha256(target.model.read_bytes()).hexdigest()[:16],
                  threshold=threshold, threshold_method=method,
                  operating_point=setting if method != "argmax" else None,
                  temperature=calibration["temperature"], calibration=calibration, validation=site_metrics,
                  ood=ood, created=_now(), extra={**meta.extra, "lineage": _lineage(source, meta, ds, data, len(idx))})
    target.write_meta(new)
    log.info("recalibrate: %s -> %s (weights unchanged); threshold %.3f, temperature %.3f",
             source.path, target.path, threshold, calibration["temperature"])
    return new


def _site_images(run: RunDir, data: str, classes: list[str]) -> tuple[Dataset, np.ndarray, str]:
    """Every readable image of DATA, decoded as the run's model expects."""
    ds, idx, where = images_of(run, data, "all", classes)
    if len(idx) < 4:
        raise DataError(f"{data}: {len(idx)} readable images; recalibrating needs a labelled sample "
                        "(dozens of images of every class)")
    missing = [c for k, c in enumerate(ds.classes) if not np.any(ds.labels[idx] == k)]
    if missing or len(ds.classes) < len(classes):
        absent = missing or sorted(set(classes) - set(ds.classes))
        raise DataError(f"{data}: has no image of class {', '.join(absent)}; a temperature and a threshold "
                        "need images of every class")
    return ds, idx, where


def _labels_in(ds: Dataset, classes: list[str]) -> np.ndarray:
    return labels_in_run_classes(ds, np.arange(len(ds.labels)), classes)


def _refit_gate(source: RunDir, target: RunDir, meta: RunMeta, ds: Dataset, labels: np.ndarray,
                idx: np.ndarray) -> dict | None:
    """The run's gate pooled with the site's statistics (half of the site's patients), its threshold set
    on the other half; None when the run has no gate (a run from before it)."""
    if meta.ood is None:
        return None
    base = OodGate.load(source.ood, meta.ood)
    cfg = load_config(file=source.config)
    split, _ = assign_splits([ds.catalog.refs[i] for i in idx], labels[idx], [None] * len(idx),
                             val_fraction=0.5, test_fraction=0.0, min_images=0,
                             patient_pattern=cfg.patient_pattern, seed=cfg.seed,
                             hashes=[ds.loaded.hashes[i] for i in idx])
    fit_idx, threshold_idx = idx[split == "train"], idx[split == "val"]
    if not len(fit_idx) or not len(threshold_idx):
        raise DataError(f"{ds.catalog.root}: too few patients to fit the OOD gate on one half and set its "
                        "threshold on the other; give a larger sample")
    return fit_ood_gate(load_model(target.model), ds.images, labels, fit_idx, threshold_idx, len(meta.classes),
                        target, meta.ood["method"], meta.ood.get("false_rejection", 0.01), base=base,
                        base_images=int(meta.ood.get("fitted_on", {}).get("train", 0)))


def _inherit(source: RunDir, target: RunDir) -> None:
    """Copy the parent's record of training (settings, splits, history); never its model, eval or audit log."""
    for name in INHERITED:
        path = getattr(source, name)
        if path.exists():
            with atomic_path(getattr(target, name)) as tmp:
                shutil.copyfile(path, tmp)
    if not target.config.exists():
        raise RunError(f"{source.config}: missing; a run without its settings cannot be recalibrated")


def _lineage(source: RunDir, meta: RunMeta, ds: Dataset, data: str, n: int) -> dict:
    return {"recalibrated_from": {"run": str(source.path.resolve()), "model_id": meta.model_id,
                                  "temperature": meta.temperature, "threshold": meta.threshold},
            "site_sample": {"path": str(Path(data).resolve()), "images": n, "fingerprint": ds.fingerprint()},
            "weights": "unchanged", "date": _now(), "history": meta.extra.get("lineage")}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
