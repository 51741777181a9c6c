"""Splits: patient ids from file names, and carving val/test that never share a patient."""

from __future__ import annotations

import numpy as np
import pytest

from ultrasonic.config import KERMANY_PATIENT_PATTERN
from ultrasonic.data.split import _groups, assign_splits, fold_assignments, patient_ids
from ultrasonic.errors import ConfigError


def patients_data(n_patients: int = 60, seed: int = 1):
    """Kermany-style names, 1-4 images per patient, class by patient (even: NORMAL)."""
    rng = np.random.default_rng(seed)
    refs, labels = [], []
    for p in range(n_patients):
        label = p % 2
        for k in range(rng.integers(1, 5)):
            refs.append(f"PNEUMONIA/person{p}_bacteria_{k}.jpeg" if label else f"NORMAL/IM-{p:04d}-{k:04d}.jpeg")
            labels.append(label)
    return refs, np.array(labels)


def split_of(refs, labels, given=None, **kwargs):
    settings = dict(val_fraction=0.2, test_fraction=0.2, min_images=5,
                    patient_pattern=KERMANY_PATIENT_PATTERN, seed=0)
    settings.update(kwargs)
    return assign_splits(refs, labels, given or [None] * len(refs), **settings)


def test_kermany_pattern_finds_the_patient():
    names = ["train/PNEUMONIA/person12_bacteria_3.jpeg", "person12_virus_9.jpeg", "IM-0115-0001.jpeg",
             "NORMAL2-IM-1427-0001.jpeg", "IM-0629-0001-0002.jpeg", "scan_0001.png"]
    assert patient_ids(names, KERMANY_PATIENT_PATTERN) == [
        "person12", "person12", "IM-0115", "NORMAL2-IM-1427", "IM-0629", None]


def test_patient_ids_without_group_use_whole_match_and_no_pattern_gives_none():
    assert patient_ids(["ab12_x.png"], r"[a-z]+\d+") == ["ab12"]
    assert patient_ids(["a.png", "b.png"], None) == [None, None]


def test_invalid_pattern_is_a_config_error():
    with pytest.raises(ConfigError, match=r"patient_pattern '\(unclosed' is not a valid regular expression"):
        patient_ids(["a.png"], "(unclosed")


def test_no_patient_is_in_two_splits():
    refs, labels = patients_data()
    split, notes = split_of(refs, labels)
    ids = np.array(patient_ids(refs, KERMANY_PATIENT_PATTERN))
    for patient in set(ids):
        assert len(set(split[ids == patient])) == 1, patient
    assert set(split) == {"train", "val", "test"}
    assert any("grouped by patient" in note for note in notes)


def test_carved_fractions_are_about_right_per_class():
    refs, labels = patients_data()
    split, _ = split_of(refs, labels, val_fraction=0.2, test_fraction=0.1)
    for label in (0, 1):
        of_class = labels == label
        assert abs((split[of_class] == "val").mean() - 0.2) < 0.07
        assert abs((split[of_class] == "test").mean() - 0.1) < 0.07


def test_same_seed_same_split_other_seed_other_split():
    refs, labels = patients_data()
    first, _ = split_of(refs, labels, seed=3)
    again, _ = split_of(refs, labels, seed=3)
    other, _ = split_of(refs, labels, seed=4)
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_tiny_given_val_is_merged_into_train_and_recarved():
    refs, labels = patients_data()
    given = ["val" if i < 3 else None for i in range(len(refs))]
    split, notes = split_of(refs, labels, given, min_images=10)
    assert "val: the given split has only 3 images (< 10); merged into train" in notes
    assert any(note.startswith("val: carved") for note in notes)
    assert abs((split == "val").mean() - 0.2) < 0.07


def test_big_given_split_is_kept_and_the_missing_one_carved():
    refs, labels = patients_data()
    given = ["test" if i % 5 == 0 else None for i in range(len(refs))]
    split, notes = split_of(refs, labels, given, min_images=10)
    n_test = given.count("test")
    np.testing.assert_array_equal(split == "test", np.array(given) == "test")
    assert f"test: kept the given split ({n_test} images)" in notes
    assert any(note.startswith("val: carved") for note in notes)
    assert not any(note.startswith("test: carved") for note in notes)


def test_zero_fraction_carves_nothing():
    refs, labels = patients_data()
    split, notes = split_of(refs, labels, val_fraction=0.2, test_fraction=0.0)
    assert "test" not in set(split)
    assert not any(note.startswith("test:") for note in notes)


def test_names_without_patient_ids_are_split_ungrouped():
    refs = [f"img{i}.png" for i in range(40)]
    labels = np.arange(40) % 2
    split, notes = split_of(refs, labels, val_fraction=0.25, test_fraction=0.0)
    assert (split == "val").sum() == 10
    assert any("ungrouped" in note for note in notes)


def test_small_given_test_split_is_kept_never_trained_on():
    refs, labels = patients_data()
    given = ["test" if i < 4 else None for i in range(len(refs))]
    split, notes = split_of(refs, labels, given, min_images=10)
    assert split[:4].tolist() == ["test"] * 4 and (split == "test").sum() == 4
    assert any(note.startswith("test: kept the given split (4 images)") for note in notes)


