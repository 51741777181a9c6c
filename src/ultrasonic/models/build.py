"""Networks by name, in two views that share one set of weights.

    network = build_model(cfg, n_classes=2)     # uint8 image -> preprocessing -> backbone -> head
    model = training_model(network, cfg)        # the same layers, with the augmentation in front

The network is what a run delivers (model.keras): built-in Keras layers only,
so plain Keras loads it without ultrasonic. The augmentation (RandomAffine, a
project layer) exists only in the training model, which `train` fits and backs up.
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

# The layer the augmentation goes in front of: the first that turns pixels into numbers for the backbone.
PREPROCESS = "preprocess"


def build_model(cfg: Config, n_classes: int) -> keras.Model:
    """The inference network of the settings, taking (size, size, channels) uint8 images."""
    inputs = keras.Input((cfg.image_size, cfg.image_size, cfg.channels), dtype="uint8", name="image")
    x = inputs
    if cfg.model in APPLICATIONS and cfg.channels == 1:  # ImageNet networks and their preprocessing want RGB
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = preprocessing(preprocessing_of(cfg), channels=x.shape[-1])(x)
    if cfg.model == "seed":
        x = seed_head(seed_backbone(x, l2=cfg.l2, dropout=cfg.dropout), dropout=cfg.dropout)
    elif cfg.model in APPLICATIONS:
        x = application_backbone(x, cfg.model, weights=cfg.weights, dropout=cfg.dropout)
    else:
        x = compact_backbone(x, width=cfg.width, dropout=cfg.dropout, norm=cfg.norm)
    outputs = _classifier(x, n_classes)
    return keras.Model(inputs, outputs, name=f"ultrasonic_{cfg.model}")


def training_model(network: keras.Model, cfg: Config) -> keras.Model:
    """`network` with RandomAffine in front of its preprocessing: the model `train` fits.

    The augmentation works on the raw pixels as floats, then the preprocessing
    runs (ImageDataGenerator's order, and the numbers of the earlier single
    model). The layers are `network`'s own, called again (keras.models.clone_model
    with each layer kept), so fitting this model trains `network`: no copy of weights.
    """
    augment = RandomAffine(cfg.rotation, cfg.shift, cfg.zoom, cfg.horizontal_flip, cfg.fill_mode,
                           seed=cfg.seed, name="augment")

    def call(layer, *args, **kwargs):
        if layer.name == PREPROCESS:
            return layer(augment(*args), **kwargs)
        return layer(*args, **kwargs)

    model = keras.models.clone_model(network, clone_function=lambda layer: layer, call_function=call)
    model.name = f"{network.name}_training"
    return model


def preprocessing_of(cfg: Config) -> str:
    """The preprocessing setting, with 'auto' resolved: what the network's weights expect."""
    return _resolve(cfg.model, cfg.preprocessing)


def _classifier(x, n_classes: int):
    # float32 output even under a mixed-precision policy, for stable losses and probabilities
    if n_classes == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return layers.Dense(n_classes, activation="softmax", dtype="float32", name="probability")(x)
