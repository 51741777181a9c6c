"""Public names of a package, imported on first use, so that `ultrasonic --help`, the settings and the
decoding worker processes never pay for importing Keras and its backend.

    __getattr__, __dir__ = lazy_exports(__name__, {"train": ".fit"})
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A module `__getattr__` and `__dir__` that import `names[attr]` (relative to `package`) when asked."""

    def __getattr__(attr: str) -> object:
        if attr not in names:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        return getattr(importlib.import_module(names[attr], package), attr)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
