"""Evaluation: metrics (metrics), their confidence intervals (intervals), plots and the HTML report,
and `evaluate`, which puts them in a run's eval/ folder."""

from ultrasonic.lazy import lazy_exports

__all__ = ["evaluate", "evaluate_predictions", "binary_metrics", "multiclass_metrics", "summary_lines",
           "format_metric"]
__getattr__, __dir__ = lazy_exports(__name__, {"evaluate": ".evaluate", **{n: ".metrics" for n in __all__[1:]}})
