"""A setting's value as its declared type, and checked against a range written as text ("[0, 1)").

    typed_value("dropout", float, "0.2")    # 0.2 (YAML reads `1e-3` as text; so do the CLI flags)
    in_range(1.5, "[0, 1)")                  # False
    range_words("(0, inf)", "")              # "positive"
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
