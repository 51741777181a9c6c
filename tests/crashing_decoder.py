"""A decoder that fails on some files the way real ones do, for the containment tests (data/contain.py).

The failure is injected inside Pillow (`Image.Image.resize`, which read_image
calls on every image not already at the model's size), past every check of
read_image, so only the containment can turn it into the file's error. Which
file fails, and how, is told by its pixel size: an image `crash_width(k)` px
wide and MARK_HEIGHT px high raises CRASHES[k]; one NOTE_WIDTH px wide emits
a warning and decodes fine. Noise content: no blank-image check refuses them.

    with crashing_decoder():                  # in a test
        ...
    python tests/crashing_decoder.py predict RUN DIR ...   # `ultrasonic` in a child process, same decoder;
                                                           # CRASHING_DECODER_SLOW=0.2 sleeps per image
"""

from __future__ import annotations

import io
import os
import struct
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

# What Pillow, pydicom, pylibjpeg and numpy really raise on odd files (the first two: issue 14's LAB TIFF
# and a DICOM whose Number of Frames is not an integer).
CRASHES = [
    (ValueError, "conversion from LAB to RGB not supported"),
    (TypeError, "int() argument must be a string, a bytes-like object or a real number, not 'MultiValue'"),
    (KeyError, "(0028, 0010)"),
    (IndexError, "index 3 is out of bounds for axis 0 with size 3"),
    (OSError, "broken data stream when reading image file"),
    (struct.error, "unpack requires a buffer of 4 bytes"),
    (ZeroDivisionError, "division by zero"),
    (RuntimeError, "the pixel data plugin failed"),
    (AttributeError, "'NoneType' object has no attribute 'read'"),
]
MARK_HEIGHT = 48
NOTE_WIDTH = 60
NOTE = "decoder warning: Possibly corrupt EXIF data, read on anyway"

_resize = Image.Image.resize


def crash_width(k: int) -> int:
    return 49 + k


def noise_png(width: int, height: int = MARK_HEIGHT, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def crash_files(folder: str = "") -> dict[str, tuple[bytes, str]]:
    """name -> (PNG bytes, what the file's error must say), one file per exception type."""
    prefix = f"{folder}/" if folder else ""
    return {f"{prefix}crash_{kind.__name__.replace('.', '_')}.png":
            (noise_png(crash_width(k), seed=k), f"cannot be decoded ({kind.__name__}: ")
            for k, (kind, _) in enumerate(CRASHES)}


def noted_png() -> bytes:
    """A fine image whose decoding warns (NOTE)."""
    return noise_png(NOTE_WIDTH, seed=99)


def _crashing_resize(self, *args, **kwargs):
    width, height = self.size
    if height == MARK_HEIGHT and 0 <= width - crash_width(0) < len(CRASHES):
        kind, message = CRASHES[width - crash_width(0)]
        raise kind(message)
    if (width, height) == (NOTE_WIDTH, MARK_HEIGHT):
        warnings.warn(NOTE.split(": ", 1)[1], UserWarning)
    time.sleep(float(os.environ.get("CRASHING_DECODER_SLOW", "0")))
    return _resize(self, *args, **kwargs)


@contextmanager
def crashing_decoder():
    Image.Image.resize = _crashing_resize
    try:
        yield
    finally:
        Image.Image.resize = _resize


def child_env() -> dict[str, str]:
    """The environment for `python tests/crashing_decoder.py ...`: this checkout's ultrasonic first."""
    import ultrasonic

    src = str(Path(ultrasonic.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


if __name__ == "__main__":
    from ultrasonic.cli import main

    Image.Image.resize = _crashing_resize
    sys.exit(main(sys.argv[1:]))
