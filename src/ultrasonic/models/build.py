"""Networks by name, in two views that share one set of weights.

    network = build_model(cfg, n_classes=2)     # uint8 image -> preprocessing -> backbone -> head
    model = training_model(network, cfg)        # the same layers, with the augmentation in front
    calibrated = with_temperature(network, 1.7) # the same layers, probabilities of logits / 1.7

The head is Dense "logits" (linear) -> Rescaling "temperature" (1 / T) ->
Activation "probability" (sigmoid or softmax): T is 1 while training, and
`train` bakes the temperature fitted on the validation split into model.keras,
so every engine made from it returns calibrated probabilities.

The network is what a run delivers (model.keras): built-in Keras layers only,
so plain Keras loads it without ultrasonic. The augmentation (RandomAffine, a
project layer) exists only in the training model, which `train` fits and backs up.
"""

from __future__ import annotations

import keras
from keras import layers

from ultrasonic.config import Config
from ultrasonic.errors import UltrasonicError
from ultrasonic.models.applications import application_backbone
from ultrasonic.models.augment import RandomAffine, RandomIntensity
from ultrasonic.models.compact import compact_backbone
from ultrasonic.models.names import APPLICATIONS
from ultrasonic.models.names import preprocessing_of as _resolve
from ultrasonic.models.preprocess import preprocessing
from ultrasonic.models.seed import seed_backbone, seed_head

# The layer the augmentation goes in front of: the first that turns pixels into numbers for the backbone.
PREPROCESS = "preprocess"
LOGITS, TEMPERATURE = "logits", "temperature"  # the head's linear output and its 1 / T scaling


def build_model(cfg: Config, n_classes: int) -> keras.Model:
    """The inference network of the settings, taking (size, size, channels) uint8 images."""
    inputs = keras.Input((cfg.image_size, cfg.image_size, cfg.channels), dtype="uint8", name="image")
    x = inputs
    if cfg.model in APPLICATIONS and cfg.channels == 1:  # ImageNet networks and their preprocessing want RGB
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = preprocessing(preprocessing_of(cfg), channels=x.shape[-1])(x)
    if cfg.border:  # the edges set to zero: the network sees the same size, nothing of the outer frame
        edge = max(1, round(cfg.border * cfg.image_size))
        x = layers.ZeroPadding2D(edge, name="border_pad")(layers.Cropping2D(edge, name="border_crop")(x))
    if cfg.model == "seed":
        x = seed_head(seed_backbone(x, l2=cfg.l2, dropout=cfg.dropout), dropout=cfg.dropout)
    elif cfg.model in APPLICATIONS:
        x = application_backbone(x, cfg.model, weights=cfg.weights, dropout=cfg.dropout)
    else:
        x = compact_backbone(x, width=cfg.width, dropout=cfg.dropout, norm=cfg.norm)
    outputs = _classifier(x, n_classes)
    return keras.Model(inputs, outputs, name=f"ultrasonic_{cfg.model}")


def training_model(network: keras.Model, cfg: Config) -> keras.Model:
    """`network` with RandomAffine and RandomIntensity in front of its preprocessing: the model `train` fits.

    The augmentation works on the raw pixels as floats, then the preprocessing
    runs (ImageDataGenerator's order, and the numbers of the earlier single
    model). The layers are `network`'s own, called again (keras.models.clone_model
    with each layer kept), so fitting this model trains `network`: no copy of weights.
    """
    augment = RandomAffine(cfg.rotation, cfg.shift, cfg.zoom, cfg.horizontal_flip, cfg.fill_mode,
                           seed=cfg.seed, name="augment")
    intensity = RandomIntensity(cfg.brightness, cfg.contrast, cfg.gamma, cfg.blur, cfg.noise,
                                seed=cfg.seed + 1, name="intensity")  # its own stream, not the warp's

    def call(layer, *args, **kwargs):
        if layer.name == PREPROCESS:
            return layer(intensity(augment(*args)), **kwargs)
        return layer(*args, **kwargs)

    model = keras.models.clone_model(network, clone_function=lambda layer: layer, call_function=call)
    model.name = f"{network.name}_training"
    return model


def with_temperature(network: keras.Model, temperature: float) -> keras.Model:
    """`network` whose probabilities are those of logits / temperature: the same layers and weights.

    Rescaling keeps its scale in its config, not in a weight, so the layer is
    replaced (a built-in layer: model.keras still loads in plain Keras); every
    other layer is `network`'s own, called again.
    """
    if temperature <= 0 or not float(temperature) < float("inf"):
        raise UltrasonicError(f"a temperature must be a positive finite number; got {temperature!r}")
    scaled = layers.Rescaling(1.0 / float(temperature), dtype="float32", name=TEMPERATURE)
    model = keras.models.clone_model(
        network, clone_function=lambda layer: scaled if layer.name == TEMPERATURE else layer)
    model.name = network.name
    return model


def logit_model(network: keras.Model) -> keras.Model:
    """image -> the head's logits (before temperature and activation): what temperature scaling fits."""
    return keras.Model(network.inputs[0], network.get_layer(LOGITS).output, name=f"{network.name}_logits")


def preprocessing_of(cfg: Config) -> str:
    """The preprocessing setting, with 'auto' resolved: what the network's weights expect."""
    return _resolve(cfg.model, cfg.preprocessing)


def _classifier(x, n_classes: int):
    # float32 even under a mixed-precision policy, for stable losses and probabilities
    x = layers.Dense(1 if n_classes == 2 else n_classes, dtype="float32", name=LOGITS)(x)
    x = layers.Rescaling(1.0, dtype="float32", name=TEMPERATURE)(x)  # 1 / T, set by `train` (with_temperature)
    return layers.Activation("sigmoid" if n_classes == 2 else "softmax", dtype="float32", name="probability")(x)
