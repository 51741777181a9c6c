"""check_usable: refuse an image that decodes but holds nothing to classify.

A network gives a confident probability for anything, an all-white frame
included, so read_image checks what it decoded (8-bit, before resizing) and
raises UnusableImageError, whose problem starts "blank or too small to classify":

    check_usable(array, "scan.png")                    # the defaults below
    check_usable(array, "scan.png", min_image_side=0, min_dynamic_range=0)   # both checks off

Defaults, and why:
  MIN_IMAGE_SIDE = 24 px: the smallest images medical classifiers are trained on are
  MedMNIST's 28 x 28; a 16 x 16 thumbnail or a 1 x 1 placeholder is below anything a
  model can tell classes apart on after being stretched to its input size.
  MIN_DYNAMIC_RANGE = 8 grey levels (of 255): the brightest minus the darkest value, per
  colour channel. One grey level gives 0; a blank frame saved as JPEG gives 2-5 from
  compression noise; any real radiograph or ultrasound frame spans well over 100.
  Deep (16-bit, float) data is first stretched over its own range, so there only a
  constant image counts as blank.
"""

from __future__ import annotations

import numpy as np

from ultrasonic.errors import UnusableImageError

MIN_IMAGE_SIDE = 24
MIN_DYNAMIC_RANGE = 8
PROBLEM = "blank or too small to classify"
UNLIKE = "not like the training images"  # also the out-of-distribution gate's message (inference/ood.py)


def check_usable(array: np.ndarray, label: str, min_image_side: int = MIN_IMAGE_SIDE,
                 min_dynamic_range: int = MIN_DYNAMIC_RANGE) -> None:
    """Raise UnusableImageError for an (H, W[, C]) uint8 image smaller or flatter than the limits (0: no check)."""
    check_side(array.shape[1], array.shape[0], label, min_image_side)
    check_contrast(array, label, min_dynamic_range)


def check_side(width: int, height: int, label: str, min_image_side: int = MIN_IMAGE_SIDE) -> None:
    """The size check alone, on the stored size (a JPEG decoded at reduced scale is judged by its full size)."""
    if min(width, height) < min_image_side:
        raise UnusableImageError(label, f"{PROBLEM}: {width} x {height} px is smaller than min_image_side "
                                        f"{min_image_side} px: {UNLIKE}; set min_image_side=0 to read it anyway")


def check_contrast(array: np.ndarray, label: str, min_dynamic_range: int = MIN_DYNAMIC_RANGE) -> None:
    """The contrast check alone: the brightest minus the darkest value must reach min_dynamic_range."""
    if min_dynamic_range <= 0:
        return
    span = dynamic_range(array)
    if span < min_dynamic_range:
        what = "every pixel has the same value" if span == 0 else f"a brightness range of only {span} grey levels"
        raise UnusableImageError(label, f"{PROBLEM}: {what} (min_dynamic_range {min_dynamic_range}, of 255): "
                                        f"{UNLIKE}; set min_dynamic_range=0 to read it anyway")


def dynamic_range(array: np.ndarray) -> int:
    """The largest brightest-minus-darkest value of any channel (0 for a single grey level or colour)."""
    pixels = array.reshape(-1, array.shape[2]) if array.ndim == 3 else array.reshape(-1, 1)
    if pixels.size == 0:
        return 0
    return int((pixels.max(axis=0).astype(np.int64) - pixels.min(axis=0)).max())
