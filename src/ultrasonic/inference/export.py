"""export: a run's model as ONNX or a TensorFlow SavedModel, through Keras' own `model.export`.

    ultrasonic export runs/cxr                          # -> runs/cxr/model.onnx (+ model.onnx.json)
    ultrasonic export runs/cxr --format savedmodel      # -> runs/cxr/savedmodel/ (+ savedmodel.json)

The exported model takes the same raw uint8 images (N, H, W, C) as the .keras
file: preprocessing is inside it. Classes, threshold, positive class, image
size, channels and model_id travel with it, in a sidecar JSON beside it and,
for ONNX, in the model's own metadata_props (values JSON-encoded), with the
input contract: how to make that uint8 tensor from a file exactly as
ultrasonic does (contract.py). The ONNX output is named `probabilities`; a
second output, `features`, holds the penultimate features (the output of the
layer "drop_features") that the out-of-distribution gate scores (ood.py).

Both formats are made by TensorFlow (tf2onnx for ONNX). Under another backend
the export runs in a TensorFlow subprocess: the .keras file is the same under
every backend, so the result is too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ultrasonic import __version__
from ultrasonic.atomic import atomic_path, write_json
from ultrasonic.errors import MissingExtraError, RunError
from ultrasonic.inference.contract import OUTPUT_NAME, input_contract
from ultrasonic.inference.engines import FEATURES_OUTPUT
from ultrasonic.rundir import RunDir, sidecar_path

log = logging.getLogger("ultrasonic")

FORMATS = ("onnx", "savedmodel")


def export(run_dir: str | os.PathLike, format: str = "onnx", out: str | os.PathLike | None = None) -> Path:
    """Export the run's model; returns where it went. The sidecar JSON is `<out>.json`."""
    if format not in FORMATS:
        raise RunError(f"export format {format!r} is not one of {FORMATS}")
    run = RunDir(run_dir)
    meta = run.read_meta()
    out = Path(out) if out else (run.onnx if format == "onnx" else run.savedmodel)
    import keras

    if keras.backend.backend() != "tensorflow":
        return _export_in_tensorflow(run.path, format, out)
    from ultrasonic.inference.engines import load_model, scoring_model

    model = load_model(run.model)
    height, width = meta.image_size
    model(np.zeros((1, height, width, meta.channels), dtype=np.uint8))  # export refuses a never-called model
    info = meta.carried()
    # the decoding rules hold for both formats; the tensor names are ONNX's (a SavedModel has its signature's)
    names = (model.inputs[0].name, OUTPUT_NAME) if format == "onnx" else (None, None)
    contract = input_contract(meta, *names)
    if format == "onnx":
        scoring = scoring_model(model)
        scoring(np.zeros((1, height, width, meta.channels), dtype=np.uint8))  # this view too must have been called
        _export_onnx(scoring, out, {**info, "input_contract": contract})
    else:
        _export_savedmodel(model, out)
    write_json(sidecar_path(out), {**info, "format": format, "file": out.name, "ultrasonic": __version__,
                                   "input_contract": contract,
                                   "input": {"dtype": "uint8", "shape": [None, height, width, meta.channels],
                                             "note": "raw pixels 0-255; the model normalises itself"},
                                   "output": "class probabilities (N, K); one sigmoid unit (N, 1) for two "
                                             "classes, p of classes[1]",
                                   **({"features": f"ONNX output {FEATURES_OUTPUT!r}: the penultimate features "
                                      "the out-of-distribution gate scores (RUN_DIR/ood.npz)"}
                                      if format == "onnx" else {})})
    log.info("export: %s -> %s (+ %s)", run.model, out, sidecar_path(out).name)
    return out


def _export_onnx(model, out: Path, info: dict) -> None:
    for module in ("tf2onnx", "onnx"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError("onnx", "ONNX export", module)
    import onnx

    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' numpy-2 patch of tf2onnx touches np.object
        model.export(str(tmp), format="onnx", verbose=False)
        proto = onnx.load(str(tmp))
        _rename(proto.graph, proto.graph.input[0], info["input_contract"]["tensor"]["name"])
        _rename(proto.graph, proto.graph.output[0], OUTPUT_NAME)
        _rename(proto.graph, proto.graph.output[1], FEATURES_OUTPUT)
        for key, value in info.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(proto, str(tmp))


def _rename(graph, value, name: str) -> None:
    """Give a graph input or output the name the contract promises (tf2onnx names outputs after a
    TensorFlow op, e.g. 'Identity:0'), and every node that reads or writes it."""
    old = value.name
    if old == name:
        return
    if any(name in (*node.input, *node.output) for node in graph.node):
        raise RunError(f"export: the ONNX graph already has a tensor named {name!r}; cannot rename {old!r} to it")
    for node in graph.node:
        node.output[:] = [name if x == old else x for x in node.output]
        node.input[:] = [name if x == old else x for x in node.input]
    for info in graph.value_info:
        if info.name == old:
            info.name = name
    value.name = name


def _export_savedmodel(model, out: Path) -> None:
    """A folder cannot be replaced in one step: write beside it, then swap (the old one is removed last)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.export(str(tmp / "model"), format="tf_saved_model", verbose=False)
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp / "model", out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_in_tensorflow(run_dir: Path, format: str, out: Path) -> Path:
    """Run `ultrasonic export` again under KERAS_BACKEND=tensorflow: both formats are TensorFlow's."""
    if importlib.util.find_spec("tensorflow") is None:
        raise RunError(f"{run_dir}: export makes ONNX and SavedModel files with TensorFlow, which is not "
                       "installed here; export on a machine with tensorflow-cpu (the .keras file is the same "
                       "under every backend), then predict anywhere with --engine onnx")
    log.info("export: the %s backend cannot export %s; running the export under TensorFlow", _backend(), format)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-m", "ultrasonic.cli", "-q", "export", str(run_dir), "--format", format,
                           "--out", str(out)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()
        raise RunError(f"{run_dir}: export under TensorFlow failed: {lines[-1]}")
    return out


def _backend() -> str:
    import keras

    return keras.backend.backend()
