"""CamStore: the Grad-CAM overlays of the most recent predictions, kept in memory.

A bounded LRU, so a long-running service holds at most `capacity` PNGs
(about 100 KB each at 224 px); older ones answer 404 and are re-made by
predicting again. Nothing of a patient's image is left on disk by the service.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class CamStore:
    """id -> PNG bytes, the least recently used dropped beyond `capacity`; thread-safe."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: int, png: bytes) -> None:
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, key: int) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def __len__(self) -> int:
        return len(self._items)
