"""GET /model's operating point: meta.json's validation figures with exact intervals from the split's counts;
none where the counts are not known (a recalibrated run) or a figure is undefined."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ultrasonic.evaluation.intervals import proportion_ci
from ultrasonic.rundir import RunMeta
from ultrasonic.serve.app import _operating_point


def predictor(**meta) -> SimpleNamespace:
    """A predictor as _operating_point reads it: its meta.json (a real RunMeta), nothing else."""
    base = dict(model_id="0" * 16, task="binary", image_size=(64, 64), channels=1, classes=["NORMAL", "PNEUMONIA"], positive_class="PNEUMONIA", threshold=0.3, operating_point="youden",
                threshold_method="Youden's J on the validation split", extra={},
                validation={"sensitivity": 0.75, "specificity": 1.0},
                data={"counts": {"val": {"NORMAL": 10, "PNEUMONIA": 8}}})
    return SimpleNamespace(meta=RunMeta(**{**base, **meta}))


def test_operating_point_has_the_validation_figures_and_exact_intervals():
    op = _operating_point(predictor())
    assert op["name"] == "youden" and op["threshold"] == 0.3 and op["source"] == "validation"
    assert op["sensitivity"] == {"value": 0.75, "low": pytest.approx(proportion_ci(6, 8)[0]),
                                 "high": pytest.approx(proportion_ci(6, 8)[1])}
    assert op["specificity"]["low"] == pytest.approx(proportion_ci(10, 10)[0]) and op["specificity"]["high"] == 1.0


def test_operating_point_without_counts_or_with_an_undefined_figure_has_no_interval():
    recalibrated = _operating_point(predictor(extra={"lineage": {}}))
    assert recalibrated["source"] == "site sample" and recalibrated["sensitivity"]["low"] is None
    nan = _operating_point(predictor(validation={"sensitivity": float("nan"), "specificity": 1.0}))
    assert nan["sensitivity"] == {"value": None, "low": None, "high": None}
    odd = _operating_point(predictor(validation={"sensitivity": 0.7, "specificity": 1.0}))  # 0.7 of 8: no count
    assert odd["sensitivity"] == {"value": 0.7, "low": None, "high": None}
    assert _operating_point(predictor(classes=["a", "b", "c"])) is None
    assert _operating_point(predictor(validation={})) is None
