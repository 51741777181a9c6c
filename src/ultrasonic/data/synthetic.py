"""Synthetic chest-like images where a small bright lesion decides the class.

Used by the offline demo and by the tests: the task is learnable in a few
epochs, and the lesion mask is known, so explanations can be checked too.
Class 0 has no lesion; class k >= 1 has a lesion of shape k (disk, ring, bar).

    images, labels, masks = lesion_images(200, size=64, n_classes=2, seed=0)
"""

from __future__ import annotations

import numpy as np


def lesion_images(
    n: int, size: int = 64, n_classes: int = 2, channels: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return uint8 images (n, size, size, channels), int labels (n,), bool lesion masks."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    images = np.empty((n, size, size), dtype=np.float64)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        images[i] = _chest(xx, yy, rng)
        if labels[i]:
            masks[i] = _lesion(xx, yy, labels[i], rng)
            images[i] = np.where(masks[i], images[i] + 0.3 + 0.1 * rng.random(), images[i])
    images += rng.normal(0, 0.06, images.shape)
    images = np.clip(images * 255, 0, 255).astype(np.uint8)[..., None]
    return np.repeat(images, channels, axis=-1), labels.astype(np.int64), masks


def _chest(xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bright body with two darker lung fields, jittered per image."""
    body = 0.55 + 0.1 * rng.random() - 0.15 * np.abs(xx - 0.5)
    lungs = np.zeros_like(xx)
    for cx in (0.3, 0.7):
        cx += rng.normal(0, 0.02)
        lungs += ((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
    return body - 0.3 * lungs


def _lesion(xx: np.ndarray, yy: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """A small lesion of the given kind at a random place inside a lung field."""
    cx = rng.choice([0.3, 0.7]) + rng.uniform(-0.07, 0.07)
    cy = rng.uniform(0.3, 0.7)
    r = rng.uniform(0.06, 0.09)
    d = np.hypot(xx - cx, yy - cy)
    if kind % 3 == 1:
        return d < r
    if kind % 3 == 2:
        return (d < r * 1.3) & (d > r * 0.7)
    return (np.abs(yy - cy) < r * 0.4) & (np.abs(xx - cx) < r * 1.6)
