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


# --- every setting checked before any work: one `error:` line naming the key, the value and what is allowed

BAD_SETTINGS = [
    (["--set", "dropout=1.5"], "dropout must be in [0, 1), got 1.5"),
    (["--set", "zoom=1.5"], "zoom must be in [0, 1), got 1.5"),  # zoom >= 1 flips images
    (["--set", "rotation=200"], "rotation must be in [0, 180], got 200.0"),
    (["--set", "shift=-0.1"], "shift must be in [0, 1), got -0.1"),
    (["--learning-rate", "0"], "learning_rate must be positive, got 0.0"),
    (["--set", "weight_decay=2"], "weight_decay must be in [0, 1), got 2.0"),
    (["--set", "l2=-1"], "l2 must be in [0, 1), got -1.0"),
    (["--set", "warmup_epochs=-1"], "warmup_epochs must be at least 0, got -1.0"),
    (["--set", "min_learning_rate=-1e-6"], "min_learning_rate must be at least 0, got -1e-06"),
    (["--val-fraction", "0.6"], "val_fraction must be in [0, 0.5), got 0.6"),
    (["--max-bad-fraction", "1.5"], "max_bad_fraction must be in [0, 1], got 1.5"),
    (["--set", "early_stopping_patience=-1"], "early_stopping_patience must be at least 0, got -1"),
    (["--set", "reduce_lr_patience=1.5"], "reduce_lr_patience must be a whole number, got 1.5"),
    (["--set", "min_steps=-5"], "min_steps must be at least 0, got -5"),
    (["--set", "min_split_images=-1"], "min_split_images must be at least 0, got -1"),
    (["--batch-size", "0"], "batch_size must be positive, got 0"),
    (["--image-size", "8"], "image_size must be at least 16 pixels, got 8"),
    (["--workers", "-1"], "workers must be at least 0, got -1"),
    (["--seed", "-1"], "seed must be in [0, 4294967295], got -1"),
    (["--set", "width=4", "--set", "norm=group"], "width must be in [8, 512], got 4"),
    (["--set", "width=14", "--set", "norm=group"],
     "width=14 does not work with norm='group': every layer's filters (7, 14, 28, 56, 112) must split into "
     "min(8, filters // 4) equal groups; try width=12 or 16"),
    (["--set", "reduce_lr_factor=1", "--set", "lr_schedule=plateau"], "reduce_lr_factor must be in (0, 1), got 1.0"),
    (["--set", "monitor=val_acc"],
     "monitor='val_acc' is not one of ('val_loss', 'val_accuracy', 'val_auc', 'loss', 'accuracy', 'auc')"),
    (["--channels", "2"], "channels=2 is not one of (1, 3)"),
    (["--set", "fill_mode=3"], "fill_mode=3 is not one of ('nearest', 'constant', 'reflect', 'wrap')"),
    (["--set", "verbose=true"], "verbose=True is not one of (0, 1, 2)"),
    (["--epochs", "two"], "epochs must be a whole number, got 'two'"),
    (["--set", "dropout=high"], "dropout must be a number, got 'high'"),
    (["--set", "horizontal_flip=1"], "horizontal_flip must be true or false, got 1"),
    (["--set", "weights=[a, b]"], "weights must be text, got ['a', 'b']"),
    (["--devices", "many"], "devices='many': give 'auto' or a whole number of devices, 1 or more"),
    (["--patient-pattern", "(("], "patient_pattern '((' is not a valid regular expression"),
    (["--classes", "normal"], "classes must name at least two different classes, got ['normal']"),
    (["--classes", "a,b", "--positive-class", "c"], "positive_class='c' is not one of the classes ['a', 'b']"),
]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Real images, so that a check made after decoding would leave a cache behind."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    for name in ("a", "b"):
        (root / name).mkdir()
        for k in range(3):
            Image.new("L", (32, 32), 40 * k).save(root / name / f"{k}.png")
    return root


@pytest.mark.parametrize("flags, message", BAD_SETTINGS, ids=[" ".join(f) for f, _ in BAD_SETTINGS])
def test_bad_setting_is_one_error_line_before_any_work(flags, message, image_folder, tmp_path, capsys):
    from ultrasonic import cli

    out, cache = tmp_path / "run", tmp_path / "cache"
    code = cli.main(["train", str(image_folder), "--out", str(out), "--cache-dir", str(cache), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {message}"), err
    assert not out.exists() and not cache.exists()  # nothing decoded, no run folder made


def test_several_bad_settings_are_one_line_each(tmp_path, capsys):
    from ultrasonic import cli

    code = cli.main(["train", str(tmp_path / "missing"), "--set", "dropout=1.5", "--set", "zoom=2"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == ["error: dropout must be in [0, 1), got 1.5",
                                                    "error: zoom must be in [0, 1), got 2.0"]


def test_every_numeric_setting_declares_a_range_or_choices():
    import dataclasses

    from ultrasonic.config import field_type

    for f in dataclasses.fields(Config):
        if field_type(f.name)[0] in (int, float):
            assert isinstance(f.metadata["allowed"], (str, tuple)), f.name


def test_model_choices_come_from_the_registry():
    from ultrasonic.models.names import MODELS, NORMS, PREPROCESSINGS

    fields = {f.name: f for f in __import__("dataclasses").fields(Config)}
    assert (fields["model"].metadata["allowed"], fields["norm"].metadata["allowed"],
            fields["preprocessing"].metadata["allowed"]) == (MODELS, NORMS, PREPROCESSINGS)


def test_group_norm_widths_the_config_accepts_build():
    """The config's width check is the network's own rule: an accepted width builds, a refused one does not."""
    from ultrasonic.models import build_model

    build_model(load_config(overrides={"image_size": 32, "width": 12, "norm": "group"}), 2)
    with pytest.raises(ConfigError, match="width=14 does not work with norm='group'"):
        load_config(overrides={"width": 14, "norm": "group"})
    with pytest.raises(ValueError):
        build_model(Config(image_size=32, width=14, norm="group"), 2)


def test_operating_point_is_checked_up_front_and_normalised():
    from ultrasonic.config import parse_operating_point

    assert load_config(overrides={"operating_point": "Sensitivity = 0.950"}).operating_point == "sensitivity=0.95"
    assert load_config().operating_point == "youden"
    assert parse_operating_point("specificity=0.9") == ("specificity", 0.9)
    assert parse_operating_point("threshold=0.5") == ("threshold", 0.5)
    for bad in ("youden=1", "sensitivity", "sensitivity=1.5", "specificity=abc", "recall=0.9", "threshold=-0.1"):
        with pytest.raises(ConfigError, match="operating_point .* youden, sensitivity=S, specificity=S, threshold=T"):
            load_config(overrides={"operating_point": bad})
