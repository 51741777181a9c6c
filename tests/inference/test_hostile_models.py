"""Hostile model files: code inside a .keras file is refused with one clear error, never run.

`load_model` uses Keras' safe_mode=True. A Lambda layer (Python bytecode),
a custom class or function ultrasonic does not know, or a config naming any
Python function (os.system) must give a RunError through `Predictor` and
`ultrasonic predict`, while a model made by ultrasonic still loads.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from ultrasonic.atomic import write_json
from ultrasonic.cli import main
from ultrasonic.config import load_config
from ultrasonic.errors import RunError
from ultrasonic.models import build_model
from ultrasonic.inference.engines import load_model
from ultrasonic.inference.predictor import Predictor

SIZE = 16


def triple(x):
    return x * 3


class Secret(keras.layers.Layer):
    """A custom layer that is not registered with Keras: its class is unknown when loading."""

    def call(self, x):
        return x


def small(middle: keras.layers.Layer) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Flatten()(middle(keras.ops.cast(inputs, "float32")))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def crafted(source: Path, target: Path, mutate) -> Path:
    """A copy of a .keras file whose config.json was edited by `mutate` (as an attacker would)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for item in src.namelist():
            data = src.read(item)
            if item == "config.json":
                config = json.loads(data)
                mutate(config)
                data = json.dumps(config).encode()
            out.writestr(item, data)
    return target


def last_layer(config: dict) -> dict:
    return config["config"]["layers"][-1]


def hostile_file(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.keras"
    if kind == "lambda":
        small(keras.layers.Lambda(lambda x: x * 2)).save(path)
    elif kind == "named_function_lambda":
        small(keras.layers.Lambda(triple)).save(path)
    elif kind == "unknown_class":
        small(Secret()).save(path)
    else:
        plain = folder / "plain.keras"
        small(keras.layers.Identity()).save(plain)
        if kind == "os_system":
            activation = {"module": "os", "class_name": "function", "config": "system", "registered_name": "function"}
            crafted(plain, path, lambda c: last_layer(c)["config"].update(activation=activation))
        elif kind == "popen_layer":
            crafted(plain, path, lambda c: last_layer(c).update(module="subprocess", class_name="Popen"))
    return path


CASES = {  # kind -> what the one-line reason must say
    "lambda": "it contains a Lambda layer, Python code that loading would run",
    "named_function_lambda": "it contains a Lambda layer",
    "unknown_class": "it needs an unknown class 'Secret'",
    "os_system": "it needs an unknown function 'system' from module 'os'",
    "popen_layer": "it needs an unknown class 'Popen' from module 'subprocess'",
}


def zip_with(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def run_dir(folder: Path, model_file: Path) -> Path:
    """A run directory as `train` leaves it, holding `model_file` as its model."""
    run = folder / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(model_file.read_bytes())
    write_json(run / "meta.json", {"format": 1, "model_id": "0" * 16, "task": "binary",
                                   "classes": ["normal", "pneumonia"], "positive_class": "pneumonia",
                                   "threshold": 0.5, "image_size": [SIZE, SIZE], "channels": 1})
    return run


@pytest.mark.parametrize("kind", list(CASES))
def test_hostile_model_is_refused_by_predictor_with_a_short_clear_error(tmp_path, kind):
    run = run_dir(tmp_path, hostile_file(kind, tmp_path))
    with pytest.raises(RunError) as info:
        Predictor(run)
    message = str(info.value)
    assert message.startswith(f"{run / 'model.keras'}: refused to load the model: {CASES[kind]}")
    assert "safe mode" in message and len(message) < 400 and "\n" not in message


@pytest.mark.parametrize("kind", ["lambda", "unknown_class", "os_system"])
def test_hostile_model_is_refused_by_the_cli(tmp_path, capsys, kind):
    run = run_dir(tmp_path, hostile_file(kind, tmp_path))
    image = tmp_path / "scan.png"
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(image)

    code = main(["predict", str(run), str(image)])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {run / 'model.keras'}: refused to load the model: {CASES[kind]}")
    assert len(err.strip().splitlines()) == 1


def test_a_model_made_by_ultrasonic_loads_in_safe_mode(tmp_path):
    """The refusal is not blanket: the project's own layers (augmentation, preprocessing) load."""
    model = build_model(load_config(overrides=dict(image_size=SIZE, width=8)), n_classes=2)
    model.save(tmp_path / "own.keras")
    loaded = load_model(tmp_path / "own.keras")
    x = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 1), dtype=np.uint8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)


def test_a_broken_model_file_is_a_clear_error(tmp_path):
    (tmp_path / "cut.keras").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(RunError, match=r"cut\.keras: not a \.keras model \(not a zip archive\), perhaps truncated"):
        load_model(tmp_path / "cut.keras")
    (tmp_path / "other.keras").write_bytes(zip_with("notes.txt", b"no config"))
    with pytest.raises(RunError, match=r"other\.keras: refused to load the model: KeyError: .*config\.json"):
        load_model(tmp_path / "other.keras")
    with pytest.raises(RunError, match="model file not found"):
        load_model(tmp_path / "none.keras")
