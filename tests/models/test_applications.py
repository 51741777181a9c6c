"""Optional keras.applications backbones: built flat on the model's tensors, weights from a user's file."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ultrasonic.config import load_config
from ultrasonic.errors import ConfigError
from ultrasonic.explain.gradcam import gradcam
from ultrasonic.models import MODELS, build_model, preprocessing_of
from ultrasonic.inference.engines import load_model

SIZE = 32  # MobileNetV2's smallest input: seconds to build


def mobilenet_cfg(**settings):
    return load_config(overrides=dict(model="mobilenetv2", image_size=SIZE, **settings))


def notop_weights_file(path, seed=7):
    """What a user would download: the network without its top, weights saved by Keras (random here)."""
    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3),
                                          pooling="avg")
    base.save_weights(path)
    return base


def test_every_model_name_is_a_valid_setting():
    for name in MODELS:
        assert load_config(overrides={"model": name}).model == name


def test_gray_input_is_repeated_and_preprocessed_as_the_weights_expect():
    cfg = mobilenet_cfg()
    model = build_model(cfg, 2)
    assert preprocessing_of(cfg) == "signed"
    assert model.input.shape[1:] == (SIZE, SIZE, 1)
    x = np.full((1, SIZE, SIZE, 1), 255, "uint8")
    rgb = np.asarray(model.get_layer("gray_to_rgb")([x, x, x]))
    assert rgb.shape[-1] == 3
    assert np.allclose(np.asarray(model.get_layer("preprocess")(rgb)), 1.0)  # [-1, 1] range of MobileNetV2
    # one flat network: the backbone's own layers are the model's layers (Grad-CAM can reach them)
    assert "Conv1" in [layer.name for layer in model.layers]


def test_weights_file_is_loaded_into_the_backbone(tmp_path):
    path = tmp_path / "mobilenetv2_notop.weights.h5"
    source = notop_weights_file(path)
    model = build_model(mobilenet_cfg(weights=str(path)), 2)
    expected = source.get_layer("Conv1").kernel.numpy()
    assert np.array_equal(model.get_layer("Conv1").kernel.numpy(), expected)
    fresh = build_model(mobilenet_cfg(), 2)
    assert not np.array_equal(fresh.get_layer("Conv1").kernel.numpy(), expected)


def test_missing_or_wrong_weights_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        build_model(mobilenet_cfg(weights=str(tmp_path / "absent.h5")), 2)
    wrong = tmp_path / "resnet.weights.h5"
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)).save_weights(wrong)
    with pytest.raises(ConfigError, match="resnet.weights.h5"):
        build_model(mobilenet_cfg(weights=str(wrong)), 2)


def test_saved_backbone_model_loads_in_safe_mode_and_explains(tmp_path):
    model = build_model(mobilenet_cfg(), 3)
    model.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    x = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 1)).astype("uint8")
    assert np.allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)
    cams = gradcam(loaded, x, class_index=0)
    assert cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all()


@pytest.mark.parametrize("name, expected", [("resnet50", "vgg16"), ("densenet121", "imagenet"),
                                            ("efficientnetb0", "raw"), ("compact", "unit"), ("seed", "vgg16")])
def test_auto_preprocessing_follows_the_network(name, expected):
    assert preprocessing_of(load_config(overrides={"model": name})) == expected
