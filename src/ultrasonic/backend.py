"""Keras and its backend are extras: one clear error, naming the extra, where a command first needs them.

`pip install ultrasonic` alone reads images and, with the `onnx` extra, predicts
through ONNX Runtime; training and the .keras model need Keras plus TensorFlow
(the default, `ultrasonic[tensorflow]`) or JAX (`ultrasonic[jax]`, KERAS_BACKEND=jax).

    keras = require_keras("training")   # before the first `import keras` of a command
"""

from __future__ import annotations

import os
from types import ModuleType

from ultrasonic.errors import ConfigError, MissingExtraError

ONNX_HINT = "; predicting with --engine onnx needs neither"


def require_keras(purpose: str) -> ModuleType:
    """Import Keras with its backend; without them a MissingExtraError that names the extra to install."""
    try:
        import keras
    except ImportError as exc:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        missing = exc.name or "keras"
        if backend in ("tensorflow", "jax"):
            raise MissingExtraError(backend, f"{purpose} (Keras with its {backend} backend)", missing,
                                    ONNX_HINT) from exc
        raise ConfigError(f"{purpose} needs Keras and its {backend} backend, but {missing!r} is not installed: "
                          f"install {backend} and keras, or unset KERAS_BACKEND and "
                          f"pip install 'ultrasonic[tensorflow]'{ONNX_HINT}") from exc
    return keras
