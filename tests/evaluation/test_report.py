"""The HTML report holds every number and figure, needs no other file, and escapes what it shows."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from PIL import Image

from ultrasonic.errors import UltrasonicError
from ultrasonic.evaluation.summary import evaluate_predictions, write_metrics_json
from ultrasonic.evaluation.report import write_report

Y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.35, 0.55, 0.8, 0.9])
EVIL = "<script>alert(1)</script>"


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "roc.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


def test_binary_report(tmp_path, png):
    metrics = evaluate_predictions(Y, np.c_[1 - P, P], ["NORMAL", EVIL], threshold=0.35, n_boot=50)
    info = {"run": "r1", "model": "resnet50", "data": "chest_xray", "split": "test", "n images": 10,
            "note": 'a & b "quoted"'}
    out = tmp_path / "eval" / "report.html"
    write_report(out, "Pneumonia <test>", metrics, {"ROC curve <b>": png}, info)
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    # Values at 0.5 (sensitivity 3/4, precision 3/5) and at 0.35 (specificity 1/2), side by side.
    assert "at threshold 0.500" in html and "at threshold 0.350" in html
    assert "<td>0.750</td>" in html and "<td>0.600</td>" in html and "<td>0.500</td>" in html
    lo, hi = metrics["at_0.5"]["sensitivity"]["ci95"]
    assert f"{lo:.3f} &ndash; {hi:.3f}" in html
    assert "<tr><td>TP</td><td>3</td><td>4</td></tr>" in html  # TP at 0.5, then at 0.35
    assert "Confusion matrix at threshold 0.350" in html  # where predict decides, named
    assert "<td>NORMAL</td><td>3</td><td>3</td>" in html  # at 0.35: TN 3, FP 3
    assert "<tr><td>FN</td><td>1</td><td>0</td></tr>" in html
    assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() in html
    assert "http" not in html.lower() and "<link" not in html
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Pneumonia &lt;test&gt;" in html and "ROC curve &lt;b&gt;" in html
    assert "a &amp; b &quot;quoted&quot;" in html and "resnet50" in html
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # written atomically


def test_report_from_metrics_json_shows_undefined_as_na(tmp_path):
    # Only positive cases: specificity and the AUCs are undefined, and null once written as JSON.
    metrics = evaluate_predictions([1, 1, 1], [[0.1, 0.9], [0.2, 0.8], [0.7, 0.3]], ["NORMAL", "PNEUMONIA"],
                                   n_boot=20)
    write_metrics_json(tmp_path / "metrics.json", metrics)
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    write_report(tmp_path / "report.html", "t", loaded, {}, {})
    html = (tmp_path / "report.html").read_text()
    assert "<tr><td>specificity</td><td>n/a</td>" in html
    assert "<tr><td>sensitivity</td><td>0.667</td>" in html


def test_multiclass_report(tmp_path, png):
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
    probs = np.full((10, 3), 0.1) + 0.7 * np.eye(3)[pred]
    metrics = evaluate_predictions(y, probs, ["covid", "normal", EVIL], n_boot=30)
    write_report(tmp_path / "r.html", "Three classes", metrics, {"Confusion matrix": png}, {"split": "test"})
    html = (tmp_path / "r.html").read_text()
    assert "<tr><td>accuracy</td><td>0.700</td>" in html
    assert "<tr><td>macro_sensitivity</td><td>0.694</td>" in html  # (2/3 + 2/3 + 3/4) / 3
    assert "<tr><td>covid</td><td>0.667<br>" in html  # per-class sensitivity 2/3
    # Confusion matrix rows (true) [2,1,0], [0,2,1], [1,0,3].
    assert "<td>covid</td><td>2</td><td>1</td><td>0</td>" in html
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td>1</td><td>0</td><td>3</td>" in html
    assert "<script" not in html and "http" not in html.lower()
    assert html.count("data:image/png;base64,") == 1


def test_missing_image_is_a_clear_error(tmp_path):
    metrics = evaluate_predictions(Y, np.c_[1 - P, P], ["NORMAL", "PNEUMONIA"], n_boot=0)
    with pytest.raises(UltrasonicError, match="image not found"):
        write_report(tmp_path / "r.html", "t", metrics, {"ROC": tmp_path / "missing.png"}, {})
    assert not (tmp_path / "r.html").exists()


def test_binary_report_has_threshold_table_intervals_and_calibration(tmp_path):
    from ultrasonic.evaluation.calibration import calibration_report

    metrics = evaluate_predictions(Y, np.c_[1 - P, P], ["NORMAL", "PNEUMONIA"], threshold=0.35, n_boot=20)
    metrics["calibration"] = calibration_report(Y, np.c_[1 - P, P], 1.5)
    write_metrics_json(tmp_path / "metrics.json", metrics)
    write_report(tmp_path / "r.html", "t", json.loads((tmp_path / "metrics.json").read_text()), {}, {})
    html = (tmp_path / "r.html").read_text()
    assert "PPV and NPV assume a prevalence of 0.400" in html
    assert "<tr><td>0.350 (run)</td><td>1.000</td><td>0.500</td>" in html  # sensitivity 4/4, specificity 3/6
    assert "<tr><td>0.500</td><td>0.750</td><td>0.667</td><td>0.600</td><td>0.800</td></tr>" in html
    assert "exact binomial (Clopper-Pearson)" in html
    assert "percentile bootstrap, 20 resamples of the 10 images, stratified by class" in html
    before, after = metrics["calibration"]["before"]["ece"], metrics["calibration"]["after"]["ece"]
    assert f"<tr><td>ECE</td><td>{before:.3f}</td><td>{after:.3f}</td></tr>" in html
    assert "15 equal-width bins" in html and "T = 1.500" in html
