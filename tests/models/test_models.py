"""The networks and the in-model augmentation: structure the seed promises, and transform semantics."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ultrasonic.models.augment import RandomAffine
from ultrasonic.config import load_config
from ultrasonic.models import build_model, training_model
from ultrasonic.models.build import logit_model, with_temperature
from ultrasonic.models.preprocess import VGGPreprocess, vgg_preprocess
from ultrasonic.inference.engines import load_model


def seed_model(size=64, n_classes=2):
    return build_model(load_config(preset="seed", overrides={"image_size": size}), n_classes)


def test_seed_network_is_the_origin_layer_for_layer():
    model = seed_model()
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 16, 32, 64, 128]
    for conv in convs:
        assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)  # promised, now really used
        assert conv.kernel_regularizer.l2 == pytest.approx(1e-3)
        assert conv.kernel_size == (3, 3)
    norms = [l for l in model.layers if isinstance(l, keras.layers.LayerNormalization) and l.name.startswith("norm")]
    assert len(norms) == 5 and all(n.axis in (1, [1]) for n in norms)  # axis=1, verbatim
    dense = [l.units for l in model.layers if isinstance(l, keras.layers.Dense) and l.name != "preprocess"]
    assert dense == [128, 64, 1]
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert model.input.dtype == "uint8"


def test_more_classes_get_softmax():
    model = seed_model(n_classes=3)
    assert model.output_shape == (None, 3)
    probs = np.asarray(model(np.zeros((2, 64, 64, 3), "uint8")))
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_vgg_preprocessing_is_bgr_minus_imagenet_means():
    model = seed_model()
    layer = model.get_layer("preprocess")
    x = np.zeros((1, 2, 2, 3), "uint8")
    x[..., 0] = 10  # R
    out = np.asarray(layer(x))
    assert np.allclose(out[0, 0, 0], [0 - 103.939, 0 - 116.779, 10 - 123.68], atol=1e-4)


def test_vgg_preprocessing_layers_compute_exactly_what_the_old_custom_layer_did():
    rng = np.random.default_rng(5)
    for channels in (3, 1):
        layer = vgg_preprocess(channels)
        assert type(layer).__module__.startswith("keras.")
        pixels = rng.integers(0, 256, (2, 9, 9, channels)).astype("uint8")
        augmented = rng.uniform(0, 255, (2, 9, 9, channels)).astype("float32")  # what training feeds it
        for x in (pixels, augmented):
            expected = np.asarray(VGGPreprocess()(x.astype("float32")))
            assert np.array_equal(np.asarray(layer(x)), expected)


def test_delivered_network_has_no_augmentation_and_the_training_model_shares_its_weights():
    cfg = load_config(overrides={"image_size": 32, "width": 8})
    network = build_model(cfg, 2)
    model = training_model(network, cfg)
    assert not {"augment", "intensity"} & {l.name for l in network.layers}
    assert [l.name for l in model.layers][:4] == ["image", "augment", "intensity", "preprocess"]
    assert network.input.dtype == model.input.dtype == "uint8"
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1)).astype("uint8")
    assert np.array_equal(np.asarray(model(x, training=False)), np.asarray(network(x, training=False)))
    bias = network.get_layer("logits").bias
    bias.assign(bias.numpy() + 1.0)  # a change to the network is a change to the training model
    assert np.array_equal(np.asarray(model(x, training=False)), np.asarray(network(x, training=False)))
    assert {id(v) for v in network.weights} == {id(v) for v in model.weights}


def test_augmentation_only_in_training_and_identity_at_inference():
    cfg = load_config(overrides={"image_size": 32})
    model = training_model(build_model(cfg, 2), cfg)
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1)).astype("uint8")
    assert np.allclose(model(x, training=False), model(x, training=False))
    aug = model.get_layer("augment")
    x_float = x.astype("float32")
    assert np.array_equal(np.asarray(aug(x_float, training=False)), x_float)
    assert not np.allclose(np.asarray(aug(x_float, training=True)), x_float)


def test_affine_flip_only_mirrors_exactly():
    layer = RandomAffine(horizontal_flip=True, seed=1)
    x = np.arange(2 * 5 * 7, dtype="float32").reshape(2, 5, 7, 1)
    seen = set()
    for _ in range(20):
        out = np.asarray(layer(x, training=True))
        for i in range(2):
            if np.array_equal(out[i], x[i]):
                seen.add("same")
            else:
                assert np.array_equal(out[i], x[i, :, ::-1]), "a flip must be an exact mirror"
                seen.add("flipped")
    assert seen == {"same", "flipped"}


def test_affine_shift_moves_content_by_the_drawn_fraction():
    layer = RandomAffine(shift=0.25, fill_mode="constant", seed=3)
    x = np.zeros((64, 40, 40, 1), "float32")
    x[:, 20, 20] = 1.0
    out = np.asarray(layer(x, training=True))
    peaks = np.array([np.unravel_index(o[..., 0].argmax(), (40, 40)) for o in out])
    shifts = peaks - 20
    assert np.abs(shifts).max() <= 0.25 * 40 + 1
    assert np.abs(shifts).max() >= 5  # shifts really happen, up to the range


def test_affine_rotation_keeps_the_centre_and_zoom_range():
    layer = RandomAffine(rotation=20, zoom=0.2, seed=0)
    t = np.asarray(layer.transforms(500, 33, 33))
    a0, a1, b0, b1 = t[:, 0], t[:, 1], t[:, 3], t[:, 4]
    angle = np.degrees(np.arctan2(b0, a0))
    assert np.abs(angle).max() <= 20 + 1e-3 and np.abs(angle).max() > 15
    zx = np.hypot(a0, b0)
    assert zx.min() >= 0.8 - 1e-5 and zx.max() <= 1.2 + 1e-5
    centre = np.stack([t[:, 0] * 16 + t[:, 1] * 16 + t[:, 2], t[:, 3] * 16 + t[:, 4] * 16 + t[:, 5]], 1)
    assert np.allclose(centre, 16, atol=1e-3)  # no shift configured: the centre maps to itself


def test_saved_model_takes_raw_uint8_and_loads_in_safe_mode(tmp_path):
    model = build_model(load_config(overrides={"image_size": 32}), 2)
    x = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 1)).astype("uint8")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    assert np.allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_gray_rgb_batches_take_the_one_channel_path_with_the_same_pixels():
    gray = np.random.default_rng(1).integers(0, 256, (4, 40, 40, 1)).astype("float32")
    fast = RandomAffine(rotation=20, shift=0.2, zoom=0.2, horizontal_flip=True, seed=3)
    one = RandomAffine(rotation=20, shift=0.2, zoom=0.2, horizontal_flip=True, seed=3)
    out = np.asarray(fast(np.repeat(gray, 3, axis=-1), training=True))  # R = G = B: warps one channel
    expected = np.repeat(np.asarray(one(gray, training=True)), 3, axis=-1)
    assert np.allclose(out, expected, atol=1e-4)
    assert not np.allclose(out, np.repeat(gray, 3, axis=-1))  # it did transform


def test_colour_batches_warp_every_channel():
    rgb = np.random.default_rng(2).integers(0, 256, (2, 40, 40, 3)).astype("float32")
    out = np.asarray(RandomAffine(rotation=20, seed=3)(rgb, training=True))
    per_channel = [np.asarray(RandomAffine(rotation=20, seed=3)(rgb[..., c:c + 1], training=True)) for c in range(3)]
    assert np.allclose(out, np.concatenate(per_channel, axis=-1), atol=1e-4)
    assert not np.allclose(out[..., 0], out[..., 1])


def test_a_model_saved_with_the_earlier_custom_layers_still_loads(tmp_path):
    """Run directories from before the delivered network was built-ins only hold RandomAffine and VGGPreprocess."""
    inputs = keras.Input((16, 16, 3), dtype="uint8")
    x = VGGPreprocess(name="preprocess")(RandomAffine(rotation=20, seed=1, name="augment")(inputs))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    old = keras.Model(inputs, outputs)
    old.save(tmp_path / "old.keras")
    x = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    assert np.array_equal(np.asarray(load_model(tmp_path / "old.keras")(x)), np.asarray(old(x)))


def test_the_temperature_divides_the_logits_and_keeps_the_weights():
    cfg = load_config(overrides={"image_size": 32, "width": 8})
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1)).astype("uint8")
    for n_classes in (2, 3):
        network = build_model(cfg, n_classes)
        assert [l.name for l in network.layers][-3:] == ["logits", "temperature", "probability"]
        calibrated = with_temperature(network, 2.0)
        z = np.asarray(logit_model(network)(x, training=False), dtype=float)
        expected = 1 / (1 + np.exp(-z / 2)) if n_classes == 2 else np.exp(z / 2) / np.exp(z / 2).sum(1, keepdims=True)
        assert np.allclose(np.asarray(calibrated(x, training=False)), expected, atol=1e-6)
        assert {id(v) for v in network.weights} == {id(v) for v in calibrated.weights}
        assert calibrated.get_layer("temperature").scale == 0.5 and network.get_layer("temperature").scale == 1.0
