"""Predictor: a trained run -> class probabilities, the same in the CLI, the service and Python.

    p = Predictor("runs/cxr")
    p.predict_files(["a.jpeg", "scans/"])  # [{"file", "class", "probabilities", "threshold",
                                           #   "ood_score", "in_distribution"}, ...]
                                           # a bad file: {"file", "error"}; decoder warnings: "note"
    p.predict_proba(images_uint8)          # (N, K)
    p.predict_scored(images_uint8)         # (N, K) and the OOD scores (N,) (None without a gate)
    Predictor("runs/cxr", engine="onnx")   # the exported model.onnx through ONNX Runtime
    Predictor("runs/cxr", ood="warn")      # an image unlike the training images keeps its class, flagged

The out-of-distribution gate (inference/ood.py) scores every image; with
ood="abstain" (the default) an image above the run's threshold gets no class,
and its row says "not like the training images" with the score.

Keras is imported only by the Keras engine (and load_model / predict_array),
so predicting through ONNX Runtime never loads Keras or TensorFlow.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ultrasonic.config import load_config
from ultrasonic.data.contain import Contained, decode_contained
from ultrasonic.data.dataset import quality_limits
from ultrasonic.data.files import iter_paths
from ultrasonic.data.io import MAX_PIXELS
from ultrasonic.errors import ConfigError, DataError, RunError
from ultrasonic.inference.engines import open_engine
from ultrasonic.inference.ood import ACTIONS, MESSAGE, OodGate, decision
from ultrasonic.rundir import RunDir, RunMeta

if TYPE_CHECKING:
    import keras

PREFETCH = 2  # decoded batches waiting for the model: decoding overlaps inference in bounded memory


class Predictor:
    """A trained run ready to predict. Thresholds and classes come from its meta.json."""

    def __init__(self, run_dir: str | os.PathLike, max_pixels: int = MAX_PIXELS, engine: str = "keras",
                 ood: str = "abstain"):
        if ood not in ACTIONS:
            raise ConfigError(f"--ood {ood!r} is not one of {', '.join(ACTIONS)}")
        self.run = RunDir(run_dir)
        self.meta: RunMeta = self.run.read_meta()
        self.engine = open_engine(self.run.path, self.meta, engine)  # "keras" or "onnx" (engines.py)
        self.ood = ood
        self.gate: OodGate | None = self._open_gate() if ood != "off" else None
        self.classes: list[str] = self.meta.classes
        self.threshold: float = float(self.meta.threshold)
        self.image_size: tuple[int, int] = self.meta.image_size
        self.channels: int = self.meta.channels
        self.positive_class: str | None = self.meta.positive_class
        self.model_id: str = self.meta.model_id
        self.max_pixels = max_pixels
        self.limits = _quality_limits(self.run)

    @property
    def model(self) -> keras.Model:
        """The Keras model (Grad-CAM needs its gradients); only the Keras engine has one."""
        if self.engine.name != "keras":
            raise RunError(f"{self.run.path}: the {self.engine.name} engine has no Keras model; "
                           "heat maps need engine='keras'")
        return self.engine.model

    def read(self, source, name: str | None = None) -> np.ndarray:
        """Decode a file or bytes exactly as training did; BadImageError for any problem of the file."""
        return self.decode(source, name).unwrap()

    def decode(self, source, name: str | None = None) -> Contained:
        """The image or its error, and the decoder's notes; never raises for a bad file (data/contain.py)."""
        return decode_contained(source, self.image_size, self.channels, name=name, max_pixels=self.max_pixels,
                                **self.limits)

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) probabilities for uint8 images (N, H, W, C) at the run's size."""
        return self.engine.predict(self._checked(images), batch_size=batch_size)

    def _checked(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        expected = (*self.image_size, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise DataError(f"images have shape {images.shape}; this model takes (N, {expected})")
        return images.astype(np.uint8, copy=False)

    def _open_gate(self) -> OodGate | None:
        """The run's gate; None for a run trained before there was one (its rows say so: ood_score None)."""
        if self.meta.ood is None:
            return None
        gate = OodGate.load(self.run.ood, self.meta.ood)
        if gate.method == "mahalanobis" and getattr(self.engine, "features_name", True) is None:
            raise RunError(f"{self.run.onnx}: has no `features` output, which the run's OOD gate (mahalanobis) "
                           f"scores; export it again (`ultrasonic export {self.run.path}`), or pass --ood off")
        return gate

    def predict_scored(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, K) probabilities and the (N,) OOD scores of the run's gate (None without one, or --ood off)."""
        if self.gate is None:
            return self.predict_proba(images, batch_size), None
        images = self._checked(images)
        if self.gate.method == "mahalanobis":
            probs, features = self.engine.predict_with_features(images, batch_size=batch_size)
        else:
            probs, features = self.engine.predict(images, batch_size=batch_size), None
        return probs, self.gate.scores(probs, features)

    def decide(self, probs: np.ndarray) -> list[str]:
        """Class names: binary at the run's threshold for the positive class, else argmax."""
        if len(self.classes) == 2:
            pos = self.classes.index(self.positive_class)
            return [self.classes[pos] if p[pos] >= self.threshold else self.classes[1 - pos] for p in probs]
        return [self.classes[i] for i in probs.argmax(axis=1)]

    def rows(self, names: list[str], probs: np.ndarray, ood_scores: np.ndarray | None = None) -> list[dict]:
        """The shared output shape: file, class, probabilities (class -> p), threshold, ood_score and
        in_distribution (both None without a gate); an image unlike the training images also has a
        `message`, and under ood="abstain" its class is None."""
        decided = self.decide(probs)
        threshold = self.threshold if len(self.classes) == 2 else None
        rows = [{"file": name, "class": c, "threshold": threshold,
                 "probabilities": {k: round(float(v), 6) for k, v in zip(self.classes, p)},
                 "ood_score": None, "in_distribution": None}
                for name, c, p in zip(names, decided, probs)]
        if ood_scores is not None and self.gate is not None:
            for row, score, inside in zip(rows, ood_scores, decision(ood_scores, self.gate.threshold)):
                row["ood_score"], row["in_distribution"] = round(float(score), 6), bool(inside)
                if not inside:
                    row["message"] = f"{MESSAGE} (OOD score {row['ood_score']:.4g} above {self.gate.threshold:.4g})"
                    if self.ood == "abstain":
                        row["class"] = None
        return rows

    def rows_of(self, names: list[str], decoded: list[Contained]) -> list[dict]:
        """One row per file in order: the prediction, or {"file", "error"}; with "note" when the decoder warned."""
        good = [i for i, d in enumerate(decoded) if d.error is None]
        rows = [{"file": name, "error": d.error.problem} if d.error else None for name, d in zip(names, decoded)]
        if good:
            probs, scores = self.predict_scored(np.stack([decoded[i].image for i in good]))
            for i, row in zip(good, self.rows([names[i] for i in good], probs, scores)):
                rows[i] = row
        for row, d in zip(rows, decoded):
            if d.notes:
                row["note"] = d.note
        return rows

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
                pending.append((chunk, [pool.submit(self.try_read, name) for name in chunk]))
                if len(pending) > prefetch:
                    yield self._predict_chunk(*pending.popleft())
            while pending:
                yield self._predict_chunk(*pending.popleft())

    def _predict_chunk(self, chunk: list[str], futures: list) -> list[dict]:
        return self.rows_of(chunk, [f.result() for f in futures])

    def try_read(self, path: str) -> Contained:
        """The decoded file (image or error, and notes); never raises for a bad file."""
        return self.decode(path)


def _chunks(files: Iterable[str | os.PathLike], size: int) -> Iterator[list[str]]:
    """Lists of up to `size` names, pulled from `files` as needed."""
    files = iter(files)
    while chunk := [str(f) for f in itertools.islice(files, size)]:
        yield chunk


def _quality_limits(run: RunDir) -> dict[str, int]:
    """The run's min_image_side and min_dynamic_range (config.yaml), so predict refuses what training did;
    the defaults for a run without its settings (an exported model alone)."""
    if not run.config.exists():
        return {}
    return quality_limits(load_config(file=run.config))
