"""Batches for model.fit: balanced class weights, label encoding, one pass over every index per epoch."""

from __future__ import annotations

import numpy as np
import pytest

from ultrasonic.data.batches import ArrayBatches, class_weights, encode_labels, mix

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


# --- mixup and cutmix ---------------------------------------------------------------------------


def constant_images(n: int = 8, size: int = 10) -> np.ndarray:
    """Image i is the constant 20 * i (uint8), so every pixel says which image it came from."""
    return (np.arange(n, dtype=np.uint8)[:, None, None, None] * 20) * np.ones((1, size, size, 1), np.uint8)


def test_mixup_blends_image_target_and_weight_of_each_image_with_one_partner_by_one_share():
    x, y = constant_images(), encode_labels(np.arange(8) % 3, 3)
    w = np.linspace(0.5, 2.0, 8).astype("float32")  # all different: the weight tells the share
    mx, my, mw = mix(np.random.default_rng(0), x, y, w, mixup=0.4)
    assert mx.dtype == np.uint8 and mx.shape == x.shape and my.dtype == np.float32
    value = x[:, 0, 0, 0].astype(float)
    blended = 0
    for i in range(8):
        assert len(np.unique(mx[i])) == 1  # one share for the whole image
        fits = []
        for j in range(8):
            share = 1.0 if j == i else (mw[i] - w[j]) / (w[i] - w[j])
            if -1e-5 <= share <= 1 + 1e-5 and np.allclose(my[i], share * y[i] + (1 - share) * y[j], atol=1e-5) \
                    and abs(mx[i, 0, 0, 0] - (share * value[i] + (1 - share) * value[j])) <= 0.5 + 1e-3:
                fits.append(j)
        assert fits, f"image {i}: no partner explains its pixels, target and weight together"
        blended += mx[i, 0, 0, 0] != x[i, 0, 0, 0]
    assert blended >= 4


def test_cutmix_pastes_one_box_and_the_target_keeps_the_share_of_the_area_left():
    x, y = constant_images(), encode_labels(np.array([0, 1] * 4), 2)
    mx, my, mw = mix(np.random.default_rng(1), x, y, None, cutmix=1.0)
    assert mw is None
    pasted_any = 0
    for i in range(8):
        pasted = mx[i, ..., 0] != x[i, 0, 0, 0]
        kept = 1.0 - pasted.mean()
        partner = i
        if pasted.any():
            pasted_any += 1
            rows, cols = np.flatnonzero(pasted.any(axis=1)), np.flatnonzero(pasted.any(axis=0))
            assert pasted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # one axis-aligned box
            (partner,) = {int(v) // 20 for v in mx[i][pasted[..., None]]}  # copied from one image, not blended
        assert my[i, 0] == pytest.approx(kept * y[i, 0] + (1 - kept) * y[partner, 0])
    assert pasted_any >= 4


def test_training_batches_mix_from_their_own_stream_and_nothing_else_changes():
    images, targets = constant_images(16), encode_labels(np.arange(16) % 2, 2)
    plain = ArrayBatches(images, targets, np.arange(16), 4, shuffle=True, seed=3)
    mixed = ArrayBatches(images, targets, np.arange(16), 4, shuffle=True, seed=3, mixup=0.2, cutmix=1.0)
    np.testing.assert_array_equal(plain._order, mixed._order)  # the same images in the same batches
    assert any(not np.array_equal(plain[k][0], mixed[k][0]) for k in range(4))
    one = mix(np.random.default_rng(0), images[:1], targets[:1], None, mixup=0.4)[0]  # no partner
    np.testing.assert_array_equal(one, images[:1])
    assert mix(np.random.default_rng(0), images, targets, None)[0] is images  # both off: untouched
