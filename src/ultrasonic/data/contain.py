"""One file, one outcome: whatever a decoder does with a file, it stays that file's problem.

Pillow, pydicom, pylibjpeg and numpy raise many exception types on odd files
(a CIE L*a*b* TIFF: ValueError; a DICOM whose Number of Frames is not a
number: TypeError; ...). Every command decodes through `decode_contained`,
so any of them becomes a BadImageError (UndecodableImageError) that names the file, the cause and
what to do, and the other files go on. Only KeyboardInterrupt, SystemExit
and MemoryError (the machine's problem, not the file's) pass through.
Python warnings the decoders emit on the way are kept as the file's notes.

    decoded = decode_contained("scan.tif", size=224, channels=1)
    decoded.error      # None, or the BadImageError of this file
    decoded.notes      # ["UserWarning: Possibly corrupt EXIF data ..."]
    image = decoded.unwrap()   # the image, or raises decoded.error
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ultrasonic.data.io import MAX_PIXELS, Source, read_image
from ultrasonic.errors import BadImageError, UndecodableImageError

MAX_NOTES = 5  # per file: a damaged DICOM can warn once per element
MAX_TEXT = 300  # characters of one exception or warning message


@dataclass
class Decoded:
    """A file's image (uint8 H x W x C) or its error, and the decoder's warnings about it."""

    image: np.ndarray | None
    error: BadImageError | None = None
    notes: list[str] = field(default_factory=list)

    def unwrap(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        return self.image

    @property
    def note(self) -> str:
        """The notes as one line, for a CSV cell or a JSON field ('' when none)."""
        return "; ".join(self.notes)


def decode_contained(source: Source, size: int | tuple[int, int] | None = None, channels: int = 3, *,
                     name: str | None = None, max_pixels: int = MAX_PIXELS) -> Decoded:
    """read_image with every failure of the file turned into its BadImageError; never raises for a file."""
    label = name or (os.fspath(source) if not isinstance(source, bytes) else "<bytes>")
    with _warnings_as_notes() as notes:
        try:
            image = read_image(source, size, channels, name=name, max_pixels=max_pixels)
        except MemoryError:
            raise
        except BadImageError as exc:
            return Decoded(None, exc, _summary(notes))
        except Exception as exc:  # any decoder bug on this file; KeyboardInterrupt and SystemExit are not Exception
            error = UndecodableImageError(label, undecodable(exc))
            error.__cause__ = exc
            return Decoded(None, error, _summary(notes))
    return Decoded(image, None, _summary(notes))


def undecodable(exc: BaseException) -> str:
    """The problem text for an unexpected decoder exception: its type and message, and what to do."""
    return (f"cannot be decoded ({_one_line(f'{type(exc).__name__}: {exc}')}); the file is damaged or a "
            "variant the decoders cannot read: check it in another viewer, or convert it to PNG")


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


def _summary(notes: list[str]) -> list[str]:
    unique = list(dict.fromkeys(notes))
    if len(unique) <= MAX_NOTES:
        return unique
    return unique[:MAX_NOTES] + [f"... and {len(unique) - MAX_NOTES} more warnings"]


# --- warnings, attributed to the file being decoded --------------------------------------------------
#
# warnings.catch_warnings swaps process-wide state, so one per decode is not safe
# in the decoding threads: two overlapping blocks restore each other's state and
# leave warnings routed to a dead list (or ignored for good). Instead the first
# decode to start installs two routers and the last to finish removes them:
# - warnings.warn (what Pillow and pydicom call) notes a warning of a decoding
#   thread straight away, before any filter, so a filter set meanwhile by another
#   thread (an "ignore" block) cannot drop it; other threads' warnings go on as before;
# - warnings.showwarning, under an "always" filter, catches the warnings raised
#   from C (numpy's RuntimeWarning), repeated ones included.

_lock = threading.Lock()
_local = threading.local()
_active = {"count": 0, "saved": None, "show": warnings.showwarning, "warn": warnings.warn}


@contextmanager
def _warnings_as_notes() -> Iterator[list[str]]:
    notes: list[str] = []
    outer = getattr(_local, "notes", None)
    _local.notes = notes
    _enter()
    try:
        yield notes
    finally:
        _exit()
        _local.notes = outer


def _enter() -> None:
    with _lock:
        if _active["count"] == 0:
            saved = warnings.catch_warnings()
            saved.__enter__()
            _active.update(saved=saved, show=warnings.showwarning, warn=warnings.warn)
            warnings.simplefilter("always")
            warnings.showwarning, warnings.warn = _route, _noting_warn
        _active["count"] += 1


def _exit() -> None:
    with _lock:
        _active["count"] -= 1
        if _active["count"] == 0:
            warnings.warn = _active["warn"]
            _active["saved"].__exit__(None, None, None)
            _active["saved"] = None  # "show" and "warn" stay: a thread may still hold a router for a moment


def _noting_warn(message, category=None, stacklevel=1, source=None, **kwargs) -> None:
    notes = getattr(_local, "notes", None)
    if notes is None:  # one level deeper than the caller's own call: point at the caller, not here
        return _active["warn"](message, category, stacklevel + 1, source, **kwargs)
    kind = type(message) if isinstance(message, Warning) else (category or UserWarning)
    notes.append(_one_line(f"{kind.__name__}: {message}"))


def _route(message, category, filename, lineno, file=None, line=None) -> None:
    notes = getattr(_local, "notes", None)
    if notes is None:
        _active["show"](message, category, filename, lineno, file, line)
    else:
        notes.append(_one_line(f"{category.__name__}: {message}"))
