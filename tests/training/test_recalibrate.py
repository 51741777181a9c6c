"""recalibrate: a run's temperature, threshold and OOD gate fitted on a site's labelled sample, weights untouched;
and evaluate's site check, which says when that is needed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from ultrasonic.evaluation.site import site_check, site_lines
from ultrasonic.rundir import RunDir, RunMeta
from tiny_run import write_class_folders

pytestmark = pytest.mark.e2e


def write_site(root: Path, n: int = 80, seed: int = 11, gamma: float = 1.0, classes=("normal", "pneumonia")) -> Path:
    """Synthetic lesion PNGs of another 'site': other patients, an intensity curve of its own (gamma)."""
    def curve(x):
        return (255 * (x / 255.0) ** gamma).astype(np.uint8)
    return write_class_folders(root, n, seed, classes, f"site{seed}_person{{patient}}_img_{{i}}.png", transform=curve)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def recalibrated(tiny_run, tmp_path_factory):
    from ultrasonic.training.calibrate import recalibrate

    root = tmp_path_factory.mktemp("recal")
    site = write_site(root / "site", gamma=1.8)
    before = digest(tiny_run)
    meta = recalibrate(tiny_run, str(site), root / "run_site")
    return tiny_run, site, root / "run_site", meta, before


def test_the_parent_run_stays_as_it_was(recalibrated):
    parent, _, _, _, before = recalibrated
    assert digest(parent) == before


def test_the_weights_are_the_parents_and_only_the_temperature_layer_differs(recalibrated):
    import keras

    parent, _, new, meta, _ = recalibrated
    old_model = keras.saving.load_model(parent / "model.keras", safe_mode=True)
    new_model = keras.saving.load_model(new / "model.keras", safe_mode=True)
    old_weights, new_weights = old_model.get_weights(), new_model.get_weights()
    assert len(old_weights) == len(new_weights) and all(np.array_equal(a, b) for a, b in zip(old_weights, new_weights))
    scale = new_model.get_layer("temperature").get_config()["scale"]
    assert scale == pytest.approx(1 / meta.temperature, rel=1e-5)


def test_meta_records_the_lineage_and_the_site_fits(recalibrated):
    parent, site, new, meta, _ = recalibrated
    old = RunDir(parent).read_meta()
    stored = RunDir(new).read_meta()
    lineage = stored.extra["lineage"]
    assert lineage["recalibrated_from"]["model_id"] == old.model_id and lineage["weights"] == "unchanged"
    assert lineage["site_sample"]["images"] == 80 and lineage["site_sample"]["path"] == str(site.resolve())
    assert stored.model_id != old.model_id and stored.calibration["fitted_on"].startswith("site sample")
    assert "site sample" in stored.threshold_method and stored.data == old.data  # the weights' own data
    assert stored.ood["fitted_on"]["train"] > old.ood["fitted_on"]["train"]  # pooled with the run's own
    for name in ("config.yaml", "splits.csv", "history.csv"):
        assert (new / name).read_bytes() == (parent / name).read_bytes()
    assert not (new / "eval").exists() and not (new / "audit.sqlite").exists()


def test_the_recalibrated_run_predicts_and_its_gate_still_refuses_what_is_unlike_both(recalibrated):
    from ultrasonic.inference.predictor import Predictor

    _, site, new, meta, _ = recalibrated
    predictor = Predictor(new)
    rows = predictor.predict_files([site])
    assert len(rows) == 80 and all(r["threshold"] == pytest.approx(meta.threshold) for r in rows)
    assert sum(r["in_distribution"] is False for r in rows) <= 8  # the site's own images pass the pooled gate
    size = meta.image_size[0]
    gradient = np.tile(np.linspace(0, 255, size).astype(np.uint8), (size, 1))[..., None]
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 1), dtype=np.uint8)
    scored = predictor.rows(["gradient", "noise"], *predictor.predict_scored(np.stack([gradient, noise])))
    assert all(r["in_distribution"] is False and r["class"] is None for r in scored)


def test_evaluate_on_new_data_says_whether_the_operating_point_holds(recalibrated, capsys):
    from ultrasonic.cli import main

    parent, site, _, _, _ = recalibrated
    out = site.parent / "eval_site"
    assert main(["evaluate", str(parent), str(site), "--out", str(out), "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    check = metrics["site_check"]
    assert set(check["measures"]) == {"sensitivity", "specificity"}
    assert all(row["status"] in ("holds", "below") for row in check["measures"].values())
    assert "site check at threshold" in printed and check["verdict"] in printed
    assert "Site check" in (out / "report.html").read_text()


def test_cli_recalibrate_refuses_its_own_folder_and_a_sample_without_a_class(tiny_run, tmp_path, capsys):
    from ultrasonic.cli import main

    assert main(["recalibrate", str(tiny_run), str(tmp_path), "--out", str(tiny_run)]) == 2
    assert "recalibrate writes a new run" in capsys.readouterr().err
    one_class = write_site(tmp_path / "one", n=10, classes=("normal", "normal"))
    assert main(["recalibrate", str(tiny_run), str(one_class), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {one_class}") and "at least two" in err and "Traceback" not in err
    assert not (tmp_path / "new" / "model.keras").exists()


def test_cli_recalibrate_with_another_operating_point(tiny_run, tmp_path, capsys):
    from ultrasonic.cli import main

    site = write_site(tmp_path / "site", n=40, seed=5)
    assert main(["recalibrate", str(tiny_run), str(site), "--out", str(tmp_path / "new"),
                 "--operating-point", "sensitivity=0.95"]) == 0
    assert "run directory" in capsys.readouterr().out
    meta = RunDir(tmp_path / "new").read_meta()
    assert meta.operating_point == "sensitivity=0.95" and meta.validation["sensitivity"] >= 0.95


# --- the site check's rule, on numbers ------------------------------------------------------


def meta_with(sensitivity: float, specificity: float) -> RunMeta:
    return RunMeta(model_id="m", task="binary", classes=["n", "p"], positive_class="p", image_size=(8, 8),
                   channels=1, threshold=0.4, operating_point="youden",
                   validation={"sensitivity": sensitivity, "specificity": specificity})


def metrics_with(sens: tuple[float, float, float], spec: tuple[float, float, float]) -> dict:
    def entry(v):
        return {"value": v[0], "ci95": [v[1], v[2]]}
    return {"task": "binary", "at_0.5": {}, "at_threshold": {"threshold": 0.4, "sensitivity": entry(sens),
                                                             "specificity": entry(spec)}}


@pytest.mark.parametrize("sens, spec, holds", [
    ((0.90, 0.85, 0.94), (0.80, 0.70, 0.88), True),   # both intervals reach the validation values
    ((0.90, 0.85, 0.94), (0.60, 0.50, 0.70), False),  # specificity's whole interval under 0.85
    ((0.97, 0.93, 0.99), (0.90, 0.84, 0.95), True),   # better than validation: holds
])
def test_the_site_check_rule(sens, spec, holds):
    check = site_check(metrics_with(sens, spec), meta_with(0.92, 0.85))
    assert check["holds"] is holds
    assert ("recalibrate" in check["verdict"]) is (not holds)
    lines = site_lines(check)
    assert lines[0] == "site check at threshold 0.400:" and len(lines) == 4


def test_no_site_check_for_more_classes_or_a_run_without_validation_figures():
    assert site_check({"task": "multiclass"}, meta_with(0.9, 0.9)) is None
    meta = dataclasses.replace(meta_with(0.9, 0.9), validation={})
    assert site_check(metrics_with((0.9, 0.8, 1), (0.9, 0.8, 1)), meta) is None
    assert site_lines(None) == []
