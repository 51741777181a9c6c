"""Preprocessing layers that live inside every saved model, so it takes raw uint8 images."""

from __future__ import annotations

import keras
from keras import ops

# ImageNet channel means in BGR order, as keras.applications.vgg16.preprocess_input uses them.
VGG_MEANS_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="ultrasonic")
class VGGPreprocess(keras.layers.Layer):
    """`vgg16.preprocess_input` as a layer: RGB -> BGR, minus the ImageNet means, no scaling.

    One-channel input subtracts the mean of the three means.
    """

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if x.shape[-1] == 3:
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(VGG_MEANS_BGR, dtype=self.compute_dtype)
        return x - sum(VGG_MEANS_BGR) / 3

    def compute_output_shape(self, input_shape):
        return input_shape


def preprocessing(name: str) -> keras.layers.Layer:
    """uint8 -> float inside the graph: 'vgg16' (the seed's) or 'unit' (x / 255)."""
    if name == "vgg16":
        return VGGPreprocess(name="preprocess")
    return keras.layers.Rescaling(1.0 / 255, name="preprocess")
