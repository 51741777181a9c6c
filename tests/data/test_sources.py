"""open_data: class folders, split folders and .npz archives, and one DataError per bad layout."""

from __future__ import annotations

import numpy as np
import pytest

from ultrasonic.data.sources import open_data
from ultrasonic.errors import DataError


def test_class_folders_are_discovered_sorted(tmp_path, make_class_folders):
    make_class_folders(tmp_path, {"PNEUMONIA": 3, "NORMAL": 2})
    catalog = open_data(str(tmp_path))

    assert catalog.kind == "folders"
    assert catalog.classes == ["NORMAL", "PNEUMONIA"]
    assert len(catalog) == 5
    assert catalog.refs[:2] == ["NORMAL/img000.png", "NORMAL/img001.png"]
    assert catalog.labels.tolist() == [0, 0, 1, 1, 1]
    assert catalog.given_split == [None] * 5
    assert catalog.arrays is None and catalog.skipped == []
    assert catalog.path(0) == tmp_path.resolve() / "NORMAL" / "img000.png"


def test_classes_argument_picks_a_subset_in_the_given_order(tmp_path, make_class_folders):
    make_class_folders(tmp_path, {"a": 1, "b": 2, "c": 3})
    catalog = open_data(str(tmp_path), classes=["c", "a"])
    assert catalog.classes == ["c", "a"]
    assert catalog.labels.tolist() == [0, 0, 0, 1]
    assert all(ref.startswith(("c/", "a/")) for ref in catalog.refs)


def test_images_in_subfolders_are_found(tmp_path, make_class_folders):
    make_class_folders(tmp_path, {"a": 1, "b": 1})
    make_class_folders(tmp_path / "a" / "patient7", {"study1": 2})
    catalog = open_data(str(tmp_path))
    assert catalog.refs == ["a/img000.png", "a/patient7/study1/img000.png",
                            "a/patient7/study1/img001.png", "b/img000.png"]
    assert catalog.labels.tolist() == [0, 0, 0, 1]


def test_hidden_and_non_image_files_are_listed_in_skipped(tmp_path, make_class_folders):
    make_class_folders(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "a" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "b" / ".thumbs").mkdir()
    (tmp_path / "b" / ".thumbs" / "t.png").write_bytes(b"x")

    catalog = open_data(str(tmp_path))

    assert len(catalog) == 2
    assert catalog.skipped == [
        {"file": "a/.DS_Store", "reason": "hidden file"},
        {"file": "a/notes.txt", "reason": "not an image file name (.txt)"},
        {"file": "b/.thumbs/t.png", "reason": "hidden file"},
    ]


def test_split_folders_give_each_image_its_split(tmp_path, make_class_folders):
    make_class_folders(tmp_path / "train", {"NORMAL": 3, "PNEUMONIA": 4})
    make_class_folders(tmp_path / "validation", {"NORMAL": 1, "PNEUMONIA": 1}, start=10)
    make_class_folders(tmp_path / "test", {"NORMAL": 2, "PNEUMONIA": 2}, start=20)

    catalog = open_data(str(tmp_path))

    assert catalog.kind == "splits"
    assert catalog.classes == ["NORMAL", "PNEUMONIA"]
    assert catalog.given_split == ["train"] * 7 + ["val"] * 2 + ["test"] * 4
    assert catalog.refs[7] == "validation/NORMAL/img000.png"
    assert catalog.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1]


def test_a_held_out_test_folder_alone_is_a_split_folder(tmp_path, make_class_folders):
    """DATA/test/<class>/... only (a test set usually comes alone): not one class called 'test'."""
    make_class_folders(tmp_path / "test", {"normal": 2, "pneumonia": 3})
    catalog = open_data(str(tmp_path))
    assert catalog.kind == "splits" and catalog.classes == ["normal", "pneumonia"]
    assert catalog.given_split == ["test"] * 5 and catalog.refs[0] == "test/normal/img000.png"


def test_val_and_test_folders_without_train_must_agree_on_classes(tmp_path, make_class_folders):
    make_class_folders(tmp_path / "val", {"normal": 1, "pneumonia": 1})
    make_class_folders(tmp_path / "test", {"normal": 1, "effusion": 1}, start=5)
    with pytest.raises(DataError, match=r"test: its class folders \['effusion', 'normal'\] differ from val's"):
        open_data(str(tmp_path))


def test_a_test_folder_beside_class_folders_is_a_class(tmp_path, make_class_folders):
    make_class_folders(tmp_path, {"normal": 1, "test": 1})  # not only split folders: class folders, as before
    assert open_data(str(tmp_path)).classes == ["normal", "test"]


def test_split_whose_classes_differ_from_train_is_an_error(tmp_path, make_class_folders):
    make_class_folders(tmp_path / "train", {"a": 1, "b": 1})
    make_class_folders(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(DataError, match=r"class folders \['a', 'c'\] differ from train's \['a', 'b'\]"):
        open_data(str(tmp_path))


def test_split_with_extra_class_is_fine_when_classes_are_given(tmp_path, make_class_folders):
    make_class_folders(tmp_path / "train", {"a": 1, "b": 1})
    make_class_folders(tmp_path / "val", {"a": 1, "b": 1, "c": 1})
    catalog = open_data(str(tmp_path), classes=["a", "b"])
    assert catalog.given_split.count("val") == 2


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="nothing_here: no such file or folder"):
        open_data(str(tmp_path / "nothing_here"))


