"""Real data from ../shared/data (skipped with a reason when absent): a small subset, the user's path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ultrasonic.cli import main
from shared_data import SHARED_DATA

SHARED = SHARED_DATA
CXR = SHARED / "chest_xray_224" / "train"
CXR_FULL = SHARED / "chest_xray_full" / "train"
MNIST = SHARED / "pneumoniamnist_trainval.npz"

pytestmark = pytest.mark.realdata


@pytest.mark.skipif(not CXR.is_dir(), reason=f"real chest X-rays not found at {CXR}")
def test_chest_xray_subset_train_evaluate_predict(tmp_path, capsys):
    data = tmp_path / "cxr" / "train"
    for cls in ("NORMAL", "PNEUMONIA"):
        (data / cls).mkdir(parents=True)
        for f in sorted((CXR / cls).glob("*.jpeg"))[:60]:
            shutil.copy(f, data / cls / f.name)
    out = tmp_path / "run"
    assert main(["train", str(data.parent), "--out", str(out), "--epochs", "2", "--image-size", "32",
                 "--cache-dir", str(tmp_path / "cache"), "--no-tensorboard", "--val-fraction", "0.2",
                 "--test-fraction", "0.2"]) == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["classes"] == ["NORMAL", "PNEUMONIA"] and report["unreadable"] == []
    assert any("grouped by patient" in note for note in report["notes"])
    assert main(["evaluate", str(out), "--n-boot", "50"]) == 0
    assert json.loads((out / "eval" / "metrics.json").read_text())["positive_class"] == "PNEUMONIA"
    if CXR_FULL.is_dir():  # full-resolution JPEGs, gray and RGB, 400-2900 px
        capsys.readouterr()
        assert main(["predict", str(out), str(CXR_FULL / "NORMAL"), "--format", "json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert len(rows) == len(list((CXR_FULL / "NORMAL").glob("*.jpeg"))) and all("class" in r for r in rows)


@pytest.mark.skipif(not MNIST.is_file(), reason=f"PneumoniaMNIST not found at {MNIST}")
def test_pneumoniamnist_subset_learns(tmp_path):
    from ultrasonic import evaluate, train

    real = np.load(MNIST)
    rng = np.random.default_rng(0)  # the file is sorted by class: take random subsets
    tr, va = rng.permutation(len(real["train_labels"]))[:800], rng.permutation(len(real["val_labels"]))
    mini = tmp_path / "mini.npz"
    np.savez(mini, train_images=real["train_images"][tr], train_labels=real["train_labels"][tr],
             val_images=real["val_images"][va[:150]], val_labels=real["val_labels"][va[:150]],
             test_images=real["val_images"][va[150:450]], test_labels=real["val_labels"][va[150:450]])
    result = train(str(mini), str(tmp_path / "run"), image_size=28, epochs=4, width=16, cache_dir=str(tmp_path),
                   classes=["normal", "pneumonia"], tensorboard=False, verbose=0)
    metrics = evaluate(result.run_dir, n_boot=100)
    assert metrics["n"] == 300
    assert metrics["at_0.5"]["roc_auc"]["value"] > 0.85  # real X-rays, 800 training images, 4 epochs
