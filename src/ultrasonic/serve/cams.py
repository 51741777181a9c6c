"""CamStore: the PNGs of the most recent predictions, kept in memory: Grad-CAM overlays and previews.

A bounded LRU per kind ("cam": the overlay, "preview": the image as the model
saw it), so a long-running service holds at most `capacity` PNGs of each
(about 100 KB per overlay at 224 px, less per preview); older ones answer 404
and are re-made by predicting again. Nothing of a patient's image is left on
disk by the service.

    png = preview_png(image_uint8)   # (H, W, C) as decoded for the model; at most 512 px on the long side
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image

KINDS = ("cam", "preview")
PREVIEW_SIDE = 512  # the long side of a preview at most: enough for a page, small in the store


class CamStore:
    """(kind, id) -> PNG bytes, the least recently used of a kind dropped beyond `capacity`; thread-safe."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: dict[str, OrderedDict[int, bytes]] = {kind: OrderedDict() for kind in KINDS}
        self._lock = threading.Lock()

    def put(self, key: int, png: bytes, kind: str = "cam") -> None:
        items = self._items[kind]
        with self._lock:
            items[key] = png
            items.move_to_end(key)
            while len(items) > self.capacity:
                items.popitem(last=False)

    def get(self, key: int, kind: str = "cam") -> bytes | None:
        items = self._items[kind]
        with self._lock:
            png = items.get(key)
            if png is not None:
                items.move_to_end(key)
            return png

    def __len__(self) -> int:
        """How many overlays are kept (the previews are counted by count("preview"))."""
        return self.count("cam")

    def count(self, kind: str) -> int:
        return len(self._items[kind])


def preview_png(image: np.ndarray) -> bytes:
    """The decoded image (uint8 (H, W, 1) or (H, W, 3)) as a PNG, shrunk to PREVIEW_SIDE on its long side:
    what the model saw, for a page that cannot show the uploaded format (DICOM)."""
    pixels = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    if max(picture.size) > PREVIEW_SIDE:
        picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
