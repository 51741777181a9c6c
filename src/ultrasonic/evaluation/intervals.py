"""Confidence intervals for metrics: exact binomial intervals of proportions, the percentile bootstrap of the rest.

    ci = bootstrap_ci(binary_metrics, y, p_pos, n_boot=1000)   # {"sensitivity": (0.87, 0.93), ...}
    ci = bootstrap_ci(binary_metrics, y, p_pos, groups=patient_ids, stratify=True)   # patients, per class
    proportion_ci(132, 135)                                    # (0.936, 0.995)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ultrasonic.errors import ConfigError, DataError


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, Any]],
    y_true: Any,
    scores: Any,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    stratify: bool = False,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval for every numeric value `metric_fn` returns.

    Resamples cases with replacement (same seed, same intervals); with `groups`
    (e.g. patient ids, None = a group of its own) whole groups, since the images
    of one patient are correlated; with `stratify`, within each class (a group's
    class is that of its first case), so every sample has the data's class mix.
    Samples where a value is nan are skipped for that value; if all are nan the
    interval is (nan, nan).

        ci = bootstrap_ci(binary_metrics, y, p_pos)   # ci["sensitivity"] == (0.87, 0.93)
    """
    y, s = np.asarray(y_true), np.asarray(scores)
    if len(y) != len(s) or len(y) == 0:
        raise DataError(f"bootstrap needs labels and scores of the same non-zero length; got {len(y)} and {len(s)}")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ConfigError(f"bootstrap needs n_boot >= 1 and 0 < alpha < 1; got n_boot={n_boot}, alpha={alpha}")
    rng = np.random.default_rng(seed)
    if groups is None and not stratify:
        rows = rng.integers(0, len(y), size=(n_boot, len(y)))
    else:
        rows = _group_rows(y, groups, stratify, n_boot, rng)
    samples = [metric_fn(y[r], s[r]) for r in rows]
    keys = [k for k, v in samples[0].items() if is_number(v)]
    return {k: _percentile_interval([d.get(k, np.nan) for d in samples], alpha) for k in keys}


def _group_rows(y: np.ndarray, groups: Sequence[Any] | None, stratify: bool, n_boot: int,
                rng: np.random.Generator) -> list[np.ndarray]:
    """The case indices of each resample: groups drawn with replacement, per class if `stratify`."""
    if groups is not None and len(groups) != len(y):
        raise DataError(f"bootstrap groups ({len(groups)}) must give one id per case ({len(y)})")
    ids = list(range(len(y))) if groups is None else [g if g not in (None, "") else ("case", k)
                                                       for k, g in enumerate(groups)]
    members: dict[Any, list[int]] = {}
    for k, g in enumerate(ids):
        members.setdefault(g, []).append(k)
    cases = [np.asarray(m) for m in members.values()]
    strata = [np.asarray([i for i, m in enumerate(cases) if y[m[0]] == c]) for c in np.unique(y)] if stratify \
        else [np.arange(len(cases))]
    rows = []
    for _ in range(n_boot):
        chosen = np.concatenate([rng.choice(s, size=len(s)) for s in strata])
        rows.append(np.concatenate([cases[i] for i in chosen]))
    return rows


def n_groups(groups: Sequence[Any] | None, n: int) -> int:
    """How many groups (patients) `groups` holds; a case without an id is a group of its own."""
    if groups is None:
        return n
    return len({g if g not in (None, "") else ("case", k) for k, g in enumerate(groups)})


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _percentile_interval(values: Sequence[float], alpha: float) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(lo), float(hi))


def proportion_ci(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion successes / n; never of zero width.

    Why exact, not the bootstrap: a specificity of 135/135 has no variation to resample
    (the bootstrap says 1.000-1.000), while the binomial says the truth may be 0.973.

        proportion_ci(132, 135)   # (0.936, 0.995)
    """
    from scipy.stats import beta

    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= successes <= n:
        raise DataError(f"a proportion needs 0 <= successes <= n; got {successes} of {n}")
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return (lo, hi)
