"""Metrics are checked against numbers worked out by hand on ten cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ultrasonic.errors import ConfigError, DataError
from ultrasonic.evaluation.intervals import bootstrap_ci, proportion_ci
from ultrasonic.evaluation.metrics import binary_metrics, multiclass_metrics
from ultrasonic.evaluation.summary import evaluate_predictions, summary_lines, write_metrics_json
from ultrasonic.evaluation.thresholds import (
    choose_threshold,
    operating_threshold,
    threshold_for_sensitivity,
    threshold_for_specificity,
    threshold_table,
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
    assert m["confusion_matrix"] == [[3, 3], [0, 4]]  # at the run's threshold, where `predict` decides
    assert m["confusion_threshold"] == 0.35
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
    assert multi[0] == "accuracy 0.700 (95% CI 0.348-0.933)"  # exact, even without a bootstrap
    assert multi[1] == "macro_sensitivity 0.694"
    assert "c: sensitivity 0.750  specificity 0.833  f1 0.750" in multi


def test_write_metrics_json_writes_nan_as_null(tmp_path):
    m = evaluate_predictions([1, 1, 1, 0], [[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]], CLASSES, n_boot=0)
    path = tmp_path / "eval" / "metrics.json"
    write_metrics_json(path, m)

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    loaded = json.loads(path.read_text(), parse_constant=refuse)
    assert loaded["at_0.5"]["sensitivity"] == {"value": pytest.approx(2 / 3), "ci95": pytest.approx(
        list(proportion_ci(2, 3))), "ci_method": "exact", "count": [2, 3]}  # exact even without a bootstrap
    assert loaded["at_0.5"]["f1"]["ci95"] == [None, None]
    assert loaded["at_0.5"]["tp"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary left behind
    assert any(line.strip().startswith("accuracy 0.750 (95% CI") for line in summary_lines(loaded))  # reads its JSON


def test_proportions_get_exact_intervals_never_of_zero_width():
    # 135 of 135 negatives right: the bootstrap would say 1.000-1.000, the binomial 0.973-1.000
    y = np.r_[np.zeros(135, int), np.ones(50, int)]
    p = np.r_[np.full(135, 0.1), np.full(45, 0.9), np.full(5, 0.2)]
    m = evaluate_predictions(y, np.c_[1 - p, p], CLASSES, n_boot=50)
    spec = m["at_0.5"]["specificity"]
    assert spec["value"] == 1.0 and spec["ci_method"] == "exact" and spec["count"] == [135, 135]
    assert spec["ci95"][0] == pytest.approx(0.973, abs=5e-4) and spec["ci95"][1] == 1.0
    assert m["at_0.5"]["sensitivity"]["ci95"] == pytest.approx(list(proportion_ci(45, 50)))
    assert m["at_0.5"]["accuracy"]["count"] == [180, 185]
    assert m["at_0.5"]["roc_auc"]["ci_method"] == "bootstrap"
    assert m["intervals"]["proportions"].startswith("exact binomial (Clopper-Pearson)")
    assert m["intervals"]["others"] == "percentile bootstrap, 50 resamples of the 185 images, stratified by class"


def test_worked_clopper_pearson_values_of_the_issue():
    assert proportion_ci(132, 135) == pytest.approx((0.936, 0.995), abs=5e-4)


def test_auc_bootstrap_resamples_patients_stratified_by_class():
    # 8 patients of 5 near-identical images each: a patient's images move together, so the interval is
    # wider than one that takes the 40 images as independent
    rng = np.random.default_rng(0)
    patients = np.repeat(["a", "b", "c", "d", "e", "f", "g", "h"], 5)
    y = np.repeat([0, 0, 0, 0, 1, 1, 1, 1], 5)
    p = np.clip(np.repeat([0.1, 0.5, 0.3, 0.7, 0.4, 0.8, 0.6, 0.9], 5) + rng.normal(0, 0.01, 40), 0, 1)
    by_patient = evaluate_predictions(y, np.c_[1 - p, p], CLASSES, n_boot=300, groups=list(patients))
    by_image = evaluate_predictions(y, np.c_[1 - p, p], CLASSES, n_boot=300)
    lo_p, hi_p = by_patient["at_0.5"]["roc_auc"]["ci95"]
    lo_i, hi_i = by_image["at_0.5"]["roc_auc"]["ci95"]
    assert hi_p - lo_p > hi_i - lo_i
    assert by_patient["intervals"]["others"] == ("percentile bootstrap, 300 resamples of the 8 patients, "
                                                 "stratified by class")


def test_stratified_patient_resamples_keep_the_class_mix_and_whole_patients():
    y = np.array([0, 0, 0, 1, 1, 1])
    groups = ["p1", "p1", "p2", "p3", None, None]  # no id: an image is its own patient
    seen = []
    bootstrap_ci(lambda yy, s: seen.append((yy.copy(), s.copy())) or {"n": 0.0}, y, np.arange(6.0), n_boot=50,
                 groups=groups, stratify=True)
    for yy, s in seen:
        assert np.sum(yy == 1) == 3  # three positive patients of one image each, drawn three times
        assert np.sum(s == 0) == np.sum(s == 1)  # p1's two images together
        assert len(yy) >= 4


def test_multiclass_proportions_are_exact():
    m = evaluate_predictions(Y3, PROBS3, ["a", "b", "c"], n_boot=0)
    assert m["overall"]["accuracy"]["ci95"] == pytest.approx(list(proportion_ci(7, 10)))
    assert m["per_class"]["c"]["sensitivity"]["ci95"] == pytest.approx(list(proportion_ci(3, 4)))
    assert m["per_class"]["c"]["sensitivity"]["ci_method"] == "exact"
    assert m["overall"]["macro_f1"]["ci_method"] == "bootstrap"


def test_threshold_for_sensitivity_is_the_most_specific_that_keeps_it():
    # positives 0.35, 0.55, 0.8, 0.9: sensitivity >= 0.75 needs 3 of 4 at or above: 0.55
    assert threshold_for_sensitivity(Y, P, 0.75) == 0.55
    assert threshold_for_sensitivity(Y, P, 0.95) == 0.35
    assert binary_metrics(Y, P, threshold_for_sensitivity(Y, P, 0.95))["sensitivity"] == 1.0


def test_threshold_for_specificity_is_the_most_sensitive_that_keeps_it():
    # negatives 0.1 .. 0.7: specificity >= 0.8 needs 5 of 6 below: above 0.6, the next score is 0.7
    t = threshold_for_specificity(Y, P, 0.8)
    assert t == 0.7
    assert binary_metrics(Y, P, t)["specificity"] == pytest.approx(5 / 6)
    t = threshold_for_specificity(Y, P, 0.95)  # all 6 below: above 0.7, the next score is 0.8
    assert t == 0.8 and binary_metrics(Y, P, t)["specificity"] == 1.0


def test_operating_threshold_names_its_method():
    assert operating_threshold(Y, P, ("youden", None)) == (choose_threshold(Y, P), "Youden's J on the validation split")
    assert operating_threshold(Y, P, ("threshold", 0.3)) == (0.3, "fixed threshold 0.3")
    assert operating_threshold(Y, P, ("sensitivity", 0.95))[1] == "sensitivity >= 0.95 on the validation split"


def test_threshold_table_assumes_the_data_prevalence():
    table = threshold_table(Y, P, 0.35)
    assert table["prevalence"] == pytest.approx(0.4)
    rows = {r["threshold"]: r for r in table["rows"]}
    assert 0.35 in rows and rows[0.35]["run_threshold"] and not rows[0.5]["run_threshold"]
    assert (rows[0.5]["sensitivity"], rows[0.5]["ppv"], rows[0.5]["npv"]) == pytest.approx((0.75, 0.6, 0.8))
