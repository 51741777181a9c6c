"""The seed's augmentation (rotation, shifts, horizontal flip, zoom) as ONE Keras layer.

ImageDataGenerator applied these transforms in Python, image by image, every
epoch; Keras' four separate layers resample the image four times. Here the
four are composed into one affine matrix per image and the image is resampled
once with `keras.ops.image.affine_transform`, inside the model, only in
training. Same semantics as ImageDataGenerator: rotation in degrees, shifts as
a fraction of the size, independent x/y zoom in [1 - zoom, 1 + zoom], applied
to the raw pixels before the preprocessing (as ImageDataGenerator runs its
`preprocessing_function` after augmenting).
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ultrasonic")
class RandomAffine(keras.layers.Layer):
    """Random rotation + shift + flip + zoom, composed and applied in one resampling.

        x = RandomAffine(rotation=20, shift=0.2, zoom=0.2, horizontal_flip=True)(x)
    """

    def __init__(self, rotation=0.0, shift=0.0, zoom=0.0, horizontal_flip=False,
                 fill_mode="nearest", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.shift, self.zoom = float(rotation), float(shift), float(zoom)
        self.horizontal_flip, self.fill_mode, self.seed = bool(horizontal_flip), fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    @property
    def is_identity(self) -> bool:
        return not (self.rotation or self.shift or self.zoom or self.horizontal_flip)

    def call(self, images, training=False):
        if not training or self.is_identity:
            return ops.cast(images, self.compute_dtype)
        shape = ops.shape(images)
        transforms = self.transforms(shape[0], shape[1], shape[2])

        def warp(x):
            return ops.image.affine_transform(ops.cast(x, self.compute_dtype), transforms,
                                              interpolation="bilinear", fill_mode=self.fill_mode)

        if images.shape[-1] != 3:
            return warp(images)
        # Gray images stored as RGB (R = G = B, e.g. most chest X-ray JPEGs): the same warp of every
        # channel is the warp of one channel repeated; a third of the work, the same pixels.
        red, green, blue = images[..., 0], images[..., 1], images[..., 2]
        gray = ops.logical_and(ops.all(ops.equal(red, green)), ops.all(ops.equal(green, blue)))

        def one_channel():
            return ops.tile(warp(images[..., :1]), [1, 1, 1, 3])  # tile: 3x faster than concatenate in TF

        return ops.cond(gray, one_channel, lambda: warp(images))

    def transforms(self, batch, height, width):
        """(batch, 8) projective rows mapping each output pixel to its input pixel."""
        draw = lambda low, high: keras.random.uniform((batch,), low, high, seed=self.seed_generator)
        theta = draw(-1.0, 1.0) * (self.rotation * math.pi / 180.0)
        zx, zy = draw(1 - self.zoom, 1 + self.zoom), draw(1 - self.zoom, 1 + self.zoom)
        w, h = ops.cast(width, "float32"), ops.cast(height, "float32")
        tx, ty = draw(-self.shift, self.shift) * w, draw(-self.shift, self.shift) * h
        flip = ops.where(draw(0.0, 1.0) < 0.5, -1.0, 1.0) if self.horizontal_flip else ops.ones((batch,))
        cos, sin = ops.cos(theta), ops.sin(theta)
        # A = rotation @ diag(zx, zy) @ diag(flip, 1); input = A (output - centre) + centre + shift
        a0, a1 = cos * zx * flip, -sin * zy
        b0, b1 = sin * zx * flip, cos * zy
        cx, cy = (w - 1) / 2, (h - 1) / 2
        a2 = cx - a0 * cx - a1 * cy + tx
        b2 = cy - b0 * cx - b1 * cy + ty
        zero = ops.zeros((batch,))
        return ops.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "shift": self.shift, "zoom": self.zoom,
                "horizontal_flip": self.horizontal_flip, "fill_mode": self.fill_mode, "seed": self.seed}
