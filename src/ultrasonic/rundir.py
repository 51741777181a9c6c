"""RunDir: the folder `train` leaves behind, and the one place that knows its file names.

    runs/<name>/model.keras        best checkpoint (loads with safe_mode=True); checkpoint.json: its epoch
    runs/<name>/meta.json          RunMeta: classes, input size, channels, threshold, data fingerprint, versions
    runs/<name>/config.yaml        every setting used
    runs/<name>/splits.csv         the split of every image, so evaluate sees the same test images
    runs/<name>/history.csv        per-epoch metrics;  curves.png: their plot
    runs/<name>/data_report.json   counts per split and class, skipped and unreadable files
    runs/<name>/eval/              EvalDir: metrics.json, confusion_matrix.png, roc.png, pr.png, reliability.png,
                                   report.html
    runs/<name>/eval_external/     the same, of `train --external DATA` (meta.json's `external` block)
    runs/<name>/folds/fold_<k>/    `train --cv K`: a complete run per fold; cv.json: the estimate over them
    runs/<name>/model.onnx         after `ultrasonic export` (savedmodel/ with --format savedmodel),
                                   each with its sidecar JSON (model.onnx.json, savedmodel.json)
    runs/<name>/audit.sqlite       the audit log of `ultrasonic serve`
    runs/<name>/ood.npz            the out-of-distribution gate's statistics (inference/ood.py); its
                                   method and thresholds are meta.json's `ood` block

    run = RunDir("runs/cxr")
    meta = run.read_meta()         # a RunMeta, checked: RunError names the file and the key
    meta.classes, meta.threshold

This module imports neither Keras nor numpy: the command line reads SPLITS and ENGINES from it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ultrasonic.atomic import remove_leftovers, write_json, write_text
from ultrasonic.errors import RunError

if TYPE_CHECKING:
    import numpy as np

META_FORMAT = 1
SPLITS = ("train", "val", "test")  # the values of splits.csv's `split` column
ENGINES = ("keras", "onnx")  # what can run a run's model: model.keras through Keras, model.onnx through ORT
INPUT = "uint8 (N, H, W, C), raw pixels 0-255; the model normalises itself"


@dataclass(frozen=True, kw_only=True)
class RunMeta:
    """meta.json: what a run's model is (required) and how it was made (optional).

    The fields without a default say what the model is: every reader needs
    them, so a meta.json without one is refused, and they travel with an
    exported model (CARRIED, `carried()`). The others are the training record:
    `train` writes them all, but they are only shown, never needed, so a run
    assembled by hand may leave them out. Keys this version does not know (a
    newer ultrasonic of the same format) are kept in `extra` and written back.
    """

    model_id: str
    task: str  # "binary" or "multiclass"
    classes: list[str]
    positive_class: str | None  # binary: the class whose probability meets the threshold
    image_size: tuple[int, int]
    channels: int
    input: str = INPUT
    threshold: float
    threshold_method: str | None = None
    operating_point: str | None = None  # the setting the threshold was chosen by: "youden", "sensitivity=0.95", ...
    temperature: float | None = None  # baked into model.keras; None: a run from before calibration (T = 1)
    calibration: dict[str, Any] | None = None  # {"method", "fitted_on", "before": {...}, "after": {...}}
    validation: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None
    train_seconds: float | None = None
    preset: str | None = None
    data: dict[str, Any] | None = None  # {"path", "kind", "fingerprint", "counts"}
    backend: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    # the out-of-distribution gate: {"method", "thresholds" (method -> score), "false_rejection" (the target
    # on validation), "validation_false_rejection" (measured), "fitted_on" ({"train": n, "val": n}), "file"};
    # None for runs made before the gate: they predict without one
    ood: dict[str, Any] | None = None
    # `train --external DATA`: the run on another source's labelled images, beside `validation`:
    # {"data", "evaluated_on", "n", "metrics" (the file), "roc_auc", "accuracy", "sensitivity", "specificity"
    # (each {"value", "ci95"}), "threshold", "agrees", "warnings"} (evaluation/external.py); None: not asked for
    external: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def carried(self) -> dict[str, Any]:
        """What an exported model takes with it (ONNX metadata_props, the sidecar JSON)."""
        values = {name: getattr(self, name) for name in CARRIED}
        return {**values, "image_size": list(self.image_size)}  # JSON's list, in its place

    def to_json(self) -> dict[str, Any]:
        """The meta.json object: format first, the fields in order, then the kept unknown keys."""
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {"format": META_FORMAT, **known, "image_size": list(self.image_size), **self.extra}

    @classmethod
    def from_json(cls, obj: Any, where: Path | str) -> RunMeta:
        """Check `obj` (meta.json as read from `where`) key by key; RunError names the first bad one."""
        if not isinstance(obj, dict):
            raise RunError(f"{where}: holds a {type(obj).__name__}, not a JSON object; re-run training")
        fmt = obj.get("format", 0)
        if not _matches(fmt, int):
            raise RunError(f"{where}: key 'format' is {_short(fmt)}, not an integer; re-run training")
        if fmt > META_FORMAT:
            raise RunError(f"{where}: made by a newer ultrasonic (format {fmt!r}, this one reads up to "
                           f"{META_FORMAT}); upgrade ultrasonic")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            if f.name not in obj:
                if _required(f):
                    raise RunError(f"{where}: key {f.name!r} is missing; this run cannot be used: re-run training")
                continue
            if not _matches(obj[f.name], hints[f.name]):
                raise RunError(f"{where}: key {f.name!r} is {_short(obj[f.name])}, not {_describe(hints[f.name])}; "
                               "the file is damaged or was edited: re-run training")
            values[f.name] = obj[f.name]
        values["image_size"] = tuple(values["image_size"])
        extra = {k: v for k, v in obj.items() if k not in hints and k != "format"}
        meta = cls(**values, extra=extra)
        meta._check_classes(where)
        return meta

    def _check_classes(self, where: Path | str) -> None:
        if len(self.classes) < 2:
            raise RunError(f"{where}: key 'classes' is {self.classes}; a classifier needs two or more classes")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise RunError(f"{where}: key 'positive_class' {self.positive_class!r} is not one of {self.classes}")
        if len(self.classes) == 2 and self.positive_class is None:
            raise RunError(f"{where}: key 'positive_class' is null for a two-class model; name one of "
                           f"{self.classes}")


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


CARRIED = tuple(f.name for f in dataclasses.fields(RunMeta) if _required(f))


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type hint (JSON has lists where Python has tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint in (int, float):  # a bool is an int to Python, never a number in meta.json
        allowed = (int,) if hint is int else (int, float)
        return isinstance(value, allowed) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, list) and len(value) == len(args) and all(map(_matches, value, args))
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    return isinstance(value, origin or hint)


_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list",
          type(None): "null", Any: "anything"}


def _describe(hint: Any) -> str:
    """A type hint in words: `str | None` -> "a string or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin in (tuple, list):  # homogeneous: tuple[int, int], list[str]
        count = f"{len(args)} " if origin is tuple else ""
        return f"a list of {count}{_describe(args[0]).split(' ', 1)[1]}s"
    return _NAMES[origin or hint]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class EvalDir:
    """The files `evaluate` writes: RUN_DIR/eval/ or the folder given with --out."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    metrics = property(lambda self: self.path / "metrics.json")
    confusion_matrix = property(lambda self: self.path / "confusion_matrix.png")
    roc = property(lambda self: self.path / "roc.png")
    pr = property(lambda self: self.path / "pr.png")
    reliability = property(lambda self: self.path / "reliability.png")
    report = property(lambda self: self.path / "report.html")


def sidecar_path(exported: str | Path) -> Path:
    """The metadata beside an exported model: model.onnx -> model.onnx.json; savedmodel/ -> savedmodel.json."""
    exported = Path(exported)
    return exported.with_name(exported.name + ".json")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    model = property(lambda self: self.path / "model.keras")
    checkpoint_state = property(lambda self: self.path / "checkpoint.json")  # monitor, value, epoch of model
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
    eval_external = property(lambda self: self.path / "eval_external")
    folds = property(lambda self: self.path / "folds")
    cv = property(lambda self: self.path / "cv.json")
    cv_predictions = property(lambda self: self.path / "cv_predictions.csv")
    evaluation = property(lambda self: EvalDir(self.eval))
    onnx = property(lambda self: self.path / "model.onnx")
    savedmodel = property(lambda self: self.path / "savedmodel")
    audit = property(lambda self: self.path / "audit.sqlite")
    ood = property(lambda self: self.path / "ood.npz")  # the OOD gate's class means and precision matrix

    def model_file(self, engine: str) -> Path:
        """The file `engine` loads: model.keras for Keras, model.onnx for ONNX Runtime."""
        if engine not in ENGINES:
            raise RunError(f"engine {engine!r} is not one of {ENGINES}")
        return self.model if engine == "keras" else self.onnx

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

    def read_meta(self) -> RunMeta:
        """meta.json, checked; a missing, damaged or too new file is a RunError naming it."""
        if not self.meta_path.exists():
            raise RunError(f"{self.path}: no meta.json; is this a finished `ultrasonic train` run directory?")
        try:
            obj = json.loads(self.meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{self.meta_path}: not valid JSON ({exc}); re-run training") from exc
        return RunMeta.from_json(obj, self.meta_path)

    def write_meta(self, meta: RunMeta) -> None:
        write_json(self.meta_path, meta.to_json())

    def write_splits(self, refs: Sequence[str], labels: np.ndarray, classes: list[str], split: Sequence[str],
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
