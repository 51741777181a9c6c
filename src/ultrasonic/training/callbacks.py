"""The callbacks of `ultrasonic train`: the best checkpoint, a history and a backup per epoch.

The last two let a killed `ultrasonic train` continue with `--resume`.

At the end of every epoch, in this order (after AveragedWeights, with the `ema` setting, has swapped
the averaged weights in):
1. HistoryCSV rewrites history.csv atomically with one row per epoch; a row
   for an epoch that is run again (after a kill) replaces the old one.
2. BestCheckpoint saves model.keras (the inference network) when the monitor improves.
3. TrainingBackup saves weights + optimizer state to backup/epoch-NNNN.weights.h5,
   then backup/state.json naming that file, both atomically.

A kill at any instant leaves state.json pointing at a complete weights file
(or no state yet), so `restore_backup` either starts from a finished epoch
or from scratch; an epoch cut short is simply run again. Keras'
BackupAndRestore writes its files in place, which a kill can leave half-written.

    initial_epoch = restore_backup(model, run.backup)   # 0 when there is nothing to resume
    model.fit(..., initial_epoch=initial_epoch, callbacks=[HistoryCSV(run.history), ..., TrainingBackup(run.backup)])
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path

import keras

from ultrasonic.atomic import atomic_path, write_json, write_text
from ultrasonic.errors import DataError, RunError
from ultrasonic.rundir import RunDir

log = logging.getLogger("ultrasonic")

STATE = "state.json"
BACKUP_FORMAT = 1


class HistoryCSV(keras.callbacks.Callback):
    """history.csv with exactly one row per finished epoch, rewritten atomically each epoch.

    Keras' CSVLogger appends to an open file: a resumed run would add a second
    row for an epoch that was logged but not yet backed up.

    Two timing columns: `epoch_seconds` (training and validation of the epoch)
    and `elapsed_seconds` (since `start`, a time.perf_counter() value: the
    start of the command, so data loading counts; a resumed run restarts it).
    """

    def __init__(self, path: str | Path, start: float | None = None):
        super().__init__()
        self.path = Path(path)
        self.start = time.perf_counter() if start is None else start
        self.epoch_start = self.start

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        rows = [row for row in read_history(self.path) if int(row["epoch"]) < epoch]
        rows.append({"epoch": epoch, **{k: _number(v) for k, v in sorted((logs or {}).items())},
                     "epoch_seconds": round(now - self.epoch_start, 2),
                     "elapsed_seconds": round(now - self.start, 2)})
        write_history(self.path, rows)


def read_history(path: str | Path) -> list[dict]:
    """The rows of history.csv (empty if there is none), one per epoch, the last row of an epoch kept."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if (row.get("epoch") or "").strip().isdigit()]
    by_epoch = {int(row["epoch"]): row for row in rows}
    return [by_epoch[e] for e in sorted(by_epoch)]


def write_history(path: str | Path, rows: list[dict]) -> None:
    columns = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, out.getvalue())


def _number(value) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights(swap_on_epoch=True), for an optimizer with use_ema (the `ema` setting).

    Put it first. From each epoch's validation until the next epoch's first step the
    model holds the averaged weights, and the optimizer the trained ones: validation,
    history, checkpoint and backup all see the averaged ones, and fit ends with them.
    A backup is therefore saved swapped; `resumed=True` (fit after restore_backup)
    swaps it back before the first step, so a resumed run trains on the trained weights.
    """

    def __init__(self, resumed: bool = False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed  # SwapEMAWeights' own flag: on_epoch_begin swaps when it is set


class TrainingBackup(keras.callbacks.Callback):
    """Weights and optimizer state after every epoch, for `restore_backup`; put it last."""

    def __init__(self, folder: str | Path):
        super().__init__()
        self.folder = Path(folder)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        with atomic_path(self.folder / name, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        write_json(self.folder / STATE, {"format": BACKUP_FORMAT, "epochs_done": epoch + 1, "weights": name})
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name != name:  # only once state.json names the new file
                old.unlink(missing_ok=True)


def restore_backup(model: keras.Model, folder: str | Path) -> int:
    """Load the last backed-up epoch into the compiled `model`; return how many epochs it had done."""
    folder = Path(folder)
    state_path = folder / STATE
    if not state_path.exists():
        return 0
    try:
        state = json.loads(state_path.read_text())
        weights = folder / state["weights"]
        epochs_done = int(state["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{state_path}: unreadable backup state ({exc}); start again with --overwrite") from exc
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
    try:
        model.load_weights(weights)
    except Exception as exc:  # h5py and Keras raise many types for a missing or mismatched file
        raise RunError(f"{weights}: cannot restore the backup into this model ({type(exc).__name__}: {exc}); "
                       "resume with the same settings as the interrupted run, or start again with --overwrite"
                       ) from exc
    log.info("train: resuming after epoch %d from %s", epochs_done, weights)
    return epochs_done


def clear_backup(folder: str | Path) -> None:
    """Remove the backup once the run is complete (or before a fresh start)."""
    shutil.rmtree(folder, ignore_errors=True)


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model when `monitor` improves: atomically, remembering the best across resumes.
    keep="last" saves every epoch instead, so the file holds the last one trained.

    `network` is what is saved: the inference network whose layers the fitted
    training model shares (models/build.py), so the file holds no augmentation;
    None saves the fitted model itself.
    """

    def __init__(self, path: Path, monitor: str = "val_loss", network: keras.Model | None = None,
                 keep: str = "best"):
        super().__init__()
        self.path, self.monitor, self.network, self.keep = Path(path), monitor, network, keep
        self.state_path = RunDir(self.path.parent).checkpoint_state
        self.sign = -1.0 if ("loss" in monitor or "error" in monitor) else 1.0
        self.best = -math.inf
        if self.state_path.exists() and self.path.exists():
            state = json.loads(self.state_path.read_text())
            self.best = self.sign * state["value"] if state["monitor"] == monitor else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise DataError(f"checkpoint: metric {self.monitor!r} not in {sorted(logs or {})}; set monitor")
        if self.keep == "last" or self.sign * value > self.best:
            self.best = self.sign * value
            with atomic_path(self.path) as tmp:
                (self.network or self.model).save(tmp)
            write_json(self.state_path, {"monitor": self.monitor, "value": float(value), "epoch": epoch + 1})
