"""`train --cv K`: k-fold cross-validation, grouped by patient and stratified by class, before the final run.

The images outside the test split (given or carved, as without --cv) are dealt into K folds
(data/split.py `fold_assignments`: a patient's images, and identical images, stay in one fold).
Fold k is a whole `train` run, calibration, operating point and OOD gate included, that trains on
the other folds and validates on fold k: OUT/folds/fold_k/ is a complete run directory (predict,
evaluate and serve work on it). Then each fold's model scores its own validation fold, and OUT/cv.json
(evaluation/crossval.py) holds the per-fold figures with intervals, their spread, and the ROC-AUC of all
out-of-fold predictions pooled; OUT/cv_predictions.csv the predictions themselves.

The run in OUT is trained afterwards exactly as without --cv (same split, same validation split for early
stopping, calibration and the threshold): cv.json estimates how well this recipe does on patients it has
not seen, with its spread; it is not a score of OUT's model, and the folds' models are not used to predict.

Resume: a fold whose run finished (meta.json written, no backup left) is not retrained, only re-scored;
an interrupted one continues from its last epoch like any run with --resume. A fold made with other
folds (the data or the settings changed) stops the run: start again with --overwrite.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from dataclasses import replace

import numpy as np

from ultrasonic.atomic import write_text
from ultrasonic.config import Config
from ultrasonic.data.dataset import Dataset, check_leakage, load_dataset
from ultrasonic.data.sources import open_data
from ultrasonic.data.split import fold_assignments
from ultrasonic.errors import RunError
from ultrasonic.evaluation.crossval import cv_line, cv_summary, fold_entry
from ultrasonic.evaluation.summary import evaluate_predictions, write_metrics_json
from ultrasonic.inference.predictor import Predictor
from ultrasonic.rundir import RunDir
from ultrasonic.training.fit import positive_index, train_split

log = logging.getLogger("ultrasonic")

N_BOOT = 1000  # bootstrap resamples of each fold's and the pooled ROC-AUC interval
FINAL = ("OUT (model.keras, meta.json) is trained as without --cv, on the train split with the val split for "
         "early stopping, calibration and the threshold; the folds' models only make this estimate, of how "
         "well the recipe does on patients it has not seen")


def cross_validate(cfg: Config, run: RunDir, resume: bool = False, overwrite: bool = False) -> dict:
    """Train the cfg.cv folds into run/folds/, score each on its validation fold, write run/cv.json."""
    _check_patients(cfg)  # before any image is decoded
    _check_folder(run, resume, overwrite)
    ds = load_dataset(cfg)  # decoded once here; the folds' runs read the same images from the cache
    check_leakage(ds, cfg)
    pool = np.flatnonzero(np.isin(ds.split, ("train", "val")))
    fold = fold_assignments([ds.catalog.refs[i] for i in pool], ds.labels[pool], cfg.cv,
                            patient_pattern=cfg.patient_pattern, seed=cfg.seed,
                            hashes=[ds.loaded.hashes[i] for i in pool], classes=ds.classes)
    log.info("cv: %d folds of %d images (outside the test split), grouped by patient, stratified by class",
             cfg.cv, len(pool))
    entries, scored = [], []
    for k in range(1, cfg.cv + 1):
        val = pool[fold == k - 1]
        fold_run = RunDir(run.folds / f"fold_{k}")
        _train_fold(replace(cfg, out=str(fold_run.path), cv=0, external=None), fold_run,
                    _fold_split(ds, pool, fold, k - 1), val, ds, resume)
        probs, threshold = _scores(fold_run, ds.images[val], len(ds.classes))
        metrics = _metrics(ds, cfg, val, probs, threshold)
        entries.append(fold_entry(k, f"folds/fold_{k}", metrics, threshold))
        scored.append((k, val, probs))
        log.info("cv: fold %d of %d: validation ROC-AUC %.3f on %d images", k, cfg.cv,
                 entries[-1]["roc_auc"]["value"], len(val))
    idx, probs = np.concatenate([s[1] for s in scored]), np.concatenate([s[2] for s in scored])
    summary = cv_summary(entries, _metrics(ds, cfg, idx, probs, None), FINAL)
    write_metrics_json(run.cv, summary)
    _write_predictions(run, ds, scored)
    log.info("cv: %s; %s", cv_line(summary), run.cv)
    return summary


def _check_patients(cfg: Config) -> None:
    """Too few patients for cfg.cv folds is one ConfigError from the file names alone (nothing decoded).

    The carved test split is not known yet (it needs the images' content hashes), so this counts the
    patients outside a given test split; fold_assignments checks again after carving.
    """
    catalog = open_data(cfg.data, cfg.classes, cfg.cache_dir)
    keep = [i for i, given in enumerate(catalog.given_split) if given != "test"]
    fold_assignments([catalog.refs[i] for i in keep], catalog.labels[keep], cfg.cv, patient_pattern=cfg.patient_pattern, seed=cfg.seed,
                     classes=catalog.classes)


def _check_folder(run: RunDir, resume: bool, overwrite: bool) -> None:
    """Folds of an earlier cross-validation are continued (--resume), replaced (--overwrite), or refused."""
    if not run.folds.is_dir() or not any(run.folds.iterdir()):
        return
    if overwrite:
        shutil.rmtree(run.folds)
    elif not resume:
        raise RunError(f"{run.folds}: holds the folds of an earlier cross-validation; pass --resume to continue "
                       "it (finished folds are kept) or --overwrite to start again")


def _fold_split(ds: Dataset, pool: np.ndarray, fold: np.ndarray, k: int) -> dict[str, str]:
    """file -> split for fold k: the fold validates, the other folds train, the test split stays the test."""
    split = ds.split.astype(object)
    split[pool] = np.where(fold == k, "val", "train")
    return dict(zip(ds.catalog.refs, split.astype(str)))


def _train_fold(cfg: Config, fold_run: RunDir, split_of: dict[str, str], val: np.ndarray, ds: Dataset,
                resume: bool) -> None:
    """Train one fold, unless its run is already complete with these very folds."""
    if fold_run.splits.exists():
        planned = {ds.catalog.refs[i] for i in val}
        stored = {ref for ref, name in fold_run.read_splits().items() if name == "val"}
        if stored != planned:
            raise RunError(f"{fold_run.path}: was made with other folds (the data or the settings changed); "
                           "pass --overwrite to start the cross-validation again")
        if fold_run.meta_path.exists() and not fold_run.backup.exists():
            log.info("cv: %s is complete; not retrained", fold_run.path)
            return
    fold_run.prepare(resume=resume)
    log.info("cv: training %s", fold_run.path)
    train_split(cfg, fold_run, split_of, resume=resume)


def _scores(fold_run: RunDir, images: np.ndarray, n_classes: int) -> tuple[np.ndarray, float | None]:
    """The fold model's calibrated probabilities of its validation images, and its stored threshold."""
    predictor = Predictor(fold_run.path, ood="off")
    return predictor.predict_proba(images), predictor.threshold if n_classes == 2 else None


def _metrics(ds: Dataset, cfg: Config, idx: np.ndarray, probs: np.ndarray, threshold: float | None) -> dict:
    """evaluate_predictions of images idx, the bootstrap over their patients."""
    patients = [ds.patients[i] for i in idx]
    return evaluate_predictions(ds.labels[idx], probs, ds.classes, threshold=threshold,
                                positive_index=positive_index(cfg, ds.classes),
                                n_boot=N_BOOT, seed=0, groups=patients if any(patients) else None)


def _write_predictions(run: RunDir, ds: Dataset, scored: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
    """cv_predictions.csv: every out-of-fold prediction (file, class, patient, fold, probabilities)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "class", "patient", "fold", *(f"p_{c}" for c in ds.classes)])
    for k, idx, probs in scored:
        for i, p in zip(idx, probs):
            writer.writerow([ds.catalog.refs[i], ds.classes[ds.labels[i]], ds.patients[i] or "", k,
                             *(repr(float(v)) for v in p)])  # exact: a fold's threshold can sit at 1 - 6e-8
    write_text(run.cv_predictions, out.getvalue())
