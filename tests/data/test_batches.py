"""Batches for model.fit: balanced class weights, label encoding, one pass over every index per epoch."""

from __future__ import annotations

import numpy as np
import pytest

from ultrasonic.data.batches import ArrayBatches, class_weights, encode_labels

IMAGES = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1) * np.ones((1, 4, 4, 1), np.uint8)
TARGETS = np.arange(20, dtype="float32")[:, None]


def epoch_rows(batches: ArrayBatches) -> list[int]:
    """Rows served in one epoch, read back from the image content (row i is filled with i)."""
    return [int(v) for b in range(len(batches)) for v in batches[b][0][:, 0, 0, 0]]


def test_class_weights_are_balanced():
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 2), [4 / (2 * 3), 4 / (2 * 1)])
    # an absent class gets weight 0 and does not count in k
    np.testing.assert_allclose(class_weights(np.array([0, 2, 2, 2]), 3), [4 / (2 * 1), 0.0, 4 / (2 * 3)])


def test_encode_labels_binary_column_and_one_hot():
    binary = encode_labels(np.array([0, 1, 1]), 2)
    assert binary.shape == (3, 1) and binary.dtype == np.float32
    assert binary[:, 0].tolist() == [0.0, 1.0, 1.0]
    onehot = encode_labels(np.array([2, 0]), 3)
    assert onehot.shape == (2, 3)
    assert onehot.tolist() == [[0, 0, 1], [1, 0, 0]]


def test_len_rounds_up():
    assert len(ArrayBatches(IMAGES, TARGETS, np.arange(20), 6)) == 4
    assert len(ArrayBatches(IMAGES, TARGETS, np.arange(20), 5)) == 4
    assert len(ArrayBatches(IMAGES, TARGETS, np.arange(3), 8)) == 1


def test_every_index_exactly_once_per_epoch_and_reshuffled():
    indices = np.arange(2, 19)  # a subset: only these rows may appear
    batches = ArrayBatches(IMAGES, TARGETS, indices, 4, shuffle=True, seed=0)
    epochs = []
    for _ in range(3):
        rows = epoch_rows(batches)
        assert sorted(rows) == indices.tolist()
        epochs.append(rows)
        batches.on_epoch_end()
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_fixed_order_without_shuffle():
    batches = ArrayBatches(IMAGES, TARGETS, np.array([5, 3, 9, 1]), 3)
    first = epoch_rows(batches)
    batches.on_epoch_end()
    assert epoch_rows(batches) == first == [3, 5, 9, 1]  # sorted inside each batch


def test_targets_follow_their_images_and_sample_weights_are_returned():
    weights = np.linspace(0, 1.9, 20)
    batches = ArrayBatches(IMAGES, TARGETS, np.arange(20), 8, shuffle=True, seed=1, sample_weight=weights)
    x, y, w = batches[0]
    assert x.shape == (8, 4, 4, 1) and x.dtype == np.uint8
    assert y.shape == (8, 1) and w.shape == (8,) and w.dtype == np.float32
    rows = x[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(y[:, 0], rows)
    np.testing.assert_allclose(w, weights[rows], rtol=1e-6)
    assert len(batches[len(batches) - 1][0]) == 4  # the last batch holds the remainder


def test_without_sample_weight_batches_are_pairs():
    assert len(ArrayBatches(IMAGES, TARGETS, np.arange(20), 8)[0]) == 2


@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_same_order(seed):
    a = ArrayBatches(IMAGES, TARGETS, np.arange(20), 5, shuffle=True, seed=seed)
    b = ArrayBatches(IMAGES, TARGETS, np.arange(20), 5, shuffle=True, seed=seed)
    assert epoch_rows(a) == epoch_rows(b)
