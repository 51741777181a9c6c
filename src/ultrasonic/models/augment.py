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


@keras.saving.register_keras_serializable(package="ultrasonic")
class RandomIntensity(keras.layers.Layer):
    """Random exposure, contrast, gamma, sharpness and noise of each image, on raw pixels (0-255 floats).

    What it attacks: a model that tells classes apart by how an image was taken
    (how bright, how contrasty, how sharp: one site's scanner and JPEG settings)
    rather than by what it shows. Each image draws its own values:

    - brightness b: x + 255 b, b in [-brightness, brightness];
    - contrast c: the image's mean + c (x - mean), c in [1 - contrast, 1 + contrast];
    - gamma g: 255 (x / 255) ** g, log g in [-log(1 + gamma), log(1 + gamma)];
    - blur: with probability 1/2, x + a (blurred(x) - x), a in [-0.5, 1]: from a sharpening unsharp mask
      (a < 0) to a Gaussian blur of sigma `blur` pixels (a = 1), a softer or crisper image than the site's;
    - noise: Gaussian noise of standard deviation s 255, s in [0, noise].

    The result is clipped to 0-255. Only in training; at inference the layer is
    not there at all (models/build.py puts it only in the training model).

        x = RandomIntensity(brightness=0.1, contrast=0.2, gamma=0.3, blur=1.5, noise=0.02)(x)
    """

    def __init__(self, brightness=0.0, contrast=0.0, gamma=0.0, blur=0.0, noise=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.brightness, self.contrast, self.gamma = float(brightness), float(contrast), float(gamma)
        self.blur, self.noise, self.seed = float(blur), float(noise), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def is_identity(self) -> bool:
        return not (self.brightness or self.contrast or self.gamma or self.blur or self.noise)

    def call(self, images, training=False):
        x = ops.cast(images, self.compute_dtype)
        if not training or self.is_identity:
            return x
        per_image = (ops.shape(x)[0], 1, 1, 1)
        draw = lambda low, high: keras.random.uniform(per_image, low, high, dtype=self.compute_dtype,
                                                      seed=self.seed_generator)
        if self.blur:
            amount = ops.where(draw(0.0, 1.0) < 0.5, draw(-0.5, 1.0), 0.0)
            x = x + amount * (self._gaussian(x) - x)
        if self.gamma:
            spread = math.log1p(self.gamma)
            x = 255.0 * ops.power(ops.clip(x, 0.0, 255.0) / 255.0 + 1e-6, ops.exp(draw(-spread, spread)))
        if self.contrast:
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
            x = mean + draw(1.0 - self.contrast, 1.0 + self.contrast) * (x - mean)
        if self.brightness:
            x = x + 255.0 * draw(-self.brightness, self.brightness)
        if self.noise:
            x = x + 255.0 * draw(0.0, self.noise) * keras.random.normal(ops.shape(x), dtype=self.compute_dtype,
                                                                       seed=self.seed_generator)
        return ops.clip(x, 0.0, 255.0)

    def _gaussian(self, x):
        """x blurred by a Gaussian of sigma `blur` pixels: two 1-D depthwise convolutions, edges reflected."""
        radius = max(1, int(math.ceil(3 * self.blur)))
        taps = [math.exp(-0.5 * (i / self.blur) ** 2) for i in range(-radius, radius + 1)]
        taps = ops.convert_to_tensor([t / sum(taps) for t in taps], dtype=self.compute_dtype)
        channels = x.shape[-1]
        rows = ops.tile(ops.reshape(taps, (-1, 1, 1, 1)), (1, 1, channels, 1))
        cols = ops.tile(ops.reshape(taps, (1, -1, 1, 1)), (1, 1, channels, 1))
        pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
        x = ops.pad(x, pad, mode="reflect")
        x = ops.depthwise_conv(x, rows, padding="valid")
        return ops.depthwise_conv(x, cols, padding="valid")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "brightness": self.brightness, "contrast": self.contrast,
                "gamma": self.gamma, "blur": self.blur, "noise": self.noise, "seed": self.seed}
