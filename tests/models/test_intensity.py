"""Intensity augmentation (RandomIntensity), per-image standardisation and the border mask (issue #12)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ultrasonic.config import load_config
from ultrasonic.errors import ConfigError
from ultrasonic.models import build_model, training_model
from ultrasonic.models.augment import RandomIntensity


def _images(n=16, size=24, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 216, (n, size, size, 1)).astype("float32")
    return base


def _per_image(x, fn):
    return np.array([fn(i) for i in x])


def test_intensity_is_identity_at_inference_and_only_in_the_training_model():
    cfg = load_config(overrides=dict(image_size=24, width=8, brightness=0.2, contrast=0.3, gamma=0.5, blur=1.0,
                                     noise=0.05))
    network = build_model(cfg, 2)
    model = training_model(network, cfg)
    layer = model.get_layer("intensity")
    x = _images()
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    assert not np.allclose(np.asarray(layer(x, training=True)), x)
    assert "intensity" not in {l.name for l in network.layers}
    u8 = x.astype("uint8")
    assert np.allclose(np.asarray(model(u8, training=False)), np.asarray(network(u8, training=False)))


def test_brightness_shifts_each_image_by_its_own_amount_within_the_range():
    x = _images(64)
    out = np.asarray(RandomIntensity(brightness=0.1, seed=1)(x, training=True))
    shift = _per_image(out - x, np.mean)
    assert np.allclose(out - x, shift[:, None, None, None], atol=1e-3)  # one constant per image
    assert np.abs(shift).max() <= 0.1 * 255 + 1e-3 and np.abs(shift).max() > 0.05 * 255
    assert len(np.unique(np.round(shift, 3))) > 32


def test_contrast_keeps_the_mean_and_scales_the_spread():
    x = _images(64)
    out = np.asarray(RandomIntensity(contrast=0.3, seed=2)(x, training=True))
    assert np.allclose(_per_image(out, np.mean), _per_image(x, np.mean), atol=1e-2)
    ratio = _per_image(out, np.std) / _per_image(x, np.std)
    assert ratio.min() >= 0.7 - 1e-4 and ratio.max() <= 1.3 + 1e-4 and ratio.max() - ratio.min() > 0.3


def test_gamma_is_monotone_and_keeps_black_and_white():
    ramp = np.tile(np.linspace(0, 255, 24, dtype="float32"), (32, 24, 1))[..., None]
    out = np.asarray(RandomIntensity(gamma=0.5, seed=3)(ramp, training=True))
    assert np.all(np.diff(out[:, 0, :, 0], axis=1) >= -1e-3)  # order of grey levels kept
    assert np.allclose(out[:, :, 0], 0, atol=0.1) and np.allclose(out[:, :, -1], 255, atol=0.1)
    middle = out[:, 0, 12, 0] / 255
    exponent = np.log(middle) / np.log(ramp[0, 0, 12, 0] / 255)
    assert exponent.min() >= 1 / 1.5 - 1e-2 and exponent.max() <= 1.5 + 1e-2
    assert exponent.min() < 0.9 and exponent.max() > 1.1


def test_blur_softens_or_sharpens_half_the_images_and_keeps_flat_ones():
    x = np.zeros((64, 25, 25, 1), "float32")
    x[:, 12, 12] = 255.0
    layer = RandomIntensity(blur=1.0, seed=4)
    out = np.asarray(layer(x, training=True))
    peak = out[:, 12, 12, 0]
    unchanged = np.isclose(peak, 255.0)
    assert 16 <= unchanged.sum() <= 48  # about half the images untouched
    assert (peak < 200).sum() > 5  # blurred: the impulse spread out
    flat = np.full((8, 25, 25, 1), 100.0, "float32")
    assert np.allclose(np.asarray(layer(flat, training=True)), 100.0, atol=1e-3)  # the kernel sums to 1
    step = np.zeros((64, 25, 25, 1), "float32") + 100.0
    step[:, :, 13:] = 150.0
    sharp = np.asarray(layer(step, training=True))
    assert sharp[:, :, 12].min() < 100 - 1 and sharp[:, :, 13].max() > 150 + 1  # an unsharp mask overshoots


def test_noise_has_the_drawn_spread_and_the_result_stays_in_pixel_range():
    x = np.full((64, 32, 32, 1), 128.0, "float32")
    out = np.asarray(RandomIntensity(noise=0.05, seed=5)(x, training=True))
    spread = _per_image(out, np.std)
    assert spread.max() <= 0.05 * 255 * 1.15 and spread.max() > 0.03 * 255
    everything = RandomIntensity(brightness=0.5, contrast=0.5, gamma=0.9, blur=2, noise=0.3, seed=6)
    out = np.asarray(everything(_images(32), training=True))
    assert out.min() >= 0 and out.max() <= 255 and np.isfinite(out).all()


def test_intensity_draws_repeat_with_the_seed():
    x = _images(8)
    a = np.asarray(RandomIntensity(brightness=0.2, gamma=0.3, blur=1, noise=0.05, seed=7)(x, training=True))
    b = np.asarray(RandomIntensity(brightness=0.2, gamma=0.3, blur=1, noise=0.05, seed=7)(x, training=True))
    assert np.array_equal(a, b)


def _preprocess_output(network, images):
    return np.asarray(keras.Model(network.inputs, network.get_layer("preprocess").output)(images))


def test_standard_preprocessing_gives_each_uint8_image_mean_0_and_sd_1_whatever_its_exposure():
    network = build_model(load_config(overrides=dict(image_size=24, width=8, preprocessing="standard")), 2)
    x = _images(4).astype("uint8")
    out = _preprocess_output(network, x)
    assert np.allclose(_per_image(out, np.mean), 0, atol=1e-4) and np.allclose(_per_image(out, np.std), 1, atol=5e-3)  # epsilon 1e-4
    exposed = (x.astype("float32") * 0.5 + 30).astype("uint8")  # darker, flatter: the same picture
    assert np.allclose(_preprocess_output(network, exposed), out, atol=0.05)
    flat = np.full((1, 24, 24, 1), 77, "uint8")
    assert np.abs(_preprocess_output(network, flat)).max() < 1e-3


def test_border_sets_the_edges_to_zero_and_keeps_the_inside(tmp_path):
    cfg = load_config(overrides=dict(image_size=40, width=8, preprocessing="standard", border=0.1))
    network = build_model(cfg, 2)
    x = _images(2, 40).astype("uint8")
    inner = np.asarray(keras.Model(network.inputs, network.get_layer("border_pad").output)(x))
    assert inner.shape == (2, 40, 40, 1)
    assert not inner[:, :4].any() and not inner[:, -4:].any() and not inner[:, :, :4].any()
    assert np.allclose(inner[:, 4:-4, 4:-4], _preprocess_output(network, x)[:, 4:-4, 4:-4])
    path = tmp_path / "model.keras"
    network.save(path)
    plain = keras.saving.load_model(path, safe_mode=True)  # built-in layers only: plain Keras loads it
    assert np.allclose(np.asarray(plain(x)), np.asarray(network(x)), atol=1e-6)


@pytest.mark.parametrize("key, value", [("brightness", -0.1), ("contrast", 1.0), ("gamma", 2), ("blur", 11),
                                        ("noise", -1), ("border", 0.3), ("preprocessing", "clahe")])
def test_out_of_range_intensity_settings_stop_before_any_work(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides={key: value})
