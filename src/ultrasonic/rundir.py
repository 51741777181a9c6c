"""RunDir: the folder `train` leaves behind, and the one place that knows its file names.

    runs/<name>/model.keras        best checkpoint (loads with safe_mode=True)
    runs/<name>/meta.json          classes, input size, channels, threshold, data fingerprint, versions
    runs/<name>/config.yaml        every setting used
    runs/<name>/splits.csv         the split of every image, so evaluate sees the same test images
    runs/<name>/history.csv        per-epoch metrics;  curves.png: their plot
    runs/<name>/data_report.json   counts per split and class, skipped and unreadable files
    runs/<name>/eval/              metrics.json, confusion_matrix.png, roc.png, pr.png, report.html
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np

from ultrasonic.atomic import remove_leftovers, write_json, write_text
from ultrasonic.errors import RunError

META_FORMAT = 1


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    model = property(lambda self: self.path / "model.keras")
    meta_path = property(lambda self: self.path / "meta.json")
    config = property(lambda self: self.path / "config.yaml")
    splits = property(lambda self: self.path / "splits.csv")
    history = property(lambda self: self.path / "history.csv")
    curves = property(lambda self: self.path / "curves.png")
    data_report = property(lambda self: self.path / "data_report.json")
    backup = property(lambda self: self.path / "backup")
    logs = property(lambda self: self.path / "logs")
    log_file = property(lambda self: self.path / "train.log")
    eval = property(lambda self: self.path / "eval")

    def prepare(self, resume: bool = False, overwrite: bool = False) -> None:
        """Create the folder; refuse to mix a new run into an old one unless told."""
        if self.model.exists() or self.history.exists():
            if overwrite:
                shutil.rmtree(self.path)
            elif not resume:
                raise RunError(f"{self.path}: already holds a run; pass --resume to continue it "
                               "or --overwrite to start again")
        self.path.mkdir(parents=True, exist_ok=True)
        if resume:  # a kill leaves temporary files of atomic writes behind
            for folder in (self.path, self.backup):
                remove_leftovers(folder)

    def read_meta(self) -> dict:
        if not self.meta_path.exists():
            raise RunError(f"{self.path}: no meta.json; is this a finished `ultrasonic train` run directory?")
        try:
            meta = json.loads(self.meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{self.meta_path}: not valid JSON ({exc}); re-run training") from exc
        if meta.get("format", 0) > META_FORMAT:
            raise RunError(f"{self.meta_path}: made by a newer ultrasonic (format {meta['format']}); upgrade")
        return meta

    def write_meta(self, meta: dict) -> None:
        write_json(self.meta_path, {"format": META_FORMAT, **meta})

    def write_splits(self, refs: list[str], labels: np.ndarray, classes: list[str], split: np.ndarray,
                     patients: list[str | None]) -> None:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["file", "class", "split", "patient"])
        for ref, label, name, patient in zip(refs, labels, split, patients):
            writer.writerow([ref, classes[label], name, patient or ""])
        write_text(self.splits, out.getvalue())

    def read_splits(self) -> dict[str, str]:
        """file -> split, as saved by train."""
        if not self.splits.exists():
            raise RunError(f"{self.splits}: missing; evaluate needs the run's splits.csv or an explicit DATA")
        with open(self.splits, newline="") as f:
            return {row["file"]: row["split"] for row in csv.DictReader(f)}
