"""A run's model.keras is plain Keras: it loads where ultrasonic is not installed, with safe_mode=True.

The delivered network holds built-in Keras layers only (the augmentation is
in the training model alone, models/build.py). The proof runs in a Python
that cannot import ultrasonic (plain_python.py): it loads model.keras with
`keras.saving.load_model(path, safe_mode=True)`, predicts on images passed
as .npy, and must agree with ultrasonic's own Predictor.
"""

from __future__ import annotations

import json
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plain_python import plain_python, run_plain
from tiny_run import make_run, random_uint8

from ultrasonic.data.synthetic import lesion_images
from ultrasonic.inference.predictor import Predictor

AGREE = 1e-6

PLAIN_KERAS = textwrap.dedent("""
    import sys
    import numpy as np
    try:
        import ultrasonic
    except ImportError:
        pass
    else:
        sys.exit("ultrasonic is importable here: " + ultrasonic.__file__)
    import keras
    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[2]), verbose=0)))
""")


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> Path:
    return plain_python(tmp_path_factory.mktemp("plain") / "venv")


def layer_modules(model_file: Path) -> set[str]:
    """The Python module of every layer model_file's config.json names; no object in it is registered by us."""
    with zipfile.ZipFile(model_file) as archive:
        config = json.loads(archive.read("config.json"))
    assert not [name for name in _values(config, "registered_name") if "ultrasonic" in str(name)]
    assert not [module for module in _values(config, "module") if "ultrasonic" in str(module)]
    return {layer["module"] for layer in config["config"]["layers"]}


def _values(config, key: str) -> list:
    """Every value of `key` in the nested dicts and lists of a Keras config."""
    if isinstance(config, dict):
        own = [config[key]] if key in config else []
        return own + [v for item in config.values() for v in _values(item, key)]
    if isinstance(config, list):
        return [v for item in config for v in _values(item, key)]
    return []


def predict_in_plain_keras(python: Path, run: Path, images: np.ndarray, folder: Path) -> np.ndarray:
    np.save(folder / "images.npy", images)
    done = run_plain(python, "-c", PLAIN_KERAS, str(run / "model.keras"), str(folder / "images.npy"),
                     str(folder / "probs.npy"), cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(folder / "probs.npy")


def test_the_plain_python_cannot_import_ultrasonic(python, tmp_path):
    done = run_plain(python, "-c", "import ultrasonic", cwd=tmp_path)
    assert done.returncode != 0 and "No module named 'ultrasonic'" in done.stderr
    assert run_plain(python, "-c", "import keras, PIL, onnxruntime", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("preset, channels", [("default", 1), ("seed", 3), ("seed", 1)])
def test_delivered_network_has_only_builtin_layers_and_loads_in_plain_keras(python, tmp_path, preset, channels):
    run = make_run(tmp_path / "run", preset, size=32, channels=channels)
    assert layer_modules(run / "model.keras") == {"keras.layers"}
    images = random_uint8(5, 32, channels, seed=4)
    plain = predict_in_plain_keras(python, run, images, tmp_path)
    ours = Predictor(run).predict_proba(images)
    assert plain.shape == (5, 1)
    np.testing.assert_allclose(plain[:, 0], ours[:, 1], rtol=0, atol=AGREE)
    assert ours[:, 1].std() > 1e-4  # the images give different answers: agreement means something


@pytest.mark.e2e
@pytest.mark.once  # a venv of its own (minutes); tests/e2e loads a calibrated model in plain Keras under both
def test_a_trained_run_loads_in_plain_keras_and_agrees_with_ultrasonic(python, tmp_path):
    from ultrasonic import train

    images, labels, _ = lesion_images(80, size=40, seed=2)
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = tmp_path / "data" / ("normal", "pneumonia")[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[..., 0]).save(folder / f"img_{i:03d}.png")
    result = train(str(tmp_path / "data"), str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                   image_size=32, epochs=2, batch_size=16, width=8, min_split_images=10, tensorboard=False,
                   verbose=0)
    run = Path(result.run_dir)
    assert layer_modules(run / "model.keras") == {"keras.layers"}
    test_images = random_uint8(6, 32, 1, seed=5)
    plain = predict_in_plain_keras(python, run, test_images, tmp_path)
    np.testing.assert_allclose(plain[:, 0], Predictor(run).predict_proba(test_images)[:, 1], rtol=0, atol=AGREE)
