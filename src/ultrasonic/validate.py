"""A setting's value as its declared type, and checked against a range written as text ("[0, 1)");
and the checks of the settings that a range or a list of choices cannot express (config.py names them).

    typed_value("dropout", float, "0.2")    # 0.2 (YAML reads `1e-3` as text; so do the CLI flags)
    in_range(1.5, "[0, 1)")                  # False
    range_words("(0, inf)", "")              # "positive"
    class_names("normal, pneumonia")         # ["normal", "pneumonia"]
"""

from __future__ import annotations

import functools
import re
from typing import Any

from ultrasonic.errors import ConfigError

KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def typed_value(name: str, kind: type, value: Any) -> Any:
    """The value as the field's type; numbers written as text (YAML reads `1e-3` as text) become numbers."""
    problem = ConfigError(f"{name} must be {KIND_WORDS[kind]}, got {value!r}")
    if kind is bool or kind is str:
        if not isinstance(value, kind):
            raise problem
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            kind is int and isinstance(value, float)):
        raise problem
    try:
        return kind(value)
    except ValueError as exc:
        raise problem from exc


@functools.cache
def range_bounds(text: str) -> tuple[float, float, bool, bool]:
    """"[0, 1)" -> (0.0, 1.0, low_closed=True, high_closed=False)."""
    match = re.fullmatch(r"([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])", text)
    if not match:
        raise ValueError(f"not a range: {text!r}")
    return float(match[2]), float(match[3]), match[1] == "[", match[4] == "]"


def in_range(value: float, text: str) -> bool:
    low, high, low_closed, high_closed = range_bounds(text)
    above = low <= value if low_closed else low < value
    below = value <= high if high_closed else value < high
    return above and below  # NaN is neither


def range_words(text: str, unit: str) -> str:
    low, high, low_closed, _ = range_bounds(text)
    if high != float("inf"):
        return f"in {text}{unit}"
    if low == 0 and not low_closed:
        return "positive"
    return f"{'at least' if low_closed else 'more than'} {text[1:].split(',')[0].strip()}{unit}"


def pattern(value: Any) -> str:
    """patient_pattern: a regular expression."""
    if not isinstance(value, str):
        raise ConfigError(f"patient_pattern must be a regular expression (text), got {value!r}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(f"patient_pattern {value!r} is not a valid regular expression ({exc})") from exc
    return value


def class_name(value: Any) -> str:
    """positive_class: one class name (YAML reads `1` as a number)."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f"positive_class must be a class name, got {value!r}")
    return str(value)


def class_names(value: Any) -> list[str]:
    """classes: two or more different names, as a list or as 'a,b'."""
    if isinstance(value, str):
        value = [c.strip() for c in value.split(",") if c.strip()]
    if not isinstance(value, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                              for c in value):
        raise ConfigError(f"classes must be class names, as a list or 'a,b', got {value!r}")
    if len(value) < 2 or len(set(map(str, value))) < len(value):
        raise ConfigError(f"classes must name at least two different classes, got {value!r}")
    return [str(c) for c in value]

