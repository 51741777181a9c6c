"""One settings object for every command: presets, a YAML file, then CLI flags.

Precedence, lowest first: the dataclass defaults, the preset, the YAML file,
the command-line flags. The `seed` preset is the original Keras recipe
verbatim; `default` is the faster, more accurate recipe ultrasonic recommends.

    cfg = load_config(preset="seed", file="my.yaml", overrides={"epochs": 3})
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ultrasonic.errors import ConfigError, DataError
from ultrasonic.models.names import MODELS, NORMS, PREPROCESSINGS
from ultrasonic.training.devices import parse_devices

# Kermany 2018 names: person123_bacteria_456.jpeg, IM-0115-0001.jpeg, NORMAL2-IM-1427-0001.jpeg
KERMANY_PATIENT_PATTERN = r"^(person\d+|(?:NORMAL\d+-)?IM-\d+)"


@dataclass
class Config:
    # what to train on and where the run goes
    data: str = ""
    out: str = "runs/latest"
    preset: str = "default"
    classes: list[str] | None = None  # discovered (sorted folder names) when None
    positive_class: str | None = None  # binary only; default: the second class
    # images
    image_size: int = 96
    channels: int = 1
    # model
    model: str = "compact"  # "seed", "compact", or a keras.applications backbone (models/applications.py)
    preprocessing: str = "auto"  # "auto": what the network expects; or unit, vgg16, signed, imagenet, raw
    weights: str | None = None  # applications only: a Keras 'notop' weights file to start from
    width: int = 32  # first stage filters of the compact network
    norm: str = "batch"  # compact network: "batch" or "group" normalisation
    dropout: float = 0.2
    l2: float = 0.0
    # augmentation, composed into one affine transform per image
    rotation: float = 10.0  # degrees, +/-
    shift: float = 0.1  # fraction of width/height, +/-
    zoom: float = 0.1  # zoom factor in [1-zoom, 1+zoom]
    horizontal_flip: bool = False
    fill_mode: str = "nearest"
    # optimisation
    optimizer: str = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # "cosine" (with warm-up) or "plateau"
    warmup_epochs: float = 1.0
    batch_size: int = 32
    epochs: int = 12
    min_steps: int = 0  # small data sets train for more epochs: at least this many optimiser steps
    # (ignored when you set epochs yourself, unless you set min_steps too)
    label_smoothing: float = 0.0
    class_weight: str = "balanced"  # "balanced" or "none"
    monitor: str = "val_loss"
    early_stopping_patience: int = 5
    reduce_lr_factor: float = 0.2
    reduce_lr_patience: int = 3
    min_learning_rate: float = 1e-6
    # splits
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_split_images: int = 100  # a given split smaller than this is carved from train instead
    patient_pattern: str | None = KERMANY_PATIENT_PATTERN
    # bad images: skip them (listed in data_report.json) or stop at the first
    on_bad_image: str = "skip"
    max_bad_fraction: float = 0.05  # more unreadable images than this stops the run
    # the same image (content) or patient in two splits stops the run unless allowed
    allow_leakage: bool = False
    drop_duplicates: bool = False  # take train images identical to a val/test image out of train (reported)
    # housekeeping
    seed: int = 42
    cache_dir: str | None = None  # default: $ULTRASONIC_CACHE or ~/.cache/ultrasonic
    workers: int = 0  # decode processes; 0 = all cores
    devices: str = "1"  # "auto" or a count: data-parallel training over that many devices (devices.py)
    tensorboard: bool = True
    verbose: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # The origin's recipe, verbatim (DESIGN.md): only its defects are fixed.
    "seed": dict(
        model="seed", preprocessing="vgg16", image_size=224, channels=3,
        dropout=0.2, l2=1e-3, rotation=20.0, shift=0.2, zoom=0.2,
        horizontal_flip=True, fill_mode="nearest", optimizer="adam",
        learning_rate=1e-3, weight_decay=0.0, lr_schedule="plateau",
        batch_size=10, epochs=17, label_smoothing=0.0, class_weight="none", monitor="val_loss",
        early_stopping_patience=5, reduce_lr_factor=0.2, reduce_lr_patience=3,
        min_learning_rate=1e-6,
    ),
    # Gray input at 96 px, a small batch-normalised network with early down-sampling,
    # flips, AdamW with a cosine schedule, at least 1,000 steps on small data sets.
    # Chosen by experiment on validation splits: docs/results.md has the evidence.
    "default": dict(
        model="compact", preprocessing="auto", image_size=96, channels=1,
        width=32, norm="batch", dropout=0.2, l2=0.0, rotation=10.0, shift=0.1, zoom=0.1,
        horizontal_flip=True, optimizer="adamw", learning_rate=2e-3,
        weight_decay=1e-4, lr_schedule="cosine", batch_size=32, epochs=12, min_steps=1000,
        label_smoothing=0.0, monitor="val_loss", early_stopping_patience=10,
    ),
}

_CHOICES = {
    "model": MODELS,
    "preprocessing": PREPROCESSINGS,
    "channels": (1, 3),
    "optimizer": ("adam", "adamw"),
    "lr_schedule": ("cosine", "plateau"),
    "class_weight": ("balanced", "none"),
    "fill_mode": ("nearest", "constant", "reflect", "wrap"),
    "on_bad_image": ("skip", "fail"),
    "norm": NORMS,
}


def field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(Config)}


def load_config(
    preset: str | None = None,
    file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Build a Config: preset, then YAML file, then overrides (None values ignored)."""
    from_file = _read_yaml(file) if file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    name = overrides.get("preset") or preset or from_file.get("preset") or "default"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[name], **from_file, **overrides, "preset": name}
    chosen = {**from_file, **overrides}
    if "epochs" in chosen and "min_steps" not in chosen:
        values["min_steps"] = 0  # epochs you name are exact; only the preset's own epochs stretch on small data
    _check_keys(values, source=str(file) if file else "settings")
    cfg = Config(**_check_numbers(values))
    _check_values(cfg)
    return cfg


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs -> settings; values read as YAML (1e-3, true, 96, [a, b])."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set width=24")
        try:
            settings[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: {value!r} is not a valid value") from None
    _check_keys(settings, source="--set")
    return settings


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    from ultrasonic.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting: value, got {type(data).__name__}")
    return data


def _check_keys(values: dict[str, Any], source: str) -> None:
    unknown = sorted(set(values) - field_names())
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings: {', '.join(sorted(field_names()))}"
        )


