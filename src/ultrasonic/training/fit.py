"""train: settings -> data -> model.fit with callbacks -> a complete run directory.

    result = train("chest_xray/", out="runs/cxr", epochs=5)   # Python API
    ultrasonic train chest_xray/ --out runs/cxr --epochs 5     # the same from the shell

With cv=K (`--cv K`) the K folds of training/cv.py come first, each a run of its own under OUT/folds/;
the run in OUT is then trained as without it. With external=DATA (`--external DATA`) the finished run
is evaluated on DATA (evaluation/external.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from ultrasonic.backend import require_keras

keras = require_keras("training")  # first: without a backend one error naming the extra, not the imports below

import numpy as np

from ultrasonic import __version__
from ultrasonic.config import Config, load_config, save_config
from ultrasonic.data.batches import ArrayBatches, class_weights, encode_labels
from ultrasonic.data.dataset import Dataset, check_leakage, load_dataset
from ultrasonic.errors import DataError
from ultrasonic.evaluation.crossval import cv_line
from ultrasonic.evaluation.external import evaluate_external, external_lines
from ultrasonic.evaluation.plots import plot_history
from ultrasonic.inference.engines import load_model
from ultrasonic.models import build_model, training_model
from ultrasonic.pause import pause_callbacks
from ultrasonic.rundir import INPUT, RunDir, RunMeta
from ultrasonic.training.allocator import keep_freed_memory
from ultrasonic.training.calibrate import calibrate, fit_ood_gate, operating_point
from ultrasonic.training.callbacks import (AveragedWeights, BestCheckpoint, HistoryCSV, TrainingBackup, clear_backup,
                                           restore_backup)
from ultrasonic.training.devices import Replicas, distribution

log = logging.getLogger("ultrasonic")


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    threshold: float
    val_metrics: dict
    seconds: float
    cv: dict | None = None  # cv.json's object, with cv=K
    external: dict | None = None  # meta.json's `external`, with external=DATA

    def summary_lines(self) -> list[str]:
        """What `ultrasonic train` prints at the end."""
        lines = [cv_line(self.cv) + f" (details: {RunDir(self.run_dir).cv})"] if self.cv else []
        return lines + external_lines(self.external) + [f"run directory: {self.run_dir}"]


def train(data: str | None = None, out: str | None = None, *, preset: str | None = None,
          config: Config | str | None = None, resume: bool = False, overwrite: bool = False,
          **settings) -> TrainResult:
    """Train a classifier on DATA and leave a run directory at `out`; see Config for settings."""
    if isinstance(config, Config):
        cfg = config
    else:
        cfg = load_config(preset, config, {**settings, "data": data, "out": out})
    if not cfg.data:
        raise DataError("no DATA given: pass a folder, a .npz file or 'demo'")
    if cfg.external and not Path(cfg.external).expanduser().exists():  # one error now, not after training
        raise DataError(f"{cfg.external}: no such file or folder (external); give a labelled class folder or .npz")
    run = RunDir(cfg.out)
    run.prepare(resume=resume, overwrite=overwrite)
    handler = _log_to(run.log_file)
    try:
        estimate = None
        if cfg.cv:
            from ultrasonic.training.cv import cross_validate  # not at the top: cv trains each fold with train_split

            estimate = cross_validate(cfg, run, resume, overwrite)
        result = replace(_train(cfg, run, resume), cv=estimate)
        return replace(result, external=evaluate_external(run.path, cfg.external)) if cfg.external else result
    finally:
        _stop_logging(handler)


def train_split(cfg: Config, run: RunDir, split_of: dict[str, str], resume: bool = False) -> TrainResult:
    """A run whose splits are given (file -> "train", "val", "test"; others take no part), into the prepared
    `run`, logged to its own train.log too: one fold of cross-validation (training/cv.py)."""
    handler = _log_to(run.log_file)
    try:
        return _train(cfg, run, resume, split_of)
    finally:
        _stop_logging(handler)


def _train(cfg: Config, run: RunDir, resume: bool, split_of: dict[str, str] | None = None) -> TrainResult:
    start = time.perf_counter()
    keep_freed_memory()  # 1.74x the steps per second on CPU, same numbers: allocator.py
    keras.utils.set_random_seed(cfg.seed)
    # the report is written even if the data stops the run
    ds = load_dataset(cfg, split_of=split_of, report_to=run.data_report)
    check_leakage(ds, cfg)
    _check_splits(ds)
    save_config(cfg, run.config)
    run.write_splits(ds.catalog.refs, ds.labels, ds.classes, ds.split, ds.patients)
    with distribution(cfg.devices, cfg.batch_size) as replicas:  # build, compile and fit on those devices
        network = build_model(cfg, len(ds.classes))  # what model.keras holds
        model = training_model(network, cfg)  # the same layers behind the augmentation: fitted and backed up
        train_batches, val_batches = _batches(cfg, ds, replicas)
        epochs = planned_epochs(cfg, len(train_batches))
        compile_model(model, cfg, len(ds.classes), steps_per_epoch=len(train_batches), epochs=epochs)
        if not resume:
            clear_backup(run.backup)
        initial_epoch = restore_backup(model, run.backup) if resume else 0
        log.info("train: %s network, %d parameters, %d epochs of %d batches (batch %d)%s%s, backend %s",
                 cfg.model, model.count_params(), epochs, len(train_batches), cfg.batch_size,
                 f" (at least {cfg.min_steps} steps)" if epochs > cfg.epochs else "",
                 f", weights averaged (EMA {model.optimizer.ema_momentum:.4g})" if model.optimizer.use_ema else "",
                 keras.backend.backend())
        # shuffle=False: ArrayBatches shuffles with the run's seed; fit's own shuffle of a PyDataset reorders
        # the batches with Python's global `random`, which differs between one device and several.
        model.fit(train_batches, validation_data=val_batches, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=_callbacks(cfg, run, start, network, averaged=model.optimizer.use_ema,
                                       resumed=initial_epoch > 0),
                  verbose=fit_verbose(cfg.verbose), shuffle=False)
    val = ds.indices("val")
    best, calibration = calibrate(load_model(run.model), ds.images, ds.labels, val, run.model,
                                  f"validation split ({len(val)} images)")
    threshold, method, val_metrics = operating_point(best, ds.images, ds.labels, val, ds.classes,
                                                     positive_index(cfg, ds.classes), cfg.operating_point,
                                                     "validation split")
    # the calibrated model.keras as predict loads it (one graph; `best` shares layers with the uncalibrated one)
    ood = fit_ood_gate(load_model(run.model), ds.images, ds.labels, ds.indices("train"), val, len(ds.classes),
                       run, cfg.ood_method, cfg.ood_false_rejection)
    seconds = time.perf_counter() - start
    best_epoch = json.loads(run.checkpoint_state.read_text())["epoch"]
    run.write_meta(replace(_meta(cfg, ds, run, threshold, val_metrics, best_epoch, seconds),
                           threshold_method=method, operating_point=cfg.operating_point if method != "argmax"
                           else None, temperature=calibration["temperature"], calibration=calibration, ood=ood))
    plot_history(run.history, run.curves)
    clear_backup(run.backup)  # last: until here a resume skips straight to these final steps
    log.info("train: done in %.0f s; best epoch %d; run directory %s", seconds, best_epoch, run.path)
    return TrainResult(run.path, best_epoch, threshold, val_metrics, seconds)


def fit_verbose(setting: int | None, stream=None) -> int:
    """Keras' fit output: the setting if given; else, on a terminal, a progress bar with an ETA (1),
    and in a log or CI one line per epoch (2), since the bar's redraws would fill the file."""
    if setting is not None:
        return setting
    stream = sys.stdout if stream is None else stream  # where Keras writes its progress
    return 1 if getattr(stream, "isatty", lambda: False)() else 2


