"""Predictor: a trained run -> class probabilities, the same in the CLI, the service and Python.

    p = Predictor("runs/cxr")
    p.predict_files(["a.jpeg", "scans/"])  # [{"file", "class", "probabilities", "threshold"}, ...]
    p.predict_proba(images_uint8)          # (N, K)
    Predictor("runs/cxr", engine="onnx")   # the exported model.onnx through ONNX Runtime

Keras is imported only by the Keras engine (and load_model / predict_array),
so predicting through ONNX Runtime never loads Keras or TensorFlow.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from .config import Config
from .data.dicom import is_dicom_file
from .data.io import MAX_PIXELS, is_image_name, read_image
from .errors import BadImageError, DataError, RunError
from .engines import open_engine
from .run import RunDir

if TYPE_CHECKING:
    import keras

PREFETCH = 2  # decoded batches waiting for the model: decoding overlaps inference in bounded memory


def load_model(path: str | Path) -> keras.Model:
    """Load a .keras file with safe_mode=True: code inside a model file (Lambda) is refused."""
    import keras

    from . import models  # noqa: F401  (registers the project's layers before any model is loaded)

    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: model file not found; train a run first")
    if not zipfile.is_zipfile(path):  # Keras would say "file not found" for a truncated file
        raise RunError(f"{path}: not a .keras model (not a zip archive), perhaps truncated or damaged; "
                       "copy it again or retrain")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises ValueError/TypeError/OSError for hostile or broken files
        raise RunError(f"{path}: refused to load the model: {_refusal(exc)}. Models load in Keras' safe mode: "
                       "only files saved by `ultrasonic train`, without Lambda layers or unknown custom "
                       "objects; retrain, or find out where this file came from") from None


def _refusal(exc: Exception) -> str:
    """One line saying why Keras refused a model file (its own message can run to kilobytes of config)."""
    text = str(exc)
    if "`Lambda` layer" in text or "'class_name': 'Lambda'" in text:
        return "it contains a Lambda layer, Python code that loading would run"
    unknown = re.findall(r"Could not locate (class|function) '([^']+)'", text)
    if unknown:
        kind, name = unknown[-1]
        module = re.findall(r"Full object config: \{'module': '([^']+)'", text)
        return f"it needs an unknown {kind} {name!r}" + (f" from module {module[-1]!r}" if module else "")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:300].rstrip('.')}"


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
    return list(iter_paths(paths))


def iter_paths(paths: Iterable[str | os.PathLike], shard: tuple[int, int] | None = None) -> Iterator[Path]:
    """Like expand_paths, lazily: one folder's listing in memory at a time, whatever the archive's size.

    `shard=(k, n)` keeps the files whose path relative to the folder given hashes to k of 1..n: a
    split that stays the same when files are added or removed, so n machines can share an archive.
    """
    roots = [Path(p) for p in paths]
    for p in roots:
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
    for root in roots:
        files = _walk(root, root) if root.is_dir() else iter([root])
        for f in files:
            key = f.relative_to(root).as_posix() if root.is_dir() else f.as_posix()
            if shard is None or in_shard(key, shard):
                yield f


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """True when `key` belongs to shard k of n (k counted from 1); a hash, not a position."""
    k, n = shard
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % n == k - 1


def _walk(root: Path, folder: Path) -> Iterator[Path]:
    """Image files under `folder`, depth first, sorted by name within each folder."""
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, path)
        elif entry.is_file() and _is_image_file(path, root):
            yield path


def _is_image_file(path: Path, root: Path) -> bool:
    """An image name, or a visible file without a suffix whose first bytes say DICOM (PACS exports)."""
    rel = path.relative_to(root)
    if is_image_name(rel):
        return True
    return not rel.suffix and not any(part.startswith(".") for part in rel.parts) and is_dicom_file(path)


class Predictor:
    """A trained run ready to predict. Thresholds and classes come from its meta.json."""

    def __init__(self, run_dir: str | os.PathLike, max_pixels: int = MAX_PIXELS, engine: str = "keras"):
        self.run = RunDir(run_dir)
        self.meta = self.run.read_meta()
        self.engine = open_engine(self.run.path, self.meta, engine)  # "keras" or "onnx" (engines.py)
        self.classes: list[str] = self.meta["classes"]
        self.threshold: float = float(self.meta["threshold"])
        self.image_size: tuple[int, int] = tuple(self.meta["image_size"])
        self.channels: int = int(self.meta["channels"])
        self.positive_class: str | None = self.meta.get("positive_class")
        self.model_id: str = self.meta["model_id"]
        self.max_pixels = max_pixels

    @property
    def model(self) -> keras.Model:
        """The Keras model (Grad-CAM needs its gradients); only the Keras engine has one."""
        if self.engine.name != "keras":
            raise RunError(f"{self.run.path}: the {self.engine.name} engine has no Keras model; "
                           "heat maps need engine='keras'")
        return self.engine.model

    def read(self, source, name: str | None = None) -> np.ndarray:
        """Decode a file or bytes exactly as training did."""
        return read_image(source, self.image_size, self.channels, name=name, max_pixels=self.max_pixels)

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) probabilities for uint8 images (N, H, W, C) at the run's size."""
        images = np.asarray(images)
        expected = (*self.image_size, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise DataError(f"images have shape {images.shape}; this model takes (N, {expected})")
        return self.engine.predict(images.astype(np.uint8, copy=False), batch_size=batch_size)

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
        return [row for chunk in self.iter_files(iter_paths(paths), batch_size) for row in chunk]

    def iter_files(self, files: Iterable[str | os.PathLike], batch_size: int = 32,
                   prefetch: int = PREFETCH) -> Iterator[list[dict]]:
        """Rows batch by batch, in the order of `files`, which is read lazily.

        A thread pool on every core decodes up to `prefetch` batches ahead while
        the model runs on the current one (Pillow, Keras and ONNX Runtime all
        release the GIL); memory stays bounded by (prefetch + 1) batches.
        """
        workers = len(os.sched_getaffinity(0))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = deque()
            for chunk in _chunks(files, batch_size):
                pending.append((chunk, [pool.submit(self._try_read, name) for name in chunk]))
                if len(pending) > prefetch:
                    yield self._predict_chunk(*pending.popleft())
            while pending:
                yield self._predict_chunk(*pending.popleft())

    def _predict_chunk(self, chunk: list[str], futures: list) -> list[dict]:
        decoded = [f.result() for f in futures]
        good = [(name, x) for name, x in zip(chunk, decoded) if not isinstance(x, str)]
        rows = self.rows([n for n, _ in good], self.predict_proba(np.stack([x for _, x in good]))) if good else []
        errors = {name: x for name, x in zip(chunk, decoded) if isinstance(x, str)}
        by_name = {r["file"]: r for r in rows}
        return [by_name.get(name) or {"file": name, "error": errors[name]} for name in chunk]

    def _try_read(self, path: str) -> np.ndarray | str:
        """The decoded image, or the problem (a string) that makes it unreadable."""
        try:
            return self.read(path)
        except BadImageError as exc:
            return exc.problem


def _chunks(files: Iterable[str | os.PathLike], size: int) -> Iterator[list[str]]:
    """Lists of up to `size` names, pulled from `files` as needed."""
    files = iter(files)
    while chunk := [str(f) for f in itertools.islice(files, size)]:
        yield chunk
