"""What runs a trained model: Keras (the run's model.keras) or ONNX Runtime (its exported model.onnx).

Both take the same raw uint8 images (N, H, W, C) and give (N, K) class
probabilities, and with `predict_with_features` also the pooled penultimate
features (N, D) the out-of-distribution gate scores (inference/ood.py). The ONNX engine imports neither Keras nor TensorFlow, so a
deployment that predicts through it needs only numpy, Pillow and
onnxruntime at run time.

    engine = open_engine("runs/cxr", RunDir("runs/cxr").read_meta(), "onnx")
    probs = engine.predict(images_uint8, batch_size=64)
    probs, features = engine.predict_with_features(images_uint8)   # features None: an old model.onnx
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ultrasonic.errors import MissingExtraError, RunError
from ultrasonic.inference.ood import pooled
from ultrasonic.rundir import CARRIED, ENGINES, RunDir, RunMeta  # noqa: F401  (ENGINES: importable from here)

if TYPE_CHECKING:
    import keras

FEATURES_LAYER = "drop_features"  # every network's pooled penultimate features (models/compact.py, seed.py, ...)
FEATURES_OUTPUT = "features"  # their name as the second output of model.onnx (export.py)


def open_engine(run_dir: str | Path, meta: RunMeta, engine: str = "keras"):
    """The engine named `engine` (one of ENGINES) for the run in `run_dir`, whose meta.json is `meta`."""
    path = RunDir(run_dir).model_file(engine)  # RunError for an unknown engine
    return KerasEngine(path) if engine == "keras" else OnnxEngine(path, meta.model_id)


class KerasEngine:
    """The .keras model, loaded in safe mode; imports Keras (and its backend) when opened."""

    name = "keras"

    def __init__(self, path: Path):
        self.model = load_model(path)
        # a second view of the same layers, made here so that model.keras itself stays single-output
        self.scoring_model = scoring_model(self.model)

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return predict_array(self.model, images, batch_size=batch_size)

    def predict_with_features(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        return predict_with_features(self.scoring_model, images, batch_size=batch_size)


class OnnxEngine:
    """An exported model.onnx through ONNX Runtime on the CPU; refuses a file exported from another model."""

    name = "onnx"

    def __init__(self, path: Path, model_id: str):
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingExtraError("onnx", "engine 'onnx'", "onnxruntime") from exc
        if not path.is_file():
            raise RunError(f"{path}: not found; make it with `ultrasonic export {path.parent}` first")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about unused initialisers tf2onnx leaves
        # ORT's default is one thread per physical core of the machine, blind to CPU affinity, and its
        # threads spin while idle, taking the cores the decoding threads need; measured 108 -> 155 img/s.
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types for broken files
            raise RunError(f"{path}: ONNX Runtime cannot load it ({exc}); export it again") from exc
        self.metadata = {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()
                         if k in CARRIED}
        if self.metadata.get("model_id") != model_id:
            raise RunError(f"{path}: exported from model {self.metadata.get('model_id')}, but the run's model is "
                           f"{model_id}; export it again (`ultrasonic export {path.parent}`)")
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        self.output_name = names[0]
        # model.onnx exported before the gate has no `features` output: predictions come without a Mahalanobis score
        self.features_name = FEATURES_OUTPUT if FEATURES_OUTPUT in names else None

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self._run(images, batch_size, [self.output_name])[0]

    def predict_with_features(self, images: np.ndarray,
                              batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        if self.features_name is None:
            return self.predict(images, batch_size), None
        return tuple(self._run(images, batch_size, [self.output_name, self.features_name]))

    def _run(self, images: np.ndarray, batch_size: int, outputs: list[str]) -> list[np.ndarray]:
        parts = [self.session.run(outputs, {self.input_name: images[k:k + batch_size]})
                 for k in range(0, len(images), batch_size)]
        if not parts:
            units = self.session.get_outputs()[0].shape[-1]
            return [two_columns(np.zeros((0, units), "float32")), *([np.zeros((0, 0))] if len(outputs) > 1 else [])]
        probs = two_columns(np.concatenate([p[0] for p in parts]))
        return [probs, *([np.concatenate([pooled(p[1]) for p in parts])] if len(outputs) > 1 else [])]


def load_model(path: str | Path) -> keras.Model:
    """Load a .keras file with safe_mode=True: code inside a model file (Lambda) is refused."""
    from ultrasonic.backend import require_keras

    keras = require_keras("the .keras model")
    # registers RandomAffine and VGGPreprocess, which model files saved before the delivered network held
    # built-in layers only still name; a current model.keras needs no ultrasonic to load
    import ultrasonic.models.build  # noqa: F401

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
                       "objects; retrain, or find out where this file came from") from exc


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
    return two_columns(probs)


def scoring_model(model: keras.Model) -> keras.Model:
    """The network with two outputs, its probabilities and the output of its layer "drop_features"
    (the pooled penultimate features; the seed's feature map, pooled by inference/ood.py)."""
    import keras

    try:
        features = model.get_layer(FEATURES_LAYER).output
    except ValueError as exc:
        raise RunError(f"model {model.name}: has no layer {FEATURES_LAYER!r}, so the OOD gate has no features "
                       "to score; retrain it with this version of ultrasonic") from exc
    return keras.Model(model.inputs, [model.outputs[0], features], name=f"{model.name}_scoring")


def predict_with_features(scoring: keras.Model, images: np.ndarray, indices: np.ndarray | None = None,
                          batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) probabilities and (N, D) pooled features of images[indices] through `scoring_model(...)`.
    Batches are padded as in predict_array."""
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    probs, features = [], []
    for k in range(0, len(indices), batch_size):
        batch = np.asarray(images[indices[k:k + batch_size]])
        size = min(batch_size, 1 << (len(batch) - 1).bit_length())
        padded = np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])
        p, f = scoring.predict_on_batch(padded)
        probs.append(np.asarray(p)[:len(batch)])
        features.append(pooled(np.asarray(f)[:len(batch)]))
    if not probs:
        return two_columns(np.zeros((0, scoring.output_shape[0][-1]), "float32")), np.zeros((0, 0))
    return two_columns(np.concatenate(probs)), np.concatenate(features)


def two_columns(probs: np.ndarray) -> np.ndarray:
    """(N, K) class probabilities: one sigmoid unit (N, 1), p of classes[1], becomes [1 - p, p]."""
    return np.concatenate([1 - probs, probs], axis=1) if probs.shape[1] == 1 else probs
