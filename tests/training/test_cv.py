"""train --cv K: patient-grouped, stratified folds, a complete run per fold, cv.json, and the final run in OUT."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ultrasonic.errors import ConfigError, RunError
from ultrasonic.evaluation.summary import json_safe
from ultrasonic.rundir import RunDir
from live_server import TINY
from tiny_run import write_class_folders

K = 3
SETTINGS = {**TINY, "epochs": 2}


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """96 synthetic lesion images of 48 patients, 3-fold CV, then the final run: 4 tiny models."""
    from ultrasonic.training.fit import train

    root = tmp_path_factory.mktemp("cv")
    data = write_class_folders(root / "data", 96, 0, ("normal", "pneumonia"), "person{patient}_img_{i}.png", size=32)
    result = train(str(data), str(root / "run"), cache_dir=str(root / "cache"), cv=K, **SETTINGS)
    return root, result


@pytest.mark.slow
@pytest.mark.e2e
def test_folds_are_disjoint_by_patient_cover_every_non_test_image_and_are_stratified(cv_run):
    root, result = cv_run
    final = rows(RunDir(result.run_dir).splits)
    outside_test = {r["file"] for r in final if r["split"] in ("train", "val")}
    test = {r["file"] for r in final if r["split"] == "test"}
    vals, patients, counts = [], [], []
    for k in range(1, K + 1):
        fold = rows(RunDir(result.run_dir / "folds" / f"fold_{k}").splits)
        assert {r["file"] for r in fold if r["split"] == "test"} == test  # the test split stays out of every fold
        val = [r for r in fold if r["split"] == "val"]
        assert {r["file"] for r in fold if r["split"] == "train"} == outside_test - {r["file"] for r in val}
        vals.append({r["file"] for r in val})
        patients.append({r["patient"] for r in val})
        counts.append([sum(r["class"] == c for r in val) for c in ("normal", "pneumonia")])
    assert set().union(*vals) == outside_test and sum(map(len, vals)) == len(outside_test)
    assert all(not (patients[a] & patients[b]) for a in range(K) for b in range(a + 1, K))
    per_class = np.array(counts)  # folds x classes; a patient has two images (one or two classes)
    assert (per_class.max(axis=0) - per_class.min(axis=0) <= 2).all(), per_class  # within one patient


@pytest.mark.slow
@pytest.mark.e2e
def test_cv_json_holds_each_folds_figures_at_its_threshold_and_their_spread(cv_run):
    from ultrasonic.evaluation.metrics import binary_metrics

    root, result = cv_run
    run = RunDir(result.run_dir)
    cv = json.loads(run.cv.read_text())
    assert cv == json_safe(result.cv) and cv["k"] == K and "as without --cv" in cv["final_model"]
    predictions = rows(run.cv_predictions)
    for entry in cv["folds"]:
        fold_run = RunDir(run.path / entry["run"])
        assert entry["threshold"] == pytest.approx(fold_run.read_meta().threshold)
        mine = [r for r in predictions if int(r["fold"]) == entry["fold"]]
        y = np.array([r["class"] == "pneumonia" for r in mine], dtype=int)
        p = np.array([float(r["p_pneumonia"]) for r in mine])
        expected = binary_metrics(y, p, entry["threshold"])
        for name in ("roc_auc", "accuracy", "sensitivity", "specificity"):
            assert entry[name]["value"] == pytest.approx(expected[name], abs=1e-5), (entry["fold"], name)
            lo, hi = entry[name]["ci95"]
            assert lo <= entry[name]["value"] <= hi
        assert entry["images"] == len(mine)
    for name, spread in cv["across_folds"].items():
        values = [f[name]["value"] for f in cv["folds"]]
        assert spread == pytest.approx({"mean": np.mean(values), "std": np.std(values, ddof=1),
                                        "min": min(values), "max": max(values)})
    y = np.array([r["class"] == "pneumonia" for r in predictions], dtype=int)
    pooled = cv["pooled_out_of_fold"]
    assert pooled["images"] == len(predictions) == sum(f["images"] for f in cv["folds"])
    assert pooled["roc_auc"]["value"] == pytest.approx(
        binary_metrics(y, np.array([float(r["p_pneumonia"]) for r in predictions]), 0.5)["roc_auc"], abs=1e-5)
    assert "patients" in pooled["interval"]
    line = result.summary_lines()[0]
    assert line.startswith(f"{K}-fold CV ROC-AUC {cv['across_folds']['roc_auc']['mean']:.3f} +- ")
    assert f"pooled out-of-fold {pooled['roc_auc']['value']:.3f} (95 % CI " in line


@pytest.mark.slow
@pytest.mark.e2e
def test_each_fold_and_the_final_run_are_complete_runs_that_predict(cv_run):
    from ultrasonic.inference.predictor import Predictor

    root, result = cv_run
    for path in [result.run_dir] + [result.run_dir / "folds" / f"fold_{k}" for k in range(1, K + 1)]:
        meta = RunDir(path).read_meta()
        assert meta.ood is not None and meta.temperature is not None
        rows_ = Predictor(path).predict_files([root / "data" / "normal"])
        assert len(rows_) == 48 and not any("error" in r for r in rows_)
    assert not RunDir(result.run_dir).read_meta().extra  # the estimate lives in cv.json, not in meta.json


@pytest.mark.slow
@pytest.mark.e2e
def test_a_resume_does_not_retrain_finished_folds_and_a_plain_rerun_is_refused(cv_run):
    from ultrasonic.config import load_config
    from ultrasonic.training.cv import cross_validate

    root, result = cv_run
    run = RunDir(result.run_dir)
    models = {p: p.stat().st_mtime_ns for p in run.folds.glob("fold_*/model.keras")}
    before = json.loads(run.cv.read_text())
    cfg = load_config(file=run.config)
    assert cfg.cv == K
    again = cross_validate(cfg, run, resume=True)
    assert {p: p.stat().st_mtime_ns for p in run.folds.glob("fold_*/model.keras")} == models
    assert json.loads(run.cv.read_text()) == before == json_safe(again)
    with pytest.raises(RunError, match="holds the folds of an earlier cross-validation; pass --resume"):
        cross_validate(cfg, run)


def test_one_fold_is_a_config_error(tmp_path, capsys):
    from ultrasonic.cli import main

    assert main(["train", str(tmp_path), "--cv", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cv=1" in err[0] and "--cv 5" in err[0]
    assert not (tmp_path / "run").exists()


def test_more_folds_than_patients_is_one_error_before_any_image_is_decoded(tmp_path, capsys):
    from ultrasonic.cli import main

    data = write_class_folders(tmp_path / "data", 12, 0, ("normal", "pneumonia"), "person{patient}_img_{i}.png",
                               size=32)  # 6 patients
    code = main(["train", str(data), "--cv", "7", "--out", str(tmp_path / "run"), "--cache-dir",
                 str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert re.fullmatch(r"error: cv=7: .*only [56] patients.* outside the test split, .*; use --cv [56] or fewer",
                        err[0]), err
    assert not list((tmp_path / "cache").rglob("*.npy"))  # nothing decoded


def test_load_config_names_the_setting():
    from ultrasonic.config import load_config

    assert load_config(overrides={"cv": "5"}).cv == 5 and load_config().cv == 0
    with pytest.raises(ConfigError, match="cv must be at least 0"):
        load_config(overrides={"cv": -2})
