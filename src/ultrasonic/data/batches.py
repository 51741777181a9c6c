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


def mix(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, w: np.ndarray | None, mixup: float = 0.0,
        cutmix: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a batch with itself in another order.

    Each image gets a partner from the batch and keeps a share lam ~ Beta(alpha, alpha) of
    itself: blended pixel by pixel (mixup, alpha = `mixup`), or with a box of the partner
    pasted over 1 - lam of its area (cutmix, alpha = `cutmix`; lam is then the box's exact
    complement). With both set, each image draws one of the two. Targets and sample weights
    mix by the same lam. Pixels stay `x.dtype` (blends are rounded); 0 turns a method off.
    Keras' MixUp and CutMix layers mix images and labels but not sample weights (the balanced class
    weights), draw no choice between the two per image, and return the backend's float tensors
    where the model takes uint8 arrays; in numpy here this stays indexing plus one blend.
    """
    n = len(x)
    if n < 2 or not (mixup or cutmix):
        return x, y, w
    partner = rng.permutation(n)
    cut = rng.random(n) < 0.5 if mixup and cutmix else np.full(n, bool(cutmix))
    lam = np.where(cut, rng.beta(cutmix or 1.0, cutmix or 1.0, n), rng.beta(mixup or 1.0, mixup or 1.0, n))
    out = x.astype(np.float32)
    height, width = x.shape[1:3]
    for i in np.flatnonzero(cut):
        side = np.sqrt(1.0 - lam[i])
        box_h, box_w = round(height * side), round(width * side)
        top, left = rng.integers(height - box_h + 1), rng.integers(width - box_w + 1)
        out[i, top:top + box_h, left:left + box_w] = x[partner[i], top:top + box_h, left:left + box_w]
        lam[i] = 1.0 - box_h * box_w / (height * width)
    blend = ~cut
    share = lam[blend].reshape(-1, *([1] * (x.ndim - 1)))
    out[blend] = share * out[blend] + (1.0 - share) * x[partner[blend]]
    if np.issubdtype(x.dtype, np.integer):
        out = np.rint(out)
    lam = lam.astype(np.float32)
    mixed_y = lam[:, None] * y + (1.0 - lam[:, None]) * y[partner]
    mixed_w = None if w is None else lam * w + (1.0 - lam) * w[partner]
    return out.astype(x.dtype), mixed_y.astype(y.dtype), mixed_w


class ArrayBatches(keras.utils.PyDataset):
    """Batches of `images[indices]`, reshuffled every epoch when `shuffle` is set.

    Indices inside a batch are sorted, so reads from a memory-mapped cache
    are sequential-ish; the order of batches is what is random.

    Several devices (see devices.py) need every batch to split evenly:
    `multiple_of=N` drops the last few images of each shuffled epoch (other
    images each epoch) or, unshuffled, repeats the first few to fill the last
    batch. On several hosts, `part=(k, n)` gives process k its 1/n of every
    global batch; all processes shuffle with the same seed. `mixup` and `cutmix`
    (alphas, 0: off) mix every batch with itself (`mix`); give them to the training batches only.
    """

    def __init__(self, images, targets, indices, batch_size, *, shuffle=False, seed=0, sample_weight=None,
                 multiple_of=1, part=(0, 1), mixup=0.0, cutmix=0.0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.targets = images, targets
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self._mix_rng = np.random.default_rng([seed, 1])  # its own stream: the batch order is the unmixed one
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
        w = None if self.sample_weight is None else self.sample_weight[rows].astype("float32")
        x, y, w = mix(self._mix_rng, x, y, w, self.mixup, self.cutmix)  # as they are when both are off
        return (x, y) if w is None else (x, y, w)

    def on_epoch_end(self) -> None:
        self._order = self._new_order()

    def _new_order(self) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        order = self._rng.permutation(self.indices)
        return order[:len(order) - len(order) % self.multiple_of]