def _check_numbers(values: dict[str, Any]) -> dict[str, Any]:
    """Numbers given as text become numbers; YAML reads `1e-3` (no dot) as a string."""
    values = dict(values)
    for f in dataclasses.fields(Config):
        value, default = values.get(f.name), f.default
        if f.name not in values or isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        kind = type(default)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
                kind is int and isinstance(value, float)):
            raise ConfigError(f"{f.name} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
        try:
            values[f.name] = kind(value)
        except ValueError:
            raise ConfigError(f"{f.name} must be {'a whole number' if kind is int else 'a number'}, "
                              f"got {value!r}") from None
    return values


def _check_values(cfg: Config) -> None:
    for name, allowed in _CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not one of {allowed}")
    positive = {"image_size": cfg.image_size, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
                "learning_rate": cfg.learning_rate}
    for name, value in positive.items():
        if not value or value <= 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")
    if cfg.image_size < 16:
        raise ConfigError(f"image_size must be at least 16 pixels, got {cfg.image_size}")
    for name in ("val_fraction", "test_fraction"):
        if not 0 <= getattr(cfg, name) < 0.5:
            raise ConfigError(f"{name} must be in [0, 0.5), got {getattr(cfg, name)}")
    if not 0 <= cfg.max_bad_fraction <= 1:
        raise ConfigError(f"max_bad_fraction must be in [0, 1] (0.05 = 5 %), got {cfg.max_bad_fraction}")
    for name in ("allow_leakage", "drop_duplicates", "horizontal_flip"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"{name} must be true or false, got {getattr(cfg, name)!r}")
    parse_devices(cfg.devices)
    cfg.devices = str(cfg.devices).strip().lower()  # YAML reads `devices: 2` as a number
    if not 0 <= cfg.label_smoothing < 0.5:
        raise ConfigError(f"label_smoothing must be in [0, 0.5), got {cfg.label_smoothing}")
    if isinstance(cfg.classes, str):
        cfg.classes = [c.strip() for c in cfg.classes.split(",") if c.strip()]


def positive_index(cfg: Config, classes: list[str]) -> int:
    """The class called 'positive' (sensitivity = its recall): positive_class, else the second."""
    if cfg.positive_class is None:
        return 1
    if cfg.positive_class not in classes:
        raise DataError(f"positive_class {cfg.positive_class!r} is not one of the classes {classes}")
    return classes.index(cfg.positive_class)
