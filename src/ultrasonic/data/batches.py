"""Batches for model.fit on any backend: shuffled uint8 images, encoded labels, class weights.

Images stay uint8 (4x less memory traffic than float32); the model casts,
normalises and augments them itself, so this is only indexing.
"""

from __future__ import annotations

import keras
import numpy as np


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """'Balanced' weights n / (k * count_c): every class carries the same total weight."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def encode_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, 1) floats for two classes (one sigmoid unit), one-hot (N, K) for more."""
    if n_classes == 2:
        return labels.astype("float32")[:, None]
    return np.eye(n_classes, dtype="float32")[labels]


class ArrayBatches(keras.utils.PyDataset):
    """Batches of `images[indices]`, reshuffled every epoch when `shuffle` is set.

    Indices inside a batch are sorted, so reads from a memory-mapped cache
    are sequential-ish; the order of batches is what is random.

    Several devices (see devices.py) need every batch to split evenly:
    `multiple_of=N` drops the last few images of each shuffled epoch (other
    images each epoch) or, unshuffled, repeats the first few to fill the last
    batch. On several hosts, `part=(k, n)` gives process k its 1/n of every
    global batch; all processes shuffle with the same seed.
    """

    def __init__(self, images, targets, indices, batch_size, *, shuffle=False, seed=0, sample_weight=None,
                 multiple_of=1, part=(0, 1)):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.targets = images, targets
        self.indices = np.asarray(indices)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.sample_weight = sample_weight
        self.multiple_of, self.part = int(multiple_of), part
        if not shuffle and len(self.indices) % self.multiple_of:
            fill = self.multiple_of - len(self.indices) % self.multiple_of
            self.indices = np.concatenate([self.indices, np.resize(self.indices, fill)])
        self._rng = np.random.default_rng(seed)
        self._order = self._new_order()

    def __len__(self) -> int:
        return max(1, -(-len(self._order) // self.batch_size))

    def __getitem__(self, batch: int):
        rows = np.sort(self._order[batch * self.batch_size:(batch + 1) * self.batch_size])
        rows = rows[self.part[0]::self.part[1]]
        x = np.asarray(self.images[rows])
        y = self.targets[rows]
        if self.sample_weight is None:
            return x, y
        return x, y, self.sample_weight[rows].astype("float32")

    def on_epoch_end(self) -> None:
        self._order = self._new_order()

    def _new_order(self) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        order = self._rng.permutation(self.indices)
        return order[:len(order) - len(order) % self.multiple_of]
