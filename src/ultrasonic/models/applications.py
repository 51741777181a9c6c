"""Optional pretrained backbones from `keras.applications`, with a weights file the user provides.

Nothing is downloaded: `weights` is the path of a Keras weights file for the
network without its top (e.g. ImageNet's `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`),
or None to start from random weights. The backbone's layers are built on the
model's own tensors, so the saved model is one flat network: Grad-CAM, export
and `load_model(safe_mode=True)` work as for the project's own networks.

    ultrasonic train DATA --set model=resnet50 --set weights=~/weights/resnet50_notop.h5
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
from keras import layers

from ultrasonic.errors import ConfigError
from ultrasonic.models.names import APPLICATIONS


def application_backbone(x, model: str, weights: str | None = None, dropout: float = 0.2):
    """Pooled features of a keras.applications network built on tensor `x` (RGB, preprocessed)."""
    constructor = getattr(keras.applications, APPLICATIONS[model][0])
    base = constructor(include_top=False, weights=None, input_tensor=x, pooling="avg")
    if weights:
        load_backbone_weights(base, weights)
    return layers.Dropout(dropout, name="drop_features")(base.output)


def load_backbone_weights(base: keras.Model, weights: str) -> None:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights {weights}: no such file (pretrained weights cannot be downloaded here; "
                          "give the path of a Keras 'notop' weights file)")
    try:
        with warnings.catch_warnings():  # Keras only warns when it skips layers it cannot match: a partial load
            warnings.simplefilter("error")
            base.load_weights(str(path))
    except Exception as exc:  # Keras raises several types for a mismatched or corrupt file
        raise ConfigError(f"weights {path}: cannot be loaded into {base.name} without its top "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