def positive_index(cfg: Config, classes: list[str]) -> int:
    """The class called 'positive' (sensitivity = its recall): positive_class, else the second."""
    if cfg.positive_class is None:
        return 1
    if cfg.positive_class not in classes:
        raise DataError(f"positive_class {cfg.positive_class!r} is not one of the classes {classes}")
    return classes.index(cfg.positive_class)


def _check_splits(ds: Dataset) -> None:
    for name in ("train", "val"):
        present = np.unique(ds.labels[ds.indices(name)])
        if len(present) < len(ds.classes):
            missing = [c for k, c in enumerate(ds.classes) if k not in present]
            raise DataError(f"{ds.catalog.root}: the {name} split has no images of {missing}; "
                            "add images or lower min_split_images / change val_fraction")


def _batches(cfg: Config, ds: Dataset, replicas: Replicas) -> tuple[ArrayBatches, ArrayBatches]:
    """Training and validation batches; on several devices every batch splits evenly (see ArrayBatches)."""
    n_classes = len(ds.classes)
    targets = encode_labels(ds.labels, n_classes)
    train_idx = ds.indices("train")
    weight = None
    if cfg.class_weight == "balanced":
        per_class = class_weights(ds.labels[train_idx], n_classes)
        weight = per_class[ds.labels]
        log.info("train: class weights %s", dict(zip(ds.classes, np.round(per_class, 3).tolist())))
    split = dict(multiple_of=replicas.count, part=(replicas.process, replicas.processes))
    train_batches = ArrayBatches(ds.images, targets, train_idx, cfg.batch_size, shuffle=True,
                                 seed=cfg.seed, sample_weight=weight, mixup=cfg.mixup, cutmix=cfg.cutmix, **split)
    val_batch = -(-max(cfg.batch_size, 64) // replicas.count) * replicas.count
    val_batches = ArrayBatches(ds.images, targets, ds.indices("val"), val_batch, **split)
    return train_batches, val_batches


def planned_epochs(cfg: Config, steps_per_epoch: int) -> int:
    """cfg.epochs, or more on a small data set: enough epochs for cfg.min_steps optimiser steps."""
    return max(cfg.epochs, math.ceil(cfg.min_steps / max(1, steps_per_epoch)))


def ema_momentum(ema: float, total_steps: int) -> float:
    """The `ema` setting, capped so that its window (about 1 / (1 - momentum) steps) is at most a tenth of
    the planned steps: Keras' average has no bias correction, so a run of a few dozen steps would
    otherwise end holding mostly its first weights. 0 when the run is too short to average."""
    return min(ema, max(0.0, 1.0 - 10.0 / total_steps)) if ema > 0 else 0.0


def compile_model(model: keras.Model, cfg: Config, n_classes: int, steps_per_epoch: int,
                  epochs: int | None = None) -> None:
    """The optimiser, learning-rate schedule, loss and metrics of cfg, as `train` compiles them."""
    total = max(1, (epochs or cfg.epochs) * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total // 2)
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate / 10, max(1, total - warmup), alpha=0.01,
                                                    warmup_target=cfg.learning_rate, warmup_steps=warmup)
    else:
        lr = cfg.learning_rate
    momentum = ema_momentum(cfg.ema, total)
    average = dict(use_ema=momentum > 0, ema_momentum=momentum)  # swapped in by AveragedWeights
    if cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay, **average)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=lr, **average)
    if n_classes == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing)
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)


