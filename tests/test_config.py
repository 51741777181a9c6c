"""load_config: preset < YAML file < overrides, the seed recipe verbatim, one ConfigError per bad setting."""

from __future__ import annotations

import pytest
import yaml

from ultrasonic.config import Config, load_config, parse_set, save_config
from ultrasonic.errors import ConfigError


def write_yaml(tmp_path, text: str):
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def test_default_preset_when_nothing_is_given():
    cfg = load_config()
    assert cfg.preset == "default"
    assert (cfg.model, cfg.image_size, cfg.channels, cfg.lr_schedule) == ("compact", 96, 1, "cosine")


def test_seed_preset_is_the_original_recipe():
    cfg = load_config(preset="seed")
    assert cfg.batch_size == 10
    assert cfg.image_size == 224 and cfg.channels == 3
    assert cfg.epochs == 17
    assert cfg.learning_rate == pytest.approx(1e-3)
    assert (cfg.rotation, cfg.shift, cfg.zoom) == (20.0, 0.2, 0.2)
    assert cfg.horizontal_flip is True
    assert cfg.preprocessing == "vgg16" and cfg.model == "seed" and cfg.optimizer == "adam"
    assert cfg.lr_schedule == "plateau"
    assert (cfg.reduce_lr_factor, cfg.reduce_lr_patience, cfg.min_learning_rate) == (0.2, 3, 1e-6)
    assert cfg.class_weight == "none" and cfg.min_steps == 0  # the origin weighted no class


def test_file_overrides_preset_and_overrides_override_file(tmp_path):
    path = write_yaml(tmp_path, "preset: seed\nepochs: 3\nbatch_size: 4\n")
    from_file = load_config(file=path)
    assert from_file.preset == "seed" and from_file.epochs == 3 and from_file.batch_size == 4
    assert from_file.image_size == 224  # untouched preset value

    cfg = load_config(file=path, overrides={"epochs": 5, "batch_size": None})
    assert cfg.epochs == 5  # override wins
    assert cfg.batch_size == 4  # None means "not given on the command line"


def test_preset_override_beats_preset_in_file(tmp_path):
    path = write_yaml(tmp_path, "preset: seed\n")
    assert load_config(file=path, overrides={"preset": "default"}).image_size == 96


def test_empty_yaml_file_is_no_settings(tmp_path):
    assert load_config(file=write_yaml(tmp_path, "")) == load_config()


def test_yaml_number_without_dot_is_read_as_number(tmp_path):
    # YAML 1.1 reads 1e-3 as the string "1e-3"
    cfg = load_config(file=write_yaml(tmp_path, "learning_rate: 1e-3\nepochs: '7'\n"))
    assert cfg.learning_rate == pytest.approx(1e-3) and isinstance(cfg.learning_rate, float)
    assert cfg.epochs == 7


def test_unknown_key_in_yaml_is_named(tmp_path):
    path = write_yaml(tmp_path, "epochs: 3\nlearnin_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"settings\.yaml: unknown setting\(s\) learnin_rate; known settings: "):
        load_config(file=path)


def test_unknown_override_is_named():
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) colour"):
        load_config(overrides={"colour": "red"})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"preset": "fast"}, "unknown preset 'fast': choose one of seed, default"),
        ({"channels": 2}, r"channels=2 is not one of \(1, 3\)"),
        ({"lr_schedule": "step"}, "lr_schedule='step' is not one of"),
        ({"epochs": 0}, "epochs must be positive, got 0"),
        ({"learning_rate": -0.1}, "learning_rate must be positive"),
        ({"image_size": 8}, "image_size must be at least 16 pixels, got 8"),
        ({"val_fraction": 0.5}, r"val_fraction must be in \[0, 0.5\), got 0.5"),
        ({"test_fraction": -0.1}, r"test_fraction must be in \[0, 0.5\)"),
        ({"label_smoothing": 0.7}, r"label_smoothing must be in \[0, 0.5\)"),
        ({"image_size": "big"}, "image_size must be a whole number, got 'big'"),
        ({"epochs": 2.5}, "epochs must be a whole number, got 2.5"),
        ({"learning_rate": "fast"}, "learning_rate must be a number, got 'fast'"),
    ],
)
def test_bad_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_missing_and_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(file=tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(file=write_yaml(tmp_path, "epochs: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping of setting: value, got list"):
        load_config(file=write_yaml(tmp_path, "- 1\n- 2\n"))


def test_classes_string_becomes_a_list(tmp_path):
    assert load_config(overrides={"classes": "NORMAL, PNEUMONIA"}).classes == ["NORMAL", "PNEUMONIA"]
    assert load_config(file=write_yaml(tmp_path, "classes: a,b\n")).classes == ["a", "b"]
    assert load_config(overrides={"classes": ["x", "y"]}).classes == ["x", "y"]


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(preset="seed", overrides={"epochs": 2, "classes": "a,b"})
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"] == 2
    assert load_config(file=tmp_path / "config.yaml") == cfg
    assert isinstance(cfg, Config)


def test_set_pairs_are_read_as_yaml_values():
    cfg = load_config(overrides=parse_set(["width=24", "horizontal-flip=true", "learning_rate=1e-3",
                                           "weights=/w/r50.h5"]))
    assert (cfg.width, cfg.horizontal_flip, cfg.learning_rate, cfg.weights) == (24, True, 1e-3, "/w/r50.h5")


@pytest.mark.parametrize("item, message", [("width", "KEY=VALUE"), ("=3", "KEY=VALUE"),
                                           ("colour=red", "unknown setting"), ("width=[1", "not a valid value")])
def test_bad_set_pairs_are_config_errors(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_set([item])


def test_set_flag_reaches_the_training_settings(tmp_path, monkeypatch):
    from ultrasonic import cli

    seen = {}

    class Stop(Exception):
        pass

    def fake_train(config, **kwargs):
        seen["cfg"] = config
        raise Stop

    monkeypatch.setattr("ultrasonic.training.fit.train", fake_train)
    with pytest.raises(Stop):
        cli.main(["train", "demo", "--out", str(tmp_path / "r"), "--epochs", "2", "--set", "width=24",
                  "--set", "epochs=5", "--set", "norm=batch"])
    assert (seen["cfg"].width, seen["cfg"].norm) == (24, "batch")
    assert seen["cfg"].epochs == 2  # a named flag wins over --set


def test_preset_epochs_stretch_to_min_steps_but_named_epochs_are_exact(tmp_path):
    from ultrasonic.training.fit import planned_epochs

    stretchy = load_config(overrides={"min_steps": 1000})
    assert planned_epochs(stretchy, steps_per_epoch=16) == 63  # a 500-image set: 1000 steps
    assert planned_epochs(stretchy, steps_per_epoch=500) == stretchy.epochs  # a large set: the preset's epochs
    exact = load_config(file=write_yaml(tmp_path, "epochs: 3\n"))
    assert (exact.epochs, exact.min_steps) == (3, 0)
    assert planned_epochs(exact, steps_per_epoch=1) == 3
    both = load_config(overrides={"epochs": 3, "min_steps": 100})
    assert planned_epochs(both, steps_per_epoch=10) == 10
