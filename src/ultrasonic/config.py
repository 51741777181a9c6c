"""One settings object for every command: presets, a YAML file, then CLI flags.

Precedence, lowest first: the dataclass defaults, the preset, the YAML file,
the command-line flags. The `seed` preset is the original Keras recipe
verbatim; `default` is the faster, more accurate recipe ultrasonic recommends.

Every field declares, once, its type (the annotation), what is allowed (a
range such as "[0, 1)", a tuple of choices, or a check function) and its help
text; `load_config` checks all of them before any data is read, and
`ultrasonic train` makes its named flags from the fields marked `flag=True`.

    cfg = load_config(preset="seed", file="my.yaml", overrides={"epochs": 3})
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ultrasonic.data.quality import MIN_DYNAMIC_RANGE, MIN_IMAGE_SIDE
from ultrasonic.errors import ConfigError
from ultrasonic.validate import class_name, class_names, in_range, pattern, range_words, typed_value
from ultrasonic.inference.ood import DEFAULT_METHOD, METHODS
from ultrasonic.models.names import MODELS, NORMS, PREPROCESSINGS, compact_filters, norm_groups
from ultrasonic.training.devices import parse_devices

# Kermany 2018 names: person123_bacteria_456.jpeg, IM-0115-0001.jpeg, NORMAL2-IM-1427-0001.jpeg
KERMANY_PATIENT_PATTERN = r"^(person\d+|(?:NORMAL\d+-)?IM-\d+)"
# what training/fit.py compiles: the loss, "accuracy" and "auc", each also on the validation split
MONITORS = ("val_loss", "val_accuracy", "val_auc", "loss", "accuracy", "auc")

PRESETS: dict[str, dict[str, Any]] = {
    # The origin's recipe, verbatim (DESIGN.md): only its defects are fixed.
    "seed": dict(
        model="seed", preprocessing="vgg16", image_size=224, channels=3,
        dropout=0.2, l2=1e-3, rotation=20.0, shift=0.2, zoom=0.2,
        horizontal_flip=True, fill_mode="nearest", brightness=0.0, contrast=0.0, gamma=0.0, blur=0.0,
        noise=0.0, border=0.0, optimizer="adam",
        learning_rate=1e-3, weight_decay=0.0, lr_schedule="plateau", batch_size=10, epochs=17,
        label_smoothing=0.0, ema=0.0, class_weight="none", monitor="val_loss", checkpoint="best",
        early_stopping_patience=5, reduce_lr_factor=0.2, reduce_lr_patience=3, min_learning_rate=1e-6,
    ),
    # Gray input at 96 px, a small batch-normalised network with early down-sampling, flips and
    # intensity augmentation (exposure, contrast, gamma, blur/sharpening, noise), AdamW with a cosine
    # schedule, at least 1,000 steps on small data sets, and model.keras the last epoch (the end of the
    # schedule, not an early best validation loss) holding the weights' moving average (EMA 0.99). Chosen
    # by experiment on validation splits, their shifted copies and 5-fold cross-validation: docs/results.md
    # has the evidence (and why not preprocessing=standard, border, 128 px, label smoothing, mixup, cutmix).
    "default": dict(
        model="compact", preprocessing="auto", image_size=96, channels=1,
        width=32, norm="batch", dropout=0.2, l2=0.0, rotation=10.0, shift=0.1, zoom=0.1,
        horizontal_flip=True, brightness=0.1, contrast=0.2, gamma=0.3, blur=1.5, noise=0.02, border=0.0,
        optimizer="adamw", learning_rate=2e-3,
        weight_decay=1e-4, lr_schedule="cosine", batch_size=32, epochs=12, min_steps=1000,
        label_smoothing=0.0, ema=0.99, monitor="val_loss", checkpoint="last", early_stopping_patience=10,
    ),
}


def setting(default: Any, allowed: str | tuple | Callable | None = None, help: str = "", *,
            flag: bool = False, shown: str | None = None, unit: str = "") -> Any:
    """One field's whole declaration.

    allowed: a range "[low, high)" (brackets say closed or open, `inf` for none),
    a tuple of choices, or a function that checks and normalises the raw value
    itself; None: any value of the field's type. flag: `ultrasonic train` gets a
    named flag for it. shown: the default in words, for the help (e.g. of None).
    """
    return dataclasses.field(default=default, metadata=dict(allowed=allowed, help=help, flag=flag,
                                                            shown=shown, unit=unit))


def _devices(value: Any) -> str:
    parse_devices(value)
    return str(value).strip().lower()  # YAML reads `devices: 2` as a number


OPERATING_POINTS = ("youden", "sensitivity", "specificity", "threshold")


def parse_operating_point(value: Any) -> tuple[str, float | None]:
    """("youden", None), ("sensitivity", 0.95), ...: the operating_point setting, checked.

        parse_operating_point("specificity=0.9")   # ("specificity", 0.9)
    """
    text = str(value).strip().lower().replace(" ", "")
    kind, _, number = text.partition("=")
    if kind == "youden" and not number:
        return "youden", None
    problem = None
    if kind not in OPERATING_POINTS[1:] or not number:
        problem = "is not one of"
    else:
        try:
            target = float(number)
        except ValueError:
            target = float("nan")
        if not 0.0 < target <= 1.0 and not (kind == "threshold" and target == 0.0):
            problem = "needs a number in (0, 1] after '=' in"
    if problem:
        raise ConfigError(f"operating_point {value!r} {problem} youden, sensitivity=S, specificity=S, "
                          "threshold=T (e.g. sensitivity=0.95, threshold=0.5)")
    return kind, target


def _operating_point(value: Any) -> str:
    kind, target = parse_operating_point(value)
    return kind if target is None else f"{kind}={target:g}"


@dataclass
class Config:
    # what to train on and where the run goes
    data: str = setting("", help="folder of class folders, folder with train/ [val/ test/], .npz, or 'demo'")
    out: str = setting("runs/latest", help="run directory", flag=True)
    preset: str = setting("default", tuple(PRESETS), "recipe the other settings start from", flag=True)
    classes: list[str] | None = setting(None, class_names, "comma-separated class names, in order", flag=True,
                                        shown="the sorted folder names")
    positive_class: str | None = setting(None, class_name, help="class counted as positive (binary only)", flag=True,
                                         shown="the second class")
    operating_point: str = setting("youden", _operating_point, "binary: how the threshold is chosen on the "
                                   "validation split: youden, sensitivity=0.95, specificity=0.95 or "
                                   "threshold=0.5", flag=True)
    # images
    image_size: int = setting(96, "[16, inf)", "side of the square input", flag=True, unit=" pixels")
    channels: int = setting(1, (1, 3), "1 (gray) or 3 (RGB)", flag=True)
    # model
    model: str = setting("compact", MODELS, "network: seed, compact, or a keras.applications backbone "
                                            "(models/applications.py)")
    preprocessing: str = setting("auto", PREPROCESSINGS, "pixel scaling; auto: what the network expects; "
                                 "standard: each image to mean 0 and sd 1")
    weights: str | None = setting(None, help="applications only: a Keras 'notop' weights file to start from",
                                  shown="random weights")
    width: int = setting(32, "[8, 512]", "first stage filters of the compact network")
    norm: str = setting("batch", NORMS, "compact network: batch or group normalisation")
    dropout: float = setting(0.2, "[0, 1)", "dropout rate before the classifier")
    l2: float = setting(0.0, "[0, 1)", "L2 weight penalty (seed network)")
    # augmentation, composed into one affine transform per image
    rotation: float = setting(10.0, "[0, 180]", "random rotation, degrees +/-")
    shift: float = setting(0.1, "[0, 1)", "random shift, fraction of width/height +/-")
    zoom: float = setting(0.1, "[0, 1)", "random zoom factor in [1-zoom, 1+zoom]")
    horizontal_flip: bool = setting(False, help="random left-right flips")
    fill_mode: str = setting("nearest", ("nearest", "constant", "reflect", "wrap"), "pixels outside the image")
    # intensity augmentation, per image (models/augment.py RandomIntensity; the seed had none)
    brightness: float = setting(0.1, "[0, 1)", "random brightness shift, fraction of 255 +/-")
    contrast: float = setting(0.2, "[0, 1)", "random contrast factor in [1-contrast, 1+contrast]")
    gamma: float = setting(0.3, "[0, 1)", "random gamma in [1/(1+gamma), 1+gamma]")
    blur: float = setting(1.5, "[0, 10]", "random blur (Gaussian sigma in pixels) or sharpening, half the "
                          "images; 0: none", unit=" pixels")
    noise: float = setting(0.02, "[0, 1)", "random Gaussian noise, largest standard deviation as a fraction of 255")
    border: float = setting(0.0, "[0, 0.25)", "fraction of each side the network never sees (set to zero "
                            "after the preprocessing): markers and text at the edges cannot be a cue")
    # optimisation
    optimizer: str = setting("adamw", ("adam", "adamw"))
    learning_rate: float = setting(2e-3, "(0, inf)", "peak learning rate", flag=True)
    weight_decay: float = setting(1e-4, "[0, 1)", "AdamW weight decay")
    lr_schedule: str = setting("cosine", ("cosine", "plateau"), "cosine (with warm-up) or plateau")
    warmup_epochs: float = setting(1.0, "[0, inf)", "cosine schedule: epochs of linear warm-up")
    batch_size: int = setting(32, "(0, inf)", "images per optimiser step (over all devices)", flag=True)
    epochs: int = setting(12, "(0, inf)", "epochs; the preset's own epochs stretch to min_steps on small data",
                          flag=True)
    # small data sets train for more epochs: at least this many optimiser steps
    # (ignored when you set epochs yourself, unless you set min_steps too)
    min_steps: int = setting(0, "[0, inf)", "at least this many optimiser steps")
    label_smoothing: float = setting(0.0, "[0, 0.5)")
    mixup: float = setting(0.0, "[0, inf)", "alpha of Beta(alpha, alpha), the share a training image keeps "
                           "when blended with another of its batch (0.2 usual; data/batches.py mix); 0: off")
    cutmix: float = setting(0.0, "[0, inf)", "the same, a box of the other pasted in (1.0 usual); 0: off")
    ema: float = setting(0.0, "[0, 1)", "momentum of the weights' moving average that model.keras holds; 0: off")
    class_weight: str = setting("balanced", ("balanced", "none"), "weigh classes by inverse frequency or not")
    monitor: str = setting("val_loss", MONITORS, "metric of early stopping, best checkpoint and plateau")
    checkpoint: str = setting("best", ("best", "last"), "model.keras keeps the epoch of the best monitor, or the "
                              "last epoch (the end of the schedule; no early stopping then)")
    early_stopping_patience: int = setting(5, "[0, inf)", "epochs without improvement before stopping")
    reduce_lr_factor: float = setting(0.2, "(0, 1)", "plateau schedule: learning rate multiplier")
    reduce_lr_patience: int = setting(3, "[0, inf)", "plateau schedule: epochs without improvement")
    min_learning_rate: float = setting(1e-6, "[0, inf)", "plateau schedule: lowest learning rate")
    # splits
    val_fraction: float = setting(0.1, "[0, 0.5)", "share of images carved out for validation", flag=True)
    test_fraction: float = setting(0.1, "[0, 0.5)", "share of images carved out for testing", flag=True)
    min_split_images: int = setting(100, "[0, inf)", "a given split smaller than this is carved from train")
    patient_pattern: str | None = setting(KERMANY_PATIENT_PATTERN, pattern, "regex whose first group is the "
                                          "patient id in a file name", flag=True,
                                          shown="Kermany 2018 names, e.g. person123_bacteria_456.jpeg")
    # bad images: skip them (listed in data_report.json) or stop at the first
    on_bad_image: str = setting("skip", ("skip", "fail"), "skip unreadable images (listed) or stop", flag=True)
    max_bad_fraction: float = setting(0.05, "[0, 1]", "stop if more images than this are unreadable "
                                                      "(0.05 = 5 %)", flag=True)
    # images that decode but hold nothing to classify (data/quality.py says why these defaults)
    min_image_side: int = setting(MIN_IMAGE_SIDE, "[0, inf)", "images with a shorter side are 'blank or too "
                                                              "small to classify'; 0: no check", unit=" pixels")
    min_dynamic_range: int = setting(MIN_DYNAMIC_RANGE, "[0, 255]", "images whose brightest minus darkest value "
                                                                    "(of 255) is lower are 'blank or too small "
                                                                    "to classify'; 0: no check")
    # estimates beside the run's own validation split (training/cv.py, evaluation/external.py)
    cv: int = setting(0, "[0, inf)", "k-fold cross-validation before the final run: k patient-grouped folds "
                      "of the non-test images, each validated by a model trained on the others (OUT/folds/, "
                      "OUT/cv.json); 0: none", flag=True)
    external: str | None = setting(None, help="labelled folder or .npz from another source: the run is "
                                   "evaluated on all of it after training (RUN/eval_external, meta.json "
                                   "'external')", flag=True)
    # the same image (content) or patient in two splits stops the run unless allowed
    allow_leakage: bool = setting(False, help="train even if an image or patient is in two splits", flag=True)
    drop_duplicates: bool = setting(True, help="take train images identical to a val/test image out of "
                                               "train (listed in data_report.json; it can never leak)", flag=True)
    # the out-of-distribution gate fitted at the end of training (inference/ood.py, docs/trust.md)
    ood_method: str = setting(DEFAULT_METHOD, METHODS, "score that decides whether an image is like the "
                                                       "training images", flag=True)
    ood_false_rejection: float = setting(0.01, "(0, 0.5)", "share of validation images the gate may refuse; "
                                                           "sets its threshold (0.01 = 1 %)", flag=True)
    # housekeeping
    seed: int = setting(42, "[0, 4294967295]", "random seed of splits, shuffling and augmentation", flag=True)
    cache_dir: str | None = setting(None, help="decoded-image cache", flag=True,
                                    shown="$ULTRASONIC_CACHE or ~/.cache/ultrasonic")
    workers: int = setting(0, "[0, inf)", "decoding threads; 0 = all cores", flag=True)
    devices: str = setting("1", _devices, "'auto' or N: data-parallel training over N devices; the batch size "
                                          "is global (docs/scaling.md)", flag=True)
    tensorboard: bool = setting(True, help="write TensorBoard logs into RUN/logs", flag=True)
    verbose: int | None = setting(None, (0, 1, 2), "Keras fit output: 0 none, 1 progress bar, 2 a line per "
                                                   "epoch", shown="1 on a terminal, else 2")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(Config)}


def flag_fields() -> list[dataclasses.Field]:
    """The settings `ultrasonic train` has a named flag for, in declaration order."""
    return [f for f in dataclasses.fields(Config) if f.metadata["flag"]]


@functools.cache
def field_type(name: str) -> tuple[type, bool]:
    """(the field's type, whether None is allowed), from its annotation: `int | None` -> (int, True)."""
    hint = typing.get_type_hints(Config)[name]
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = [m for m in members if m is not type(None)]
    return typing.get_origin(kinds[0]) or kinds[0], len(kinds) < len(members)


def default_text(f: dataclasses.Field) -> str:
    """The default as the help shows it: the default preset's value, and the seed preset's if it differs."""
    def show(value):
        if value == f.default and f.metadata["shown"]:
            return f.metadata["shown"]
        if value is None:
            return "none"
        return str(value).lower() if isinstance(value, bool) else str(value)

    ours, seed = (PRESETS[p].get(f.name, f.default) for p in ("default", "seed"))
    return show(ours) + (f"; seed preset: {show(seed)}" if seed != ours else "")


def allowed_text(f: dataclasses.Field) -> str:
    """What a field allows, in words for its help ("" for a free value or a check function)."""
    allowed = f.metadata["allowed"]
    if isinstance(allowed, tuple):
        return "one of " + ", ".join(map(str, allowed))
    return range_words(allowed, f.metadata["unit"]) if isinstance(allowed, str) else ""


def load_config(
    preset: str | None = None,
    file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Build a Config: preset, then YAML file, then overrides (None values ignored); every value checked."""
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
    return Config(**_checked(values))


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
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: {value!r} is not a valid value") from exc
    _check_keys(settings, source="--set")
    return settings


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    from ultrasonic.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting: value, got {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: 'line 2, column 1: expected ...'."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _check_keys(values: dict[str, Any], source: str) -> None:
    unknown = sorted(set(values) - field_names())
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings: {', '.join(sorted(field_names()))}"
        )


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """Every given value typed and checked against its field; all problems in one ConfigError, a line each."""
    values, problems = dict(values), []
    for f in dataclasses.fields(Config):
        if f.name in values:
            try:
                values[f.name] = _checked_value(f, values[f.name])
            except ConfigError as exc:
                problems.append(str(exc))
    if not problems:
        problems = _combination_problems({**{f.name: f.default for f in dataclasses.fields(Config)}, **values})
    if problems:
        raise ConfigError("\n".join(problems))
    return values


def _checked_value(f: dataclasses.Field, value: Any) -> Any:
    kind, optional = field_type(f.name)
    allowed = f.metadata["allowed"]
    if value is None and optional:
        return None
    if callable(allowed):
        return allowed(value)
    if isinstance(allowed, tuple):
        try:
            value = typed_value(f.name, kind, value)
        except ConfigError:
            pass  # a value of the wrong type is not one of the choices either: name them
        if value not in allowed or type(value) is not kind:
            raise ConfigError(f"{f.name}={value!r} is not one of {allowed}")
        return value
    value = typed_value(f.name, kind, value)
    if isinstance(allowed, str) and not in_range(value, allowed):
        raise ConfigError(f"{f.name} must be {range_words(allowed, f.metadata['unit'])}, got {value!r}")
    return value


def _combination_problems(v: dict[str, Any]) -> list[str]:
    """Settings that are each fine but do not go together."""
    problems = []
    if v["model"] == "compact" and v["norm"] == "group" and not _groups_fit(v["width"]):
        fits = [w for w in range(8, 513) if _groups_fit(w)]
        near = sorted(fits, key=lambda w: abs(w - v["width"]))[:2]
        problems.append(f"width={v['width']} does not work with norm='group': every layer's filters "
                        f"({', '.join(map(str, compact_filters(v['width'])))}) must split into "
                        f"min(8, filters // 4) equal groups; try width={' or '.join(map(str, sorted(near)))}")
    if v["cv"] == 1:
        problems.append("cv=1: one fold would leave nothing to validate on; give 0 (none) or 2 or more, e.g. --cv 5")
    if v["positive_class"] is not None and v["classes"] and v["positive_class"] not in v["classes"]:
        problems.append(f"positive_class={v['positive_class']!r} is not one of the classes {v['classes']}")
    return problems


def _groups_fit(width: int) -> bool:
    return all(norm_groups(f) >= 1 and f % norm_groups(f) == 0 for f in compact_filters(width))
