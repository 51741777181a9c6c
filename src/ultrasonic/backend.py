"""Keras and its backend are extras: one clear error, naming the extra, where a command first needs them.

`pip install ultrasonic` alone reads images and, with the `onnx` extra, predicts
through ONNX Runtime; training and the .keras model need Keras plus TensorFlow
(the default, `ultrasonic[tensorflow]`) or JAX (`ultrasonic[jax]`, KERAS_BACKEND=jax).

    keras = require_keras("training")   # before the first `import keras` of a command
"""

from __future__ import annotations

import os
from types import ModuleType

from ultrasonic.errors import ConfigError


def require_keras(purpose: str) -> ModuleType:
    """Import Keras with its backend; without them a ConfigError that says what to install."""
    try:
        import keras
    except ImportError as exc:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        raise ConfigError(f"{purpose} needs Keras and its {backend} backend, but {exc.name or 'keras'!r} is not "
                          f"installed: {_install_hint(backend)}; predicting with --engine onnx needs neither") from None
    return keras


def _install_hint(backend: str) -> str:
    if backend in ("tensorflow", "jax"):
        return f"pip install 'ultrasonic[{backend}]'"
    return f"install {backend} and keras, or unset KERAS_BACKEND and pip install 'ultrasonic[tensorflow]'"
