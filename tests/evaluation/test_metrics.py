"""Metrics are checked against numbers worked out by hand on ten cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ultrasonic.errors import ConfigError, DataError
from ultrasonic.evaluation.metrics import (
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    evaluate_predictions,
    multiclass_metrics,
    summary_lines,
    write_metrics_json,
)

# Ten cases, 4 positive. At 0.5: TP 3 (0.55, 0.8, 0.9), FN 1 (0.35), FP 2 (0.6, 0.7), TN 4.
Y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.35, 0.55, 0.8, 0.9])
CLASSES = ["NORMAL", "PNEUMONIA"]

# Three classes; predictions [0,0,1, 1,1,2, 2,2,2,0] give the confusion matrix below.
Y3 = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
PRED3 = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
PROBS3 = np.full((10, 3), 0.1) + 0.7 * np.eye(3)[PRED3]
CM3 = [[2, 1, 0], [0, 2, 1], [1, 0, 3]]


def test_binary_metrics_at_half():
    m = binary_metrics(Y, P)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (3, 4, 2, 1)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["npv"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    # 19 of the 24 (positive, negative) pairs are ordered correctly.
    assert m["roc_auc"] == pytest.approx(19 / 24)
    # Precision at each positive, ranked by score: 1/1, 2/2, 3/5, 4/7.
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 5 + 4 / 7) / 4)
    assert m["threshold"] == 0.5


def test_binary_metrics_threshold_is_inclusive():
    m = binary_metrics(Y, P, threshold=0.35)  # 0.35 itself counts as positive
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (4, 3, 3, 0)
    assert m["sensitivity"] == 1.0
    assert m["specificity"] == pytest.approx(0.5)


def test_undefined_ratios_are_nan():
    m = binary_metrics([1, 1, 1], [0.9, 0.8, 0.2])  # no negatives at all
    assert math.isnan(m["specificity"])
    assert m["npv"] == 0.0  # 0 TN out of 1 predicted negative: defined, just bad
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert math.isnan(binary_metrics([0, 1], [0.1, 0.2])["precision"])  # nothing predicted positive


def test_aucs_match_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 1)  # many ties
    m = binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_binary_metrics_rejects_bad_input():
    with pytest.raises(DataError, match="same non-zero length"):
        binary_metrics([0, 1], [0.5])
    with pytest.raises(DataError, match="0 \\(negative\\) or 1"):
        binary_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ConfigError, match="threshold"):
        binary_metrics(Y, P, threshold=1.5)


def test_multiclass_metrics():
    m = multiclass_metrics(Y3, PROBS3, ["a", "b", "c"])
    assert m["confusion_matrix"] == CM3
    assert m["accuracy"] == pytest.approx(7 / 10)
    a, c = m["per_class"]["a"], m["per_class"]["c"]
    # a: TP 2, FN 1, FP 1, TN 6.  c: TP 3, FN 1, FP 1, TN 5.
    assert (a["sensitivity"], a["specificity"], a["precision"], a["npv"], a["f1"]) == pytest.approx(
        (2 / 3, 6 / 7, 2 / 3, 6 / 7, 2 / 3))
    assert (c["sensitivity"], c["specificity"], c["f1"]) == pytest.approx((3 / 4, 5 / 6, 3 / 4))
    # a's scores: positives 0.8, 0.8, 0.1; negatives one 0.8 and six 0.1 -> (12 + 2*0.5 + 6*0.5) / 21.
    assert a["roc_auc"] == pytest.approx(16 / 21)
    assert m["macro_sensitivity"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)
    assert m["macro_specificity"] == pytest.approx((6 / 7 + 6 / 7 + 5 / 6) / 3)
    ovr = [roc_auc_score(Y3 == k, PROBS3[:, k]) for k in range(3)]
    assert m["macro_roc_auc"] == pytest.approx(np.mean(ovr))


def test_choose_threshold_youden_tie_goes_to_closest_to_half():
    # J = 0.5 both at t = 0.8 (sens 0.5, spec 1) and t = 0.35 (sens 1, spec 0.5); 0.35 is nearer 0.5.
    assert choose_threshold(Y, P) == pytest.approx(0.35)
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.8)


def test_choose_threshold_is_finite_and_in_unit_interval():
    assert choose_threshold([0, 1], [0.5, 0.5]) == 0.5  # only sklearn's inf and 0.5 to choose from
    t = choose_threshold([0, 1, 1], [1.0, 1.0, 1.0])
    assert math.isfinite(t) and 0.0 <= t <= 1.0


def test_choose_threshold_needs_both_classes():
    with pytest.raises(DataError, match="validation split"):
        choose_threshold([1, 1, 1], [0.2, 0.6, 0.9])


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_values():
    scores = np.arange(10.0)
    ci = bootstrap_ci(lambda y, s: {"mean": s.mean(), "name": "x"}, Y, scores, n_boot=200, seed=7)
    rows = np.random.default_rng(7).integers(0, 10, size=(200, 10))
    expected = np.percentile(scores[rows].mean(axis=1), [2.5, 97.5])
    assert ci["mean"] == pytest.approx(tuple(expected))
    assert "name" not in ci  # non-numeric values get no interval
    assert bootstrap_ci(lambda y, s: {"mean": s.mean()}, Y, scores, n_boot=200, seed=7) == ci
    assert bootstrap_ci(lambda y, s: {"mean": s.mean()}, Y, scores, n_boot=200, seed=8) != ci


def test_bootstrap_ci_skips_nan_samples():
    def fn(y, s):
        # Defined only when the sample holds a positive; all-nan value gives (nan, nan).
        return {"max_pos": s[y == 1].max() if y.any() else math.nan, "never": math.nan}
    ci = bootstrap_ci(fn, np.array([0, 0, 0, 1]), np.array([0.0, 0.0, 0.0, 5.0]), n_boot=100)
    assert ci["max_pos"] == (5.0, 5.0)
    assert all(math.isnan(v) for v in ci["never"])


def test_bootstrap_binary_600_cases_stays_in_numpy(monkeypatch):
    """The bootstrap calls binary_metrics 1,000 times: its AUCs are numpy (0.3 s in all, measured), never
    scikit-learn's input-validating ones (6 s for the same AUCs); any sklearn function the module uses
    raises here."""
    import ultrasonic.evaluation.metrics as metrics

    def refuse(*args, **kwargs):
        raise AssertionError("binary_metrics called scikit-learn; the bootstrap runs it per resample")

    for name, value in vars(metrics).items():
        if callable(value) and getattr(value, "__module__", "").startswith("sklearn"):
            monkeypatch.setattr(metrics, name, refuse)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    p = np.clip(0.3 * y + 0.7 * rng.random(600), 0, 1)
    ci = bootstrap_ci(binary_metrics, y, p, n_boot=1000)
    point = binary_metrics(y, p)
    for name in ("accuracy", "sensitivity", "roc_auc", "pr_auc"):
        assert ci[name][0] < point[name] < ci[name][1]


def test_evaluate_predictions_binary():
    probs = np.c_[1 - P, P]
    m = evaluate_predictions(Y, probs, CLASSES, threshold=0.35, n_boot=100)
    assert (m["task"], m["n"], m["positive_class"]) == ("binary", 10, "PNEUMONIA")
    assert m["counts"] == {"NORMAL": 6, "PNEUMONIA": 4}
    assert m["at_0.5"]["sensitivity"]["value"] == pytest.approx(0.75)
    lo, hi = m["at_0.5"]["sensitivity"]["ci95"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    assert (m["at_0.5"]["tp"], m["at_0.5"]["fn"]) == (3, 1)  # plain ints, no CI
    assert m["at_threshold"]["specificity"]["value"] == pytest.approx(0.5)
    assert m["at_threshold"]["threshold"] == 0.35
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert "at_threshold" not in evaluate_predictions(Y, probs, CLASSES, threshold=0.5, n_boot=0)


def test_evaluate_predictions_positive_index_zero():
    m = evaluate_predictions(1 - Y, np.c_[P, 1 - P], ["PNEUMONIA", "NORMAL"], positive_index=0, n_boot=0)
    assert m["positive_class"] == "PNEUMONIA"
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert m["confusion_labels"] == ["NORMAL", "PNEUMONIA"]
    assert all(math.isnan(v) for v in m["at_0.5"]["f1"]["ci95"])  # n_boot=0: no interval


def test_evaluate_predictions_multiclass():
    m = evaluate_predictions(Y3, PROBS3, ["a", "b", "c"], n_boot=100)
    assert m["task"] == "multiclass" and m["confusion_matrix"] == CM3
    assert m["counts"] == {"a": 3, "b": 3, "c": 4}
    assert m["overall"]["accuracy"]["value"] == pytest.approx(0.7)
    assert m["per_class"]["c"]["sensitivity"]["value"] == pytest.approx(0.75)
    lo, hi = m["per_class"]["a"]["specificity"]["ci95"]
    assert lo <= 6 / 7 <= hi


def test_evaluate_predictions_rejects_mismatched_probs():
    with pytest.raises(DataError, match="do not match 3 classes"):
        evaluate_predictions(Y, np.c_[1 - P, P], ["a", "b", "c"])


def test_summary_lines():
    m = evaluate_predictions(Y, np.c_[1 - P, P], CLASSES, threshold=0.35, n_boot=50)
    lines = summary_lines(m)
    assert any(line.strip().startswith("accuracy 0.700 (95% CI ") for line in lines)
    assert "  TP 3  TN 4  FP 2  FN 1 (positive = PNEUMONIA)" in lines
    assert "  TP 4  TN 3  FP 3  FN 0 (positive = PNEUMONIA)" in lines
    assert "at threshold 0.350:" in lines
    multi = summary_lines(evaluate_predictions(Y3, PROBS3, ["a", "b", "c"], n_boot=0))
    assert multi[0] == "accuracy 0.700"
    assert "c: sensitivity 0.750  specificity 0.833  f1 0.750" in multi


def test_write_metrics_json_writes_nan_as_null(tmp_path):
    m = evaluate_predictions([1, 1, 1, 0], [[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]], CLASSES, n_boot=0)
    path = tmp_path / "eval" / "metrics.json"
    write_metrics_json(path, m)

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    loaded = json.loads(path.read_text(), parse_constant=refuse)
    assert loaded["at_0.5"]["sensitivity"] == {"value": pytest.approx(2 / 3), "ci95": [None, None]}
    assert loaded["at_0.5"]["tp"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary left behind
    assert "accuracy 0.750" in [line.strip() for line in summary_lines(loaded)]  # reads its own JSON
