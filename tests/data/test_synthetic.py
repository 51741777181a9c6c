"""lesion_images: the synthetic stand-in used by the demo and the tests."""

from __future__ import annotations

import numpy as np
import pytest

from ultrasonic.data.synthetic import lesion_images


def test_shapes_and_dtypes():
    images, labels, masks = lesion_images(12, size=32, n_classes=2, seed=0)
    assert images.shape == (12, 32, 32, 1) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int64
    assert masks.shape == (12, 32, 32) and masks.dtype == bool
    rgb, _, _ = lesion_images(4, size=32, channels=3)
    assert rgb.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize("n, n_classes", [(20, 2), (21, 3)])
def test_labels_are_balanced(n, n_classes):
    _, labels, _ = lesion_images(n, size=32, n_classes=n_classes, seed=1)
    counts = np.bincount(labels, minlength=n_classes)
    assert counts.max() - counts.min() <= 1 and counts.sum() == n


def test_masks_are_nonempty_exactly_for_lesion_classes():
    images, labels, masks = lesion_images(30, size=48, n_classes=3, seed=2)
    has_lesion = masks.reshape(30, -1).any(axis=1)
    np.testing.assert_array_equal(has_lesion, labels > 0)
    # the lesion is brighter than the rest of the image
    for i in np.flatnonzero(labels > 0):
        assert images[i, ..., 0][masks[i]].mean() > images[i, ..., 0][~masks[i]].mean()


def test_same_seed_same_images_other_seed_other_images():
    a = lesion_images(8, size=32, seed=5)
    b = lesion_images(8, size=32, seed=5)
    c = lesion_images(8, size=32, seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