def test_identical_images_are_carved_together_like_one_patient():
    refs = [f"img{i}.png" for i in range(60)]
    labels = np.arange(60) % 2
    hashes = [f"h{i % 20}" for i in range(60)]  # 20 contents, 3 copies each (same class: i, i+20, i+40)
    split, notes = split_of(refs, labels, hashes=hashes, patient_pattern=None, val_fraction=0.25,
                            test_fraction=0.25)
    for content in set(hashes):
        assert len({s for s, h in zip(split, hashes) if h == content}) == 1, content
    assert set(split) == {"train", "val", "test"}
    assert any("40 images are identical copies" in note for note in notes)
    assert any("grouped identical images together" in note for note in notes)


def test_a_copy_joins_two_patients_into_one_group():
    refs = ["person1_a.png", "person1_b.png", "person2_a.png", "person3_a.png"]
    groups, how = _groups(refs, r"^(person\d+)", [], hashes=["x", "y", "y", "z"])
    assert groups[0] == groups[1] == groups[2] != groups[3]  # person2's image is a copy of person1's
    assert how == "grouped by patient and identical images together"


def test_when_only_some_names_match_those_are_grouped_and_the_rest_are_their_own_patients():
    """80 of 997 names match (issue 14): grouping them, not switching grouping off, so no patient leaks."""
    refs, labels = patients_data(n_patients=30)  # 30 patients, 1-4 images each, named person<p>/IM-<p>
    matching = len(refs)
    refs += [f"{('NORMAL', 'PNEUMONIA')[k % 2]}/scan_{k:04d}.png" for k in range(600)]
    labels = np.concatenate([labels, np.arange(600) % 2])
    split, notes = split_of(refs, labels)
    ids = patient_ids(refs, KERMANY_PATIENT_PATTERN)
    assert sum(i is not None for i in ids) == matching < len(refs) / 2
    for patient in {i for i in ids if i}:
        assert len({s for s, i in zip(split, ids) if i == patient}) == 1, patient
    assert f"patients: 30 patient ids in {matching}/{len(refs)} file names (pattern {KERMANY_PATIENT_PATTERN!r}): " \
           f"those are grouped by patient, each of the other 600 files is its own patient" in notes
    assert any("stratified, grouped by patient" in note for note in notes)
    assert set(split[matching:]) == {"train", "val", "test"}  # the others are split one by one


def test_only_a_test_split_given_carves_nothing_from_an_empty_train():
    refs, labels = patients_data(n_patients=20)
    split, notes = split_of(refs, labels, given=["test"] * len(refs))
    assert set(split) == {"test"}  # no val carved out of nothing (was a ZeroDivisionError); train says so


# --- cross-validation folds (train --cv K) ---------------------------------------------------


def test_folds_keep_each_patient_whole_and_cover_every_image():
    rng = np.random.default_rng(3)
    refs = [f"person{rng.integers(0, 40)}_x{i}.png" for i in range(150)]
    labels = rng.integers(0, 2, 150)
    fold = fold_assignments(refs, labels, 5, patient_pattern=r"^(person\d+)", seed=1)
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4] and len(fold) == 150
    patients = np.array(patient_ids(refs, r"^(person\d+)"))
    for p in set(patients):
        assert len(set(fold[patients == p])) == 1, p


def test_folds_with_one_image_per_patient_hold_every_class_within_one_image():
    labels = np.array([0] * 31 + [1] * 14 + [2] * 8)
    refs = [f"person{i}_x.png" for i in range(len(labels))]
    fold = fold_assignments(refs, labels, 4, patient_pattern=r"^(person\d+)", seed=7)
    per_fold = np.array([np.bincount(labels[fold == k], minlength=3) for k in range(4)])
    assert (per_fold.max(axis=0) - per_fold.min(axis=0) <= 1).all(), per_fold
    assert not np.array_equal(fold, fold_assignments(refs, labels, 4, patient_pattern=r"^(person\d+)", seed=8))
    assert np.array_equal(fold, fold_assignments(refs, labels, 4, patient_pattern=r"^(person\d+)", seed=7))


def test_identical_images_go_to_one_fold_like_one_patient():
    refs = [f"img{i}.png" for i in range(20)]
    labels = np.arange(20) % 2
    hashes = [f"h{i}" for i in range(18)] + ["h0", "h1"]  # the last two are copies of the first two
    fold = fold_assignments(refs, labels, 3, patient_pattern=None, seed=0, hashes=hashes)
    assert fold[18] == fold[0] and fold[19] == fold[1]


@pytest.mark.parametrize("rare, k, expected", [
    (False, 1, "at least 2 folds"),
    (False, 6, r"^cv=6: only 5 patients \(groups of images\) outside the test split.*; use --cv 5 or fewer$"),
    (True, 4, r"^cv=4: images of class 'rare' from only 3 patients .*; use --cv 3 or fewer$"),
])
def test_too_many_folds_for_the_patients_is_one_config_error(rare, k, expected):
    refs = [f"person{i // 4}_x{i}.png" for i in range(20)]  # 5 patients of 4 images
    labels = np.array([int(i % 4 == 0 and i < 12) if rare else i % 2 for i in range(20)])  # 'rare': 3 patients
    with pytest.raises(ConfigError, match=expected):
        fold_assignments(refs, labels, k, patient_pattern=r"^(person\d+)", seed=0, classes=["common", "rare"])
