"""DeLong's and McNemar's tests against values worked out by other means."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ultrasonic.errors import DataError
from ultrasonic.evaluation.compare import delong_test, mcnemar_test
from ultrasonic.evaluation.intervals import proportion_ci


def scored(n: int = 300, separation: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, rng.normal(separation * y, 1.0)


def test_delong_aucs_are_sklearns_and_ties_count_half():
    y, s = scored()
    b = np.round(s)  # many ties
    result = delong_test(y, s, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert result["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)


def test_delong_variance_matches_the_bootstrap_of_the_difference():
    y, a = scored(400, 1.0, seed=1)
    b = a + np.random.default_rng(2).normal(0, 1.0, len(a))  # a noisier copy of a: correlated scores
    result = delong_test(y, a, b)
    rng = np.random.default_rng(3)
    diffs = []
    for _ in range(1000):
        r = rng.integers(0, len(y), len(y))
        diffs.append(roc_auc_score(y[r], a[r]) - roc_auc_score(y[r], b[r]))
    assert result["se"] == pytest.approx(np.std(diffs), rel=0.15)
    assert result["difference"] > 0 and result["p_value"] < 0.05


def test_delong_of_a_model_with_itself_finds_no_difference():
    y, a = scored()
    result = delong_test(y, a, a)
    assert result["difference"] == 0 and result["p_value"] == 1.0


def test_delong_needs_both_classes():
    with pytest.raises(DataError, match="both classes"):
        delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_mcnemar_counts_discordant_pairs_and_gives_the_exact_p_value():
    y = np.array([1] * 20)
    a = np.array([1] * 18 + [0] * 2)  # 18 right
    b = np.array([1] * 10 + [0] * 10)  # 10 right, all inside a's right ones
    result = mcnemar_test(y, a, b)
    assert (result["a_only_right"], result["b_only_right"], result["both_right"], result["both_wrong"]) == (8, 0, 10, 2)
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 8)  # two-sided exact binomial, 8 of 8 discordant


def test_mcnemar_of_identical_decisions_is_one():
    assert mcnemar_test([0, 1, 1], [0, 1, 0], [0, 1, 0])["p_value"] == 1.0


def test_paired_inputs_must_have_the_same_length():
    with pytest.raises(DataError, match="same non-zero number"):
        mcnemar_test([0, 1], [0], [1, 0])


def test_exact_proportion_intervals_are_clopper_pearson_and_never_zero_width():
    lo, hi = proportion_ci(132, 135)
    assert (round(lo, 3), round(hi, 3)) == (0.936, 0.995)  # the exact binomial figures
    lo, hi = proportion_ci(135, 135)
    assert hi == 1.0 and 0.97 < lo < 0.98
    lo, hi = proportion_ci(0, 20)
    assert lo == 0.0 and 0.16 < hi < 0.17
    with pytest.raises(DataError):
        proportion_ci(5, 3)