def _callbacks(cfg: Config, run: RunDir, start: float, network: keras.Model, averaged: bool = False,
               resumed: bool = False) -> list[keras.callbacks.Callback]:
    """The seed's three (early stop, best checkpoint, LR on plateau) plus logging and resume.

    Order matters for a kill between two of them (see training/callbacks.py): the history
    row and the checkpoint of an epoch are written before its backup, so a
    resumed run redoes that epoch and replaces them rather than missing them.
    With weight averaging, AveragedWeights comes first: every later one sees the averaged weights.
    """
    callbacks = [AveragedWeights(resumed=resumed)] if averaged else []
    callbacks += [
        HistoryCSV(run.history, start),
        BestCheckpoint(run.model, monitor=cfg.monitor, network=network, keep=cfg.checkpoint),
    ]
    if cfg.checkpoint == "best":  # keeping the last epoch, the schedule's end is the end: no early stop
        callbacks.append(keras.callbacks.EarlyStopping(monitor=cfg.monitor, patience=cfg.early_stopping_patience))
    if cfg.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=cfg.monitor, factor=cfg.reduce_lr_factor,
                                                           patience=cfg.reduce_lr_patience,
                                                           min_lr=cfg.min_learning_rate))
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run.logs), write_graph=False, profile_batch=0))
    return callbacks + [TrainingBackup(run.backup)] + pause_callbacks()  # [] outside the interruption test


def _meta(cfg: Config, ds: Dataset, run: RunDir, threshold: float, val_metrics: dict, best_epoch: int,
          seconds: float) -> RunMeta:
    binary = len(ds.classes) == 2
    return RunMeta(
        model_id=hashlib.sha256(run.model.read_bytes()).hexdigest()[:16],
        task="binary" if binary else "multiclass",
        classes=ds.classes,
        positive_class=ds.classes[positive_index(cfg, ds.classes)] if binary else None,
        image_size=(cfg.image_size, cfg.image_size),
        channels=cfg.channels,
        input=INPUT,
        threshold=threshold,
        validation=val_metrics,
        best_epoch=best_epoch,
        train_seconds=round(seconds, 1),
        preset=cfg.preset,
        data={"path": ds.catalog.root, "kind": ds.catalog.kind, "fingerprint": ds.fingerprint(),
              "counts": ds.report()["counts"]},
        backend=keras.backend.backend(),
        versions=_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _versions() -> dict:
    versions = {"ultrasonic": __version__, "keras": keras.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    backend = keras.backend.backend()
    try:
        versions[backend] = __import__(backend).__version__
    except ImportError:
        pass
    return versions


def _stop_logging(handler: logging.Handler) -> None:
    logging.getLogger("ultrasonic").removeHandler(handler)
    handler.close()


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("ultrasonic")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler
