"""Networks by name. Every model: uint8 image in -> preprocessing -> augmentation
(training only) -> backbone -> head -> class probabilities.

    model = build_model(cfg, n_classes=2)
"""

from __future__ import annotations

import keras
from keras import layers

from ..augment import RandomAffine
from ..config import Config
from .compact import compact_backbone
from .preprocess import VGGPreprocess, preprocessing
from .seed import seed_backbone, seed_head

MODELS = ("seed", "compact")


def build_model(cfg: Config, n_classes: int) -> keras.Model:
    """The full model of the settings, taking (size, size, channels) uint8 images."""
    inputs = keras.Input((cfg.image_size, cfg.image_size, cfg.channels), dtype="uint8", name="image")
    x = preprocessing(cfg.preprocessing)(inputs)
    x = RandomAffine(cfg.rotation, cfg.shift, cfg.zoom, cfg.horizontal_flip, cfg.fill_mode,
                     seed=cfg.seed, name="augment")(x)
    if cfg.model == "seed":
        x = seed_head(seed_backbone(x, l2=cfg.l2, dropout=cfg.dropout), dropout=cfg.dropout)
    else:
        x = compact_backbone(x, width=cfg.width, dropout=cfg.dropout, norm=cfg.norm)
    outputs = _classifier(x, n_classes)
    return keras.Model(inputs, outputs, name=f"ultrasonic_{cfg.model}")


def _classifier(x, n_classes: int):
    # float32 output even under a mixed-precision policy, for stable losses and probabilities
    if n_classes == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return layers.Dense(n_classes, activation="softmax", dtype="float32", name="probability")(x)


__all__ = ["build_model", "MODELS", "RandomAffine", "VGGPreprocess"]
