"""Leakage: the same image (by content) or the same patient in two splits stops `train`, unless allowed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ultrasonic.cli import main
from ultrasonic.config import load_config
from ultrasonic.data.dataset import check_leakage, load_dataset
from ultrasonic.data.leakage import describe_leaks, find_leaks
from shared_data import SHARED_DATA

SHARED_DATA = SHARED_DATA
PNEUMONIAMNIST = SHARED_DATA / "pneumoniamnist_trainval.npz"
FAST = ["--epochs", "1", "--image-size", "32", "--batch-size", "16", "--no-tensorboard"]


# --- the pure function ----------------------------------------------------------------------------


def test_find_leaks_lists_images_and_patients_in_two_splits():
    refs = ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png", "g.png"]
    split = ["train", "val", "train", "train", "test", "bad", "train"]
    hashes = ["h1", "h1", "h2", "h2", "h3", "h3", "h4"]  # h1 across train/val; h2 within train; h3 vs a bad file
    patients = ["p1", None, "p2", None, "p2", "p1", None]  # p2 in train and test; p1 only with a bad file

    leaks = find_leaks(refs, split, hashes, patients)

    assert leaks == [
        {"kind": "duplicate image", "id": "h1", "files": {"train": ["a.png"], "val": ["b.png"]}},
        {"kind": "patient", "id": "p2", "files": {"train": ["c.png"], "test": ["e.png"]}},
    ]
    lines = describe_leaks(leaks)
    assert lines == ["identical image in train and val (train: a.png; val: b.png)",
                     "patient p2 in train and test (train: c.png; test: e.png)"]


def test_no_leaks_when_every_key_stays_in_one_split():
    assert find_leaks(["a", "b"], ["train", "train"], ["h", "h"], ["p", "p"]) == []
    assert find_leaks(["a", "b"], ["train", "unused"], ["h", "h"], [None, None]) == []


def test_long_lists_are_cut_in_the_message_not_in_the_report():
    leaks = [{"kind": "duplicate image", "id": f"h{i}", "files": {"train": [f"t{i}_{k}" for k in range(5)],
                                                                  "val": [f"v{i}"]}} for i in range(8)]
    lines = describe_leaks(leaks, limit=3)
    assert len(lines) == 4 and lines[-1].startswith("... and 5 more (all listed in data_report.json")
    assert "t0_0, t0_1, t0_2 ..." in lines[0]


# --- through train, on a crafted set with given splits ---------------------------------------------


def write_split(root: Path, split: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = ("normal", "pneumonia")[i % 2]
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (40, 40), dtype=np.uint8)
        pixels[10:20, 10:20] = 255 if label == "pneumonia" else 0
        Image.fromarray(pixels).save(folder / f"{split}_{i:03d}.png")


@pytest.fixture
def leaky(tmp_path) -> Path:
    """Given train/val folders; one image copied into val under another name, one patient in both."""
    root = tmp_path / "leaky"
    write_split(root, "train", 60, seed=0)
    write_split(root, "val", 20, seed=1)
    shutil.copy(root / "train/pneumonia/train_001.png", root / "val/pneumonia/copy_of_001.png")
    write_split(root / "px", "train", 2, seed=2)  # two more images, renamed below to one patient
    (root / "px/train/normal/train_000.png").rename(root / "train/normal/person7_a.png")
    (root / "px/train/pneumonia/train_001.png").rename(root / "val/pneumonia/person7_b.png")
    shutil.rmtree(root / "px")
    return root


def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "fast.yaml"
    path.write_text("width: 8\nmin_split_images: 10\nverbose: 0\npatient_pattern: '^(person\\d+)'\n")
    return path


def train_args(data: Path, out: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--config", str(settings_file(tmp_path)), *FAST, *extra]


def test_leaks_stop_train_with_the_list_and_are_reported(leaky, tmp_path, capsys):
    out = tmp_path / "run"
    # no test split carved: person7_a stays in train (carving could take it into test: a val/test leak then)
    code = main(train_args(leaky, out, tmp_path, "--no-drop-duplicates", "--test-fraction", "0"))
    err = capsys.readouterr().err

    assert code == 2 and "Traceback" not in err
    assert "error: " in err and "1 image(s) (identical content) and 1 patient(s) occur in more than one split" in err
    assert "identical image in train and val (train: train/pneumonia/train_001.png; " \
           "val: val/pneumonia/copy_of_001.png)" in err
    assert "patient person7 in train and val (train: train/normal/person7_a.png; " \
           "val: val/pneumonia/person7_b.png)" in err
    assert "--allow-leakage" in err and "leave out --no-drop-duplicates" in err
    assert not (out / "model.keras").exists()
    leaks = json.loads((out / "data_report.json").read_text())["leaks"]
    assert [(leak["kind"], leak["files"]) for leak in leaks] == [
        ("duplicate image", {"train": ["train/pneumonia/train_001.png"], "val": ["val/pneumonia/copy_of_001.png"]}),
        ("patient", {"train": ["train/normal/person7_a.png"], "val": ["val/pneumonia/person7_b.png"]}),
    ]
    assert leaks[1]["id"] == "person7" and len(leaks[0]["id"]) == 32  # the content hash


def test_train_copies_of_val_images_are_dropped_by_default_and_reported(leaky, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(train_args(leaky, out, tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err  # the patient leak is not a duplicate: still stops
    assert "0 image(s) (identical content) and 1 patient(s)" in err and "drop-duplicates" not in err.split("error:")[1]
    assert "drop_duplicates: 1 train image(s) identical to a val/test image left train" in err  # the log says so
    report = json.loads((out / "data_report.json").read_text())
    assert report["dropped"] == ["train/pneumonia/train_001.png"]
    assert [leak["kind"] for leak in report["leaks"]] == ["patient"]
    assert any("drop_duplicates: 1 train image(s)" in note for note in report["notes"])
    in_splits = sum(n for split in report["counts"].values() for n in split.values())
    assert in_splits == report["images"] - 1  # the dropped copy counts in no split


@pytest.mark.e2e
@pytest.mark.once
@pytest.mark.slow  # a training whose subject is the data, not the backend: once, under TensorFlow
def test_allow_leakage_trains_with_a_warning(leaky, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(leaky, out, tmp_path, "--allow-leakage", "--no-drop-duplicates")) == 0
    assert (out / "model.keras").is_file()
    log = (out / "train.log").read_text()
    assert "WARNING data: leakage allowed: 1 image(s) (identical content) and 1 patient(s)" in log
    assert len(json.loads((out / "data_report.json").read_text())["leaks"]) == 2
    assert "allow_leakage: true" in (out / "config.yaml").read_text()


def test_copies_carved_by_ultrasonic_stay_together(tmp_path):
    """Class folders only: val and test are carved, identical files land in one split, so no leak."""
    root = tmp_path / "copies"
    write_split(root, "all", 80, seed=3)
    for i in range(0, 40, 2):  # 20 images get a copy under another name
        label = ("normal", "pneumonia")[i % 2]
        shutil.copy(root / f"all/{label}/all_{i:03d}.png", root / f"all/{label}/copy_{i:03d}.png")
    cfg = load_config(overrides=dict(data=str(root / "all"), image_size=32, val_fraction=0.3, test_fraction=0.3,
                                     cache_dir=str(tmp_path / "cache"), patient_pattern=None))
    ds = load_dataset(cfg)
    assert ds.leaks == []
    assert any("20 images are identical copies of another; carving keeps copies together" in note
               for note in ds.notes)
    for i in range(0, 40, 2):
        label = ("normal", "pneumonia")[i % 2]
        a, b = ds.catalog.refs.index(f"{label}/all_{i:03d}.png"), ds.catalog.refs.index(f"{label}/copy_{i:03d}.png")
        assert ds.split[a] == ds.split[b]
    check_leakage(ds, cfg)  # nothing to stop for


# --- the real data set ----------------------------------------------------------------------------


@pytest.mark.realdata
def test_pneumoniamnist_duplicates_across_train_and_val_are_found(tmp_path, capsys):
    if not PNEUMONIAMNIST.exists():
        pytest.skip(f"{PNEUMONIAMNIST} is absent (real data lives in ../shared/data)")
    archive = np.load(PNEUMONIAMNIST)
    train_x, val_x = archive["train_images"], archive["val_images"]
    # an independent count: val images whose exact pixels also occur in train
    train_rows = {row.tobytes() for row in train_x}
    val_with_copy = sorted(i for i, row in enumerate(val_x) if row.tobytes() in train_rows)
    assert val_with_copy, "the data set was expected to hold duplicates across train and val"

    out = tmp_path / "run"
    code = main(["train", str(PNEUMONIAMNIST), "--out", str(out), "--image-size", "28",
                 "--cache-dir", str(tmp_path / "cache"), "--no-tensorboard", "--no-drop-duplicates"])
    err = capsys.readouterr().err
    leaks = json.loads((out / "data_report.json").read_text())["leaks"]
    assert code == 2 and "Traceback" not in err
    assert f"error: {PNEUMONIAMNIST.resolve()}: {len(leaks)} image(s) (identical content) and 0 patient(s)" in err
    assert all(leak["kind"] == "duplicate image" for leak in leaks)  # an .npz names no patients
    assert sorted(int(ref.split("/")[1]) for leak in leaks for ref in leak["files"]["val"]) == val_with_copy
    for leak in leaks:
        assert set(leak["files"]) == {"train", "val"}  # the carved test split kept train's copies together
        first = archive["train_images"][int(leak["files"]["train"][0].split("/")[1])]
        for ref in leak["files"]["train"] + leak["files"]["val"]:
            split, index = ref.split("/")
            np.testing.assert_array_equal(archive[f"{split}_images"][int(index)], first)


@pytest.mark.realdata
def test_pneumoniamnist_train_copies_are_dropped_by_default_so_it_trains(tmp_path):
    """The official file no longer stops on its duplicates: the 10 train copies leave train, said in the report."""
    if not PNEUMONIAMNIST.exists():
        pytest.skip(f"{PNEUMONIAMNIST} is absent (real data lives in ../shared/data)")
    archive = np.load(PNEUMONIAMNIST)
    held_out = {row.tobytes() for row in archive["val_images"]}
    copies = sorted(i for i, row in enumerate(archive["train_images"]) if row.tobytes() in held_out)
    cfg = load_config(overrides=dict(data=str(PNEUMONIAMNIST), image_size=28, cache_dir=str(tmp_path / "cache")))
    assert cfg.drop_duplicates is True  # the default
    ds = load_dataset(cfg, report_to=tmp_path / "data_report.json")
    check_leakage(ds, cfg)  # nothing left to stop for
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert sorted(int(ref.split("/")[1]) for ref in report["dropped"]) == copies and len(copies) == 10
    assert report["leaks"] == []
    assert any(note.startswith("drop_duplicates: 10 train image(s) identical to a val/test image left train")
               for note in report["notes"])
    assert set(ds.split[[ds.catalog.refs.index(f"train/{i}") for i in copies]]) == {"dropped"}


def test_leakage_settings_are_checked():
    from ultrasonic.errors import ConfigError

    with pytest.raises(ConfigError, match="allow_leakage must be true or false"):
        load_config(overrides={"allow_leakage": "no"})
    assert load_config(overrides={"allow_leakage": True}).allow_leakage is True
    with pytest.raises(ConfigError, match=r"max_bad_fraction must be in \[0, 1\]"):
        load_config(overrides={"max_bad_fraction": 5})
