"""Predictor: a trained run -> class probabilities, the same in the CLI, the service and Python.

    p = Predictor("runs/cxr")
    p.predict_files(["a.jpeg", "scans/"])  # [{"file", "class", "probabilities", "threshold"}, ...]
    p.predict_proba(images_uint8)          # (N, K)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import keras
import numpy as np

from . import models  # noqa: F401  (registers the project's layers before any model is loaded)
from .config import Config
from .data.io import MAX_PIXELS, is_image_name, read_image
from .errors import BadImageError, DataError, RunError
from .run import RunDir


def load_model(path: str | Path) -> keras.Model:
    """Load a .keras file with safe_mode=True: code inside a model file (Lambda) is refused."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: model file not found; train a run first")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises ValueError/TypeError/OSError for hostile or broken files
        raise RunError(f"{path}: refused to load the model ({type(exc).__name__}: {exc}); only models "
                       "made by ultrasonic, without Lambda layers or unknown custom objects, are loaded") from None


def predict_array(model: keras.Model, images: np.ndarray, indices: np.ndarray | None = None,
                  batch_size: int = 64) -> np.ndarray:
    """(N, K) class probabilities for images[indices]; a sigmoid output becomes [1 - p, p].

    A short batch is padded up to the next power of two (at most `batch_size`), so the
    compiled predict step is traced for a handful of shapes only, and one image costs one.
    """
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    out = []
    for k in range(0, len(indices), batch_size):
        batch = np.asarray(images[indices[k:k + batch_size]])
        size = min(batch_size, 1 << (len(batch) - 1).bit_length())
        padded = np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])
        out.append(np.asarray(model.predict_on_batch(padded))[:len(batch)])
    probs = np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), dtype="float32")
    return np.concatenate([1 - probs, probs], axis=1) if probs.shape[1] == 1 else probs


def positive_index(cfg: Config, classes: list[str]) -> int:
    """The class called 'positive' (sensitivity = its recall): positive_class, else the second."""
    if cfg.positive_class is None:
        return 1
    if cfg.positive_class not in classes:
        raise DataError(f"positive_class {cfg.positive_class!r} is not one of the classes {classes}")
    return classes.index(cfg.positive_class)


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders searched recursively for image names, in sorted order."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f.relative_to(p)))
        elif p.exists():
            found.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return found


class Predictor:
    """A trained run ready to predict. Thresholds and classes come from its meta.json."""

    def __init__(self, run_dir: str | os.PathLike, max_pixels: int = MAX_PIXELS):
        self.run = RunDir(run_dir)
        self.meta = self.run.read_meta()
        self.model = load_model(self.run.model)
        self.classes: list[str] = self.meta["classes"]
        self.threshold: float = float(self.meta["threshold"])
        self.image_size: tuple[int, int] = tuple(self.meta["image_size"])
        self.channels: int = int(self.meta["channels"])
        self.positive_class: str | None = self.meta.get("positive_class")
        self.model_id: str = self.meta["model_id"]
        self.max_pixels = max_pixels

    def read(self, source, name: str | None = None) -> np.ndarray:
        """Decode a file or bytes exactly as training did."""
        return read_image(source, self.image_size, self.channels, name=name, max_pixels=self.max_pixels)

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) probabilities for uint8 images (N, H, W, C) at the run's size."""
        images = np.asarray(images)
        expected = (*self.image_size, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise DataError(f"images have shape {images.shape}; this model takes (N, {expected})")
        return predict_array(self.model, images.astype(np.uint8, copy=False), batch_size=batch_size)

    def decide(self, probs: np.ndarray) -> list[str]:
        """Class names: binary at the run's threshold for the positive class, else argmax."""
        if len(self.classes) == 2:
            pos = self.classes.index(self.positive_class)
            return [self.classes[pos] if p[pos] >= self.threshold else self.classes[1 - pos] for p in probs]
        return [self.classes[i] for i in probs.argmax(axis=1)]

    def rows(self, names: list[str], probs: np.ndarray) -> list[dict]:
        """The shared output shape: file, class, probabilities (class -> p), threshold."""
        decided = self.decide(probs)
        threshold = self.threshold if len(self.classes) == 2 else None
        return [{"file": name, "class": c, "threshold": threshold,
                 "probabilities": {k: round(float(v), 6) for k, v in zip(self.classes, p)}}
                for name, c, p in zip(names, decided, probs)]

    def predict_files(self, paths: Iterable[str | os.PathLike], batch_size: int = 32) -> list[dict]:
        """One row per image file; an unreadable file gives a row with an 'error' instead."""
        return [row for chunk in self.iter_files(expand_paths(paths), batch_size) for row in chunk]

    def iter_files(self, files: list[Path], batch_size: int = 32) -> Iterator[list[dict]]:
        """Rows batch by batch; files are decoded by a thread pool (Pillow releases the GIL)."""
        workers = len(os.sched_getaffinity(0))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for k in range(0, len(files), batch_size):
                chunk = [str(f) for f in files[k:k + batch_size]]
                decoded = list(pool.map(self._try_read, chunk))
                good = [(name, x) for name, x in zip(chunk, decoded) if not isinstance(x, str)]
                rows = self.rows([n for n, _ in good], self.predict_proba(np.stack([x for _, x in good]))) \
                    if good else []
                errors = {name: x for name, x in zip(chunk, decoded) if isinstance(x, str)}
                by_name = {r["file"]: r for r in rows}
                yield [by_name.get(name) or {"file": name, "error": errors[name]} for name in chunk]

    def _try_read(self, path: str) -> np.ndarray | str:
        try:
            return self.read(path)
        except BadImageError as exc:
            return exc.problem