def test_non_npz_file_is_an_error(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"must be a MedMNIST-style \.npz"):
        open_data(str(tmp_path / "data.csv"))


def test_single_class_is_an_error(tmp_path, make_class_folders):
    make_class_folders(tmp_path, {"only": 3})
    with pytest.raises(DataError, match=r"found 1 class folder\(s\) \['only'\]; a classifier needs at least two"):
        open_data(str(tmp_path))


def test_unknown_class_name_is_an_error(tmp_path, make_class_folders):
    make_class_folders(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(DataError, match=r"no class folder for \['z'\]"):
        open_data(str(tmp_path), classes=["a", "z"])


def test_empty_class_folder_is_an_error(tmp_path, make_class_folders):
    make_class_folders(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("nothing yet")
    with pytest.raises(DataError, match=r"b: class folder has no images"):
        open_data(str(tmp_path))


def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_gray_with_val_and_test(tmp_path):
    path = _save_npz(
        tmp_path / "d.npz",
        train_images=np.zeros((6, 28, 28), np.uint8), train_labels=np.array([[0], [1], [0], [1], [0], [1]]),
        val_images=np.ones((2, 28, 28), np.uint8), val_labels=np.array([0, 1]),
        test_images=np.full((3, 28, 28), 2, np.uint8), test_labels=np.array([[1], [1], [0]]),
    )
    catalog = open_data(path)

    assert catalog.kind == "npz"
    assert catalog.classes == ["0", "1"]
    assert catalog.arrays.shape == (11, 28, 28, 1) and catalog.arrays.dtype == np.uint8
    assert catalog.given_split == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    assert catalog.refs[6] == "val/0" and catalog.refs[-1] == "test/2"
    assert catalog.labels.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0]
    assert catalog.arrays[7, 0, 0, 0] == 1 and catalog.arrays[-1, 0, 0, 0] == 2


def test_npz_colour_train_only_with_class_names(tmp_path):
    path = _save_npz(tmp_path / "c.npz", train_images=np.zeros((4, 16, 16, 3), np.uint8),
                     train_labels=np.array([0, 1, 2, 1], np.uint8))
    catalog = open_data(path, classes=["benign", "malignant", "normal"])
    assert catalog.classes == ["benign", "malignant", "normal"]
    assert catalog.arrays.shape == (4, 16, 16, 3)
    assert catalog.given_split == ["train"] * 4
    assert catalog.labels.dtype == np.int64


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(train_images=np.zeros((4, 8, 8), np.float32), train_labels=np.array([0, 1, 0, 1])),
         "train_images has dtype float32; expected uint8"),
        (dict(train_images=np.zeros((4, 8, 8, 2), np.uint8), train_labels=np.array([0, 1, 0, 1])),
         r"train_images has shape \(4, 8, 8, 2\)"),
        (dict(train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.array([0, 1, 0, 1])),
         r"with N = len\(train_labels\) = 4"),
        (dict(train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array([[0, 1], [1, 0]])),
         "train_labels has 2 columns; only single-label data"),
        (dict(train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array([0, 1]),
              val_images=np.zeros((1, 8, 8), np.uint8)),
         "has val_images but no val_labels"),
        (dict(train_images=np.zeros((2, 8, 8), np.uint8)), "has train_images but no train_labels"),
        (dict(images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 1])),
         r"needs arrays <split>_images and <split>_labels for at least one of train, val, test .*has \['images'"),
        (dict(train_images=np.zeros((0, 28, 28), np.uint8), train_labels=np.zeros((0, 1), np.uint8)),
         "holds no images: train_images is empty"),
        (dict(train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.zeros((0,), np.uint8)),
         "train_images has 2 images but train_labels is empty"),
        (dict(train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array([0, 0])),
         "every label is 0; a classifier needs at least two classes"),
    ],
)
def test_npz_problems_are_data_errors(tmp_path, arrays, message):
    path = _save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        open_data(path)


def test_npz_with_only_test_arrays_or_empty_train_arrays(tmp_path):
    """A held-out test set alone; or with its train arrays left empty: those are left out, not an error."""
    test = dict(test_images=np.zeros((3, 8, 8), np.uint8), test_labels=np.array([[0], [1], [1]]))
    for arrays in (test, {**test, "train_images": np.zeros((0, 8, 8), np.uint8),
                          "train_labels": np.zeros((0, 1), np.uint8)}):
        catalog = open_data(_save_npz(tmp_path / "t.npz", **arrays))
        assert catalog.given_split == ["test"] * 3 and catalog.refs == ["test/0", "test/1", "test/2"]
        assert catalog.classes == ["0", "1"] and catalog.arrays.shape == (3, 8, 8, 1)


def test_npz_with_too_few_class_names_is_an_error(tmp_path):
    path = _save_npz(tmp_path / "d.npz", train_images=np.zeros((3, 8, 8), np.uint8),
                     train_labels=np.array([0, 1, 2]))
    with pytest.raises(DataError, match="labels go up to 2 but only 2 class names were given"):
        open_data(path, classes=["a", "b"])


def test_corrupt_npz_is_an_error(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz archive"):
        open_data(str(tmp_path / "broken.npz"))
