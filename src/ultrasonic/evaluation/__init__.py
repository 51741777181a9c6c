"""Evaluation: metrics (metrics), their intervals (intervals), the metrics.json object (summary),
thresholds (thresholds), calibration, plots and the HTML report,
and evaluate.py (`ultrasonic.evaluate`), which puts them in a run's eval/ folder."""

from ultrasonic.lazy import lazy_exports

# `evaluate` (the function) is ultrasonic.evaluate: evaluation.evaluate is its module
__all__ = ["evaluate_predictions", "binary_metrics", "multiclass_metrics", "summary_lines",
           "format_metric"]
__getattr__, __dir__ = lazy_exports(__name__, {"evaluate_predictions": ".summary", "summary_lines": ".summary",
                                               "binary_metrics": ".metrics", "multiclass_metrics": ".metrics",
                                               "format_metric": ".metrics"})
