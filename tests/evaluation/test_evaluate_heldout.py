"""`ultrasonic evaluate RUN DATA --split test` on a held-out test set that comes alone (a test/ folder,
an .npz of test_* arrays), with a file the decoder fails on among it: evaluated, that file listed, no traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from crashing_decoder import crash_files, crashing_decoder
from PIL import Image

from ultrasonic.cli import main
from ultrasonic.data.synthetic import lesion_images

N = 30


@pytest.fixture(scope="module")
def held_out():
    images, labels, _ = lesion_images(N, size=48, seed=7)
    return images, labels


def write_test_folder(root, images, labels):
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = root / "test" / ("normal", "pneumonia")[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[..., 0]).save(folder / f"held_{i:03d}.png")
    name, (data, _) = next(iter(crash_files().items()))
    (root / "test" / "pneumonia" / name).write_bytes(data)  # the decoder fails on this one
    return root


def evaluated(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.e2e
@pytest.mark.once
def test_a_test_folder_alone_is_evaluated_and_a_failing_file_left_out(tiny_run, held_out, tmp_path, capsys):
    data = write_test_folder(tmp_path / "hospital_b", *held_out)
    out = tmp_path / "eval"
    with crashing_decoder():
        code = main(["evaluate", str(tiny_run), str(data), "--split", "test", "--out", str(out), "--n-boot", "10"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    assert "crash_ValueError.png: cannot be decoded (ValueError: " in err  # named, with its cause
    assert "1 of 31 images unreadable" in err
    metrics = evaluated(out)
    assert metrics["evaluated_on"] == f"{data} [test split]"
    assert sum(map(sum, metrics["confusion_matrix"])) == N


@pytest.mark.e2e
@pytest.mark.once
def test_an_npz_of_test_arrays_alone_or_with_empty_train_arrays(tiny_run, held_out, tmp_path, capsys):
    images, labels = held_out
    test = dict(test_images=images[..., 0], test_labels=labels[:, None])
    empty = dict(train_images=np.zeros((0, 48, 48), np.uint8), train_labels=np.zeros((0, 1), np.uint8))
    for name, arrays in (("test_only", test), ("empty_train", {**test, **empty})):
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        out = tmp_path / name
        assert main(["evaluate", str(tiny_run), str(path), "--split", "test", "--out", str(out),
                     "--n-boot", "10"]) == 0, capsys.readouterr().err
        assert sum(map(sum, evaluated(out)["confusion_matrix"])) == N
    assert main(["evaluate", str(tiny_run), str(tmp_path / "test_only.npz"), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "has no val split, only test; pass --split test" in err


@pytest.mark.e2e
@pytest.mark.once
def test_a_split_of_the_runs_own_class_folder_is_the_runs_split_and_of_another_is_refused(tiny_run, tmp_path,
                                                                                          capsys):
    import csv
    import shutil

    from ultrasonic.rundir import RunDir

    run = RunDir(tiny_run)
    trained_on = run.read_meta().data["path"]  # a plain class folder: the run carved its own splits
    in_val = sum(row["split"] == "val" for row in csv.DictReader(run.splits.open()))
    out = tmp_path / "own"
    assert main(["evaluate", str(tiny_run), trained_on, "--split", "val", "--out", str(out), "--n-boot", "10"]) == 0
    metrics = evaluated(out)
    assert metrics["evaluated_on"].endswith("[val split of the run]") and "site_check" not in metrics
    assert 0 < sum(map(sum, metrics["confusion_matrix"])) == in_val  # not every image, training images too

    other = shutil.copytree(trained_on, tmp_path / "hospital_c")  # the same images, but not the run's data
    capsys.readouterr()
    assert main(["evaluate", str(tiny_run), str(other), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{other}: a class folder without split folders, so it has no val split" in err
    out = tmp_path / "other"
    assert main(["evaluate", str(tiny_run), str(other), "--out", str(out), "--n-boot", "10"]) == 0
    assert evaluated(out)["evaluated_on"] == f"{other} [all images]"
