"""Preprocessing layers that live inside every saved model, so it takes raw uint8 images.

Built-in Keras layers only, so a run's model.keras loads in plain Keras. The
seed's `vgg16.preprocess_input` (RGB -> BGR, minus the ImageNet means) is a
frozen Dense(3) over the channel axis: a 0/1 permutation kernel and the negated
means as bias, which computes exactly the same float32 numbers (times 1, plus
zeros, then the subtraction).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# ImageNet channel means in BGR order, as keras.applications.vgg16.preprocess_input uses them.
VGG_MEANS_BGR = (103.939, 116.779, 123.68)

# keras.applications' "torch" mode: x / 255 minus these means, over these standard deviations
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def preprocessing(name: str, channels: int = 3) -> keras.layers.Layer:
    """uint8 (or float pixels 0-255) -> float inside the graph; `channels` of the image it gets.

    'unit' x / 255 (the compact network); 'vgg16' the seed's (also ResNet50's "caffe");
    'signed' [-1, 1] (MobileNetV2's "tf"); 'imagenet' (DenseNet's "torch", 3 channels);
    'raw' 0-255 as floats (EfficientNet rescales itself); 'standard' each image to mean 0 and standard
    deviation 1 over its own pixels (an exposure or contrast of the site's is no cue).
    """
    if name == "standard":
        # per-image standardisation in built-in layers: to floats (LayerNormalization alone computes a
        # uint8 image's statistics in uint8), then LayerNormalization over height, width and channels
        # with nothing learned; a flat image maps to zeros
        return keras.Sequential([keras.layers.Rescaling(1.0 / 255, name="unit"),
                                 keras.layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False,
                                                                 epsilon=1e-4, name="standardize")],
                                name="preprocess")
    if name == "vgg16":
        return vgg_preprocess(channels)
    if name == "signed":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if name == "imagenet":
        return keras.layers.Normalization(mean=[255 * m for m in IMAGENET_MEAN_RGB],
                                          variance=[(255 * s) ** 2 for s in IMAGENET_STD_RGB], name="preprocess")
    if name == "raw":
        return keras.layers.Rescaling(1.0, name="preprocess")
    return keras.layers.Rescaling(1.0 / 255, name="preprocess")


def vgg_preprocess(channels: int) -> keras.layers.Layer:
    """`vgg16.preprocess_input` as a built-in layer; one channel subtracts the mean of the three means."""
    if channels != 3:
        return keras.layers.Rescaling(1.0, offset=-sum(VGG_MEANS_BGR) / 3, name="preprocess")
    rgb_to_bgr = np.eye(3, dtype="float32")[::-1]
    return keras.layers.Dense(3, trainable=False, name="preprocess",
                              kernel_initializer=keras.initializers.Constant(rgb_to_bgr.tolist()),
                              bias_initializer=keras.initializers.Constant([-m for m in VGG_MEANS_BGR]))


@keras.saving.register_keras_serializable(package="ultrasonic")
class VGGPreprocess(keras.layers.Layer):
    """The earlier custom layer of the same computation: kept registered so older run directories load."""

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if x.shape[-1] == 3:
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(VGG_MEANS_BGR, dtype=self.compute_dtype)
        return x - sum(VGG_MEANS_BGR) / 3

    def compute_output_shape(self, input_shape):
        return input_shape
