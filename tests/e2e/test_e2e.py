"""End to end: train on synthetic images made here, then evaluate and predict, through the CLI and
the Python API. Runs under the default backend and again under KERAS_BACKEND=jax (see Makefile)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ultrasonic.cli import main
from ultrasonic.data.synthetic import lesion_images
from tiny_run import write_class_folders as lesion_folders

pytestmark = pytest.mark.e2e

SIZE = 32
FAST = dict(image_size=SIZE, epochs=5, batch_size=16, width=16, tensorboard=False, verbose=0,
            min_split_images=10, learning_rate=1e-3)


def write_class_folders(root, n=300, n_classes=2, seed=0, names=("normal", "pneumonia", "other"), first_patient=0):
    """Synthetic PNGs in root/<class>/, file names carrying a patient id (2 images per patient).

    Folders meant as separate splits need distinct `first_patient`: one patient in two splits is a leak.
    """
    return lesion_folders(root, n, seed, names[:n_classes], "person{patient}_img_{i}.png", first_patient=first_patient)


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("data") / "cxr")


@pytest.fixture(scope="module")
def trained(folder_data, tmp_path_factory):
    from ultrasonic import train

    out = tmp_path_factory.mktemp("runs") / "run"
    cache = tmp_path_factory.mktemp("cache")
    result = train(str(folder_data), str(out), cache_dir=str(cache), **FAST)
    return result, cache


def test_train_leaves_a_complete_run_directory(trained):
    result, _ = trained
    run = result.run_dir
    for name in ("model.keras", "meta.json", "config.yaml", "history.csv", "curves.png", "data_report.json",
                 "splits.csv", "train.log"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("*tfevents*")) or not (run / "logs").exists()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["classes"] == ["normal", "pneumonia"]
    assert meta["image_size"] == [SIZE, SIZE] and meta["channels"] == 1
    assert 0.0 <= meta["threshold"] <= 1.0
    assert len(meta["data"]["fingerprint"]) == 32
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + FAST["epochs"]


def test_train_calibrates_on_validation_and_bakes_the_temperature_into_model_keras(trained):
    import keras

    from ultrasonic import Predictor
    from ultrasonic.evaluation.calibration import TEMPERATURE_BOUNDS
    from ultrasonic.models.build import logit_model

    run = trained[0].run_dir
    meta = json.loads((run / "meta.json").read_text())
    temperature = meta["temperature"]
    assert TEMPERATURE_BOUNDS[0] <= temperature <= TEMPERATURE_BOUNDS[1]
    assert meta["operating_point"] == "youden" and meta["threshold_method"] == "Youden's J on the validation split"
    calibration = meta["calibration"]
    assert set(calibration["before"]) == set(calibration["after"]) == {"ece", "brier", "log_loss"}
    # T minimises the validation log loss, and T = 1 is among the candidates
    assert calibration["after"]["log_loss"] <= calibration["before"]["log_loss"] + 1e-6
    network = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert network.get_layer("temperature").scale == pytest.approx(1 / temperature, rel=1e-5)
    images = np.random.default_rng(0).integers(0, 256, (8, SIZE, SIZE, 1), dtype=np.uint8)
    logits = np.asarray(logit_model(network).predict(images, verbose=0), dtype=float)[:, 0]
    probs = Predictor(run).predict_proba(images)[:, 1]
    assert np.allclose(probs, 1 / (1 + np.exp(-logits / temperature)), atol=1e-5)  # calibrated, in predict


def test_calibrated_model_keras_loads_in_plain_keras_and_agrees(trained, tmp_path):
    from plain_python import plain_python, run_plain

    from ultrasonic import Predictor

    run = trained[0].run_dir
    images = np.random.default_rng(1).integers(0, 256, (6, SIZE, SIZE, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    code = ("import sys, numpy as np, keras\n"
            "m = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
            "np.save(sys.argv[3], np.asarray(m.predict(np.load(sys.argv[2]), verbose=0)))\n")
    done = run_plain(plain_python(tmp_path / "venv"), "-c", code, str(run / "model.keras"), str(tmp_path / "x.npy"),
                     str(tmp_path / "p.npy"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.allclose(np.load(tmp_path / "p.npy")[:, 0], Predictor(run).predict_proba(images)[:, 1], atol=1e-6)


def test_splits_are_grouped_by_patient_and_saved(trained):
    import csv

    rows = list(csv.DictReader(open(trained[0].run_dir / "splits.csv")))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    split_of_patient = {}
    for r in rows:
        split_of_patient.setdefault(r["patient"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_patient.values())


def test_model_beats_chance_on_held_out_test_split(trained):
    from ultrasonic import evaluate

    metrics = evaluate(trained[0].run_dir, n_boot=100)
    assert metrics["at_0.5"]["roc_auc"]["value"] > 0.8
    assert metrics["at_threshold"]["accuracy"]["value"] > 0.7
    for name in ("metrics.json", "confusion_matrix.png", "roc.png", "reliability.png", "report.html"):
        assert (trained[0].run_dir / "eval" / name).is_file()
    saved = json.loads((trained[0].run_dir / "eval" / "metrics.json").read_text())
    n_test = sum(1 for line in open(trained[0].run_dir / "splits.csv") if ",test," in line)
    assert saved["n"] == n_test
    # two images per patient in these file names: the AUC bootstrap resamples the patients
    assert saved["intervals"]["others"] == f"percentile bootstrap, 100 resamples of the {n_test // 2} patients, " \
                                           "stratified by class"
    assert saved["calibration"]["ece_binning"].startswith("15 equal-width bins")
    assert saved["calibration"]["temperature"] == json.loads((trained[0].run_dir / "meta.json").read_text())[
        "temperature"]
    assert saved["confusion_threshold"] == saved["at_threshold"]["threshold"]
    html = (trained[0].run_dir / "eval" / "report.html").read_text()
    assert "Reliability diagram" in html and "Threshold table" in html and "Clopper-Pearson" in html


@pytest.mark.slow  # the cache, not the backend: once, under TensorFlow
def test_second_train_decodes_nothing(trained, folder_data, tmp_path, caplog):
    from ultrasonic import train

    _, cache = trained
    with caplog.at_level("INFO", logger="ultrasonic"):
        train(str(folder_data), str(tmp_path / "again"), cache_dir=str(cache), **{**FAST, "epochs": 1})
    assert "(0 decoded)" in caplog.text


def test_predict_cli_json_rows(trained, folder_data, capsys):
    files = sorted((folder_data / "pneumonia").glob("*.png"))[:3]
    # --ood warn: a class for every row. A 1 % gate set on 30 validation images may flag a training image
    # of a tiny model (its score just above the highest validation score): then the row has a message too.
    code = main(["predict", str(trained[0].run_dir), *map(str, files), "--format", "json", "--ood", "warn"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and len(rows) == 3
    for row, f in zip(rows, files):
        flagged = {"message"} if row["in_distribution"] is False else set()
        assert set(row) == {"file", "class", "probabilities", "threshold", "ood_score", "in_distribution"} | flagged
        assert row["file"] == str(f) and isinstance(row["in_distribution"], bool) and row["ood_score"] >= 0
        assert row["class"] in ("normal", "pneumonia")
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4


def test_predict_folder_csv_and_bad_file(trained, folder_data, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    code = main(["predict", str(trained[0].run_dir), str(folder_data / "normal"), str(bad), "--format", "csv"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("file,class,p_normal,p_pneumonia,threshold,error")
    assert len(lines) == 1 + len(list((folder_data / "normal").glob("*.png"))) + 1
    assert "not a recognised image" in lines[-1]
    assert code == 1  # a file could not be read: say so in the exit status


def test_predictor_api_matches_cli_decision(trained, folder_data):
    from ultrasonic import Predictor

    p = Predictor(trained[0].run_dir, ood="warn")  # the decision itself, whatever the gate says of the image
    f = sorted((folder_data / "normal").glob("*.png"))[0]
    probs = p.predict_proba(p.read(f)[None])
    row = p.predict_files([f])[0]
    assert np.allclose(probs[0], [row["probabilities"]["normal"], row["probabilities"]["pneumonia"]], atol=1e-5)
    assert row["class"] == ("pneumonia" if probs[0, 1] >= p.threshold else "normal")


def test_cli_train_evaluate_with_split_folders_and_multiclass(tmp_path, capsys):
    root = tmp_path / "splits"
    write_class_folders(root / "train", n=150, n_classes=3, seed=1)
    write_class_folders(root / "test", n=30, n_classes=3, seed=2, first_patient=1000)
    write_class_folders(root / "val", n=9, n_classes=3, seed=3, first_patient=2000)  # tiny: carved from train
    out = tmp_path / "run3"
    settings = tmp_path / "settings.yaml"
    settings.write_text("width: 16\nmin_split_images: 20\nepochs: 1\nlearning_rate: 0.003\nverbose: 0\n")
    args = ["train", str(root), "--out", str(out), "--config", str(settings), "--epochs", "6",
            "--image-size", str(SIZE), "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"),
            "--no-tensorboard"]
    assert main(args) == 0
    saved = (out / "config.yaml").read_text()
    assert "epochs: 6" in saved and "width: 16" in saved  # the flag overrides the file, the file the preset
    report = json.loads((out / "data_report.json").read_text())
    assert report["counts"]["test"] == {"normal": 10, "other": 10, "pneumonia": 10}  # given test kept
    assert any("merged into train" in n for n in report["notes"])
    assert main(["evaluate", str(out), "--n-boot", "50"]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "multiclass" and set(metrics["per_class"]) == {"normal", "other", "pneumonia"}
    assert np.asarray(metrics["confusion_matrix"]).sum() == 30  # every given test image, once
    assert 0.0 <= metrics["overall"]["macro_roc_auc"]["value"] <= 1.0


def test_npz_data_and_seed_preset(tmp_path):
    from ultrasonic import evaluate, train

    images, labels, _ = lesion_images(120, size=SIZE, seed=4)
    npz = tmp_path / "mini.npz"
    np.savez(npz, train_images=images[:80, ..., 0], train_labels=labels[:80, None].astype(np.uint8),
             val_images=images[80:100, ..., 0], val_labels=labels[80:100, None],
             test_images=images[100:], test_labels=labels[100:])
    result = train(str(npz), str(tmp_path / "seedrun"), preset="seed", image_size=SIZE, epochs=2,
                   min_split_images=10, tensorboard=False, verbose=0, classes=["normal", "pneumonia"],
                   operating_point="sensitivity=0.9")
    config = (result.run_dir / "config.yaml").read_text()
    assert "batch_size: 10" in config and "preprocessing: vgg16" in config
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["operating_point"] == "sensitivity=0.9"
    assert meta["threshold_method"] == "sensitivity >= 0.9 on the validation split"
    assert meta["validation"]["sensitivity"] >= 0.9
    metrics = evaluate(result.run_dir, n_boot=20)
    assert metrics["n"] == 20 and metrics["classes"] == ["normal", "pneumonia"]


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    (tmp_path / "data" / "only").mkdir(parents=True)
    (tmp_path / "data" / "only" / "a.png").write_bytes(b"")
    code = main(["train", str(tmp_path / "data"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "at least two" in err and "Traceback" not in err


def test_console_script_help_runs():
    out = subprocess.run([sys.executable, "-m", "ultrasonic.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "predict" in out.stdout
