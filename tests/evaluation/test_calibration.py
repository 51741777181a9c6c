"""Temperature scaling and the calibration measures, against values worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ultrasonic.errors import DataError
from ultrasonic.evaluation.calibration import (BINNING, brier, calibration_report, ece, fit_temperature, log_loss,
                                               reliability_bins, uncalibrated)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_log_loss_and_brier_worked_values():
    y, p = [1, 0], [[0.2, 0.8], [0.6, 0.4]]
    assert log_loss(y, p) == pytest.approx((-math.log(0.8) - math.log(0.6)) / 2)
    assert brier(y, p) == pytest.approx((0.2 ** 2 + 0.4 ** 2) / 2)  # of the positive class
    assert brier([0], [[0.5, 0.3, 0.2]]) == pytest.approx(0.25 + 0.09 + 0.04)  # summed over 3 classes


def test_a_sure_mistake_has_a_finite_log_loss():
    assert math.isfinite(log_loss([1], [[1.0, 0.0]]))


def test_ece_worked_value_and_its_bins():
    # top-label confidences 0.9 (right), 0.9 (wrong), 0.6, 0.6 (both right): |0.5-0.9|/2 + |1-0.6|/2
    y = [1, 0, 0, 1]
    p = [[0.1, 0.9], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]]
    assert ece(y, p) == pytest.approx(0.4)
    rows = reliability_bins(y, p)
    assert len(rows) == 15 and sum(r["count"] for r in rows) == 4
    full = [r for r in rows if r["count"]]
    assert [(r["count"], r["confidence"], r["accuracy"]) for r in full] == [(2, 0.6, 1.0), (2, 0.9, 0.5)]
    assert full[0]["lower"] < 0.6 <= full[0]["upper"]
    assert "15 equal-width bins" in BINNING


def test_perfectly_calibrated_probabilities_have_zero_ece():
    p = np.array([[0.25, 0.75]] * 4)
    assert ece([1, 1, 1, 0], p) == pytest.approx(0.0)


def test_fit_temperature_solves_the_worked_case():
    # every logit 2, three in four positive: NLL is least where sigmoid(2 / T) = 0.75, T = 2 / ln 3
    assert fit_temperature([2.0] * 4, [1, 1, 1, 0]) == pytest.approx(2 / math.log(3), rel=1e-3)
    assert fit_temperature(np.full((4, 1), 2.0), [1, 1, 1, 0]) == pytest.approx(2 / math.log(3), rel=1e-3)


def test_fit_temperature_recovers_the_temperature_of_overconfident_softmax_logits():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (4000, 3))
    y = np.array([rng.choice(3, p=row) for row in softmax(z / 2.5)])  # the truth is 2.5 x less sure
    assert fit_temperature(z, y) == pytest.approx(2.5, rel=0.1)


def test_fit_temperature_stays_within_its_bounds():
    assert 0.05 <= fit_temperature([10.0, -10.0], [1, 0]) < 1  # separable: surer, never past the bound
    assert fit_temperature([10.0, -10.0], [0, 1]) == pytest.approx(20.0, rel=1e-3)  # always wrong: as unsure as allowed


def test_uncalibrated_undoes_the_temperature():
    z = np.random.default_rng(1).normal(0, 2, (20, 3))
    assert np.allclose(uncalibrated(softmax(z / 1.7), 1.7), softmax(z), atol=1e-9)
    binary = np.random.default_rng(2).normal(0, 2, 20)
    sig = 1 / (1 + np.exp(-binary / 0.6))
    raw = uncalibrated(np.stack([1 - sig, sig], 1), 0.6)[:, 1]
    assert np.allclose(raw, 1 / (1 + np.exp(-binary)), atol=1e-9)


def test_calibration_report_has_before_and_after():
    p = np.array([[0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    report = calibration_report([1, 0, 0], p, 2.0)
    assert report["temperature"] == 2.0 and report["ece_binning"] == BINNING
    assert report["after"]["log_loss"] == pytest.approx(log_loss([1, 0, 0], p))
    assert report["before"]["log_loss"] == pytest.approx(log_loss([1, 0, 0], uncalibrated(p, 2.0)))
    assert set(report["before"]) == {"ece", "brier", "log_loss"}


def test_bad_input_is_one_data_error():
    with pytest.raises(DataError, match="logits"):
        fit_temperature([[1.0, float("nan")]], [0])
    with pytest.raises(DataError, match="class indices"):
        ece([2], [[0.5, 0.5]])
