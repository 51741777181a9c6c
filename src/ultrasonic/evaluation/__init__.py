"""Evaluation: metrics (metrics), their confidence intervals (intervals), plots and the HTML report,
and evaluate.py (`ultrasonic.evaluate`), which puts them in a run's eval/ folder."""

from ultrasonic.lazy import lazy_exports

# `evaluate` (the function) is ultrasonic.evaluate: evaluation.evaluate is its module
__all__ = ["evaluate_predictions", "binary_metrics", "multiclass_metrics", "summary_lines",
           "format_metric"]
__getattr__, __dir__ = lazy_exports(__name__, {n: ".metrics" for n in __all__})
