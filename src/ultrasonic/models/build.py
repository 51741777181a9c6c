"""Networks by name. Every model: uint8 image in -> augmentation (training only)
-> preprocessing -> backbone -> head -> class probabilities.

    model = build_model(cfg, n_classes=2)
"""

from __future__ import annotations

import keras
from keras import layers

from ultrasonic.config import Config
from ultrasonic.models.applications import application_backbone
from ultrasonic.models.augment import RandomAffine
from ultrasonic.models.compact import compact_backbone
from ultrasonic.models.names import APPLICATIONS
from ultrasonic.models.names import preprocessing_of as _resolve
from ultrasonic.models.preprocess import preprocessing
from ultrasonic.models.seed import seed_backbone, seed_head


def build_model(cfg: Config, n_classes: int) -> keras.Model:
    """The full model of the settings, taking (size, size, channels) uint8 images."""
    inputs = keras.Input((cfg.image_size, cfg.image_size, cfg.channels), dtype="uint8", name="image")
    x = inputs
    if cfg.model in APPLICATIONS and cfg.channels == 1:  # ImageNet networks and their preprocessing want RGB
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    # augment the raw pixels (as float), then preprocess: ImageDataGenerator's order
    x = RandomAffine(cfg.rotation, cfg.shift, cfg.zoom, cfg.horizontal_flip, cfg.fill_mode,
                     seed=cfg.seed, name="augment")(x)
    x = preprocessing(preprocessing_of(cfg))(x)
    if cfg.model == "seed":
        x = seed_head(seed_backbone(x, l2=cfg.l2, dropout=cfg.dropout), dropout=cfg.dropout)
    elif cfg.model in APPLICATIONS:
        x = application_backbone(x, cfg.model, weights=cfg.weights, dropout=cfg.dropout)
    else:
        x = compact_backbone(x, width=cfg.width, dropout=cfg.dropout, norm=cfg.norm)
    outputs = _classifier(x, n_classes)
    return keras.Model(inputs, outputs, name=f"ultrasonic_{cfg.model}")


def preprocessing_of(cfg: Config) -> str:
    """The preprocessing setting, with 'auto' resolved: what the network's weights expect."""
    return _resolve(cfg.model, cfg.preprocessing)


def _classifier(x, n_classes: int):
    # float32 output even under a mixed-precision policy, for stable losses and probabilities
    if n_classes == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return layers.Dense(n_classes, activation="softmax", dtype="float32", name="probability")(x)
