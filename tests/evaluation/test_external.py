"""train --external DATA: the run scored on another source beside validation, and the warning when they disagree."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from ultrasonic.errors import DataError
from ultrasonic.evaluation.external import disagreements, external_lines
from ultrasonic.rundir import RunDir
from live_server import TINY
from tiny_run import write_class_folders


def figures(auc=0.9, lo=0.85, hi=0.95):
    return {"roc_auc": {"value": auc, "ci95": [lo, hi]}}


@pytest.mark.parametrize("validation, expected", [
    ({"roc_auc": 0.99}, 1),   # above the external interval: validation flatters
    ({"roc_auc": 0.95}, 0),   # at its upper bound: could be chance
    ({"roc_auc": 0.90}, 0),
    ({"accuracy": 0.99}, 0),  # more classes: validation has no ROC-AUC to compare
])
def test_validation_auc_above_the_whole_external_interval_is_a_disagreement(validation, expected):
    reasons = disagreements(validation, figures(), None)
    assert len(reasons) == expected
    if expected:
        assert "ROC-AUC 0.900 (95 % CI 0.850-0.950) on the external data, validation said 0.990" in reasons[0]


def test_a_site_check_that_does_not_hold_is_a_disagreement_too():
    below = {"holds": False, "verdict": "the operating point does not hold here: specificity below validation"}
    assert disagreements({"roc_auc": 0.9}, figures(), below) == [below["verdict"]]
    assert disagreements({"roc_auc": 0.9}, figures(), {**below, "holds": True}) == []
    assert disagreements({"roc_auc": 0.9}, figures(auc=float("nan"), lo=float("nan"), hi=float("nan")), None) == []


def test_a_missing_external_folder_stops_before_training(tmp_path):
    from ultrasonic.training.fit import train

    with pytest.raises(DataError, match="nowhere: no such file or folder \\(external\\)"):
        train(str(tmp_path), str(tmp_path / "run"), external="nowhere")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def external_run(tmp_path_factory):
    """A tiny run trained with --external: another 'site' of inverted synthetic images (255 - x)."""
    from ultrasonic.training.fit import train

    root = tmp_path_factory.mktemp("external")
    data = write_class_folders(root / "data", 96, 0, ("normal", "pneumonia"), "person{patient}_img_{i}.png", size=32)
    site = write_class_folders(root / "site", 40, 5, ("normal", "pneumonia"), "site_person{patient}_img_{i}.png",
                               size=32, transform=lambda x: 255 - x)
    result = train(str(data), str(root / "run"), cache_dir=str(root / "cache"), external=str(site), **TINY)
    return root, site, result


@pytest.mark.e2e
@pytest.mark.once  # evaluation on another folder: nothing backend-specific past predict, which e2e covers
def test_meta_json_records_the_external_figures_beside_validation(external_run):
    from ultrasonic.evaluation.summary import headline

    root, site, result = external_run
    run = RunDir(result.run_dir)
    meta = run.read_meta()
    block = meta.external
    assert block == result.external and block["data"] == str(site.resolve()) and block["n"] == 40
    metrics = json.loads((run.eval_external / "metrics.json").read_text())
    assert block["metrics"] == "eval_external/metrics.json" and (run.eval_external / "report.html").exists()
    assert {k: block[k] for k in ("roc_auc", "accuracy", "sensitivity", "specificity")} == headline(metrics)
    assert block["threshold"] == meta.threshold and block["agrees"] == (not block["warnings"])
    assert metrics["evaluated_on"] == f"{site} [all images]" and meta.validation  # validation kept beside
    assert any(line.startswith(f"external {site} [all images] (40 images): ROC-AUC ")
               for line in result.summary_lines())


@pytest.mark.e2e
@pytest.mark.once  # evaluation on another folder: nothing backend-specific past predict, which e2e covers
def test_a_validation_that_promised_more_gets_a_warning_in_the_log_and_the_runs_report(external_run, caplog):
    """The rule on a real run: validation said 1.0 everywhere; the external interval cannot reach it."""
    from ultrasonic.evaluation.evaluate import evaluate
    from ultrasonic.evaluation.external import evaluate_external

    root, site, result = external_run
    run = RunDir(result.run_dir)
    meta = run.read_meta()
    run.write_meta(replace(meta, validation={**meta.validation, "roc_auc": 1.0, "sensitivity": 1.0,
                                             "specificity": 1.0}))
    assert meta.external["roc_auc"]["ci95"][1] < 1.0  # 40 images of an inverted site: not perfectly separated
    with caplog.at_level(logging.WARNING, logger="ultrasonic"):
        block = evaluate_external(run.path, str(site), n_boot=200)
    assert not block["agrees"] and "validation said 1.000" in block["warnings"][0]
    assert any(r.levelno == logging.WARNING and "validation said 1.000" in r.getMessage() for r in caplog.records)
    assert run.read_meta().external == block
    assert external_lines(block)[1].startswith("  warning: ROC-AUC ")
    evaluate(run.path, n_boot=20)  # the run's own test split: the external figures beside, with the warning
    page = run.evaluation.report.read_text()
    assert "<h2>External data</h2>" in page and '<p class="warning">ROC-AUC ' in page
    assert "validation said 1.000" in page and "eval_external/metrics.json" in page
