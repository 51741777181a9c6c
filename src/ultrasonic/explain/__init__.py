"""Explanations: Grad-CAM heat maps (gradcam), the gradients behind them, one function per backend
(gradients), and the overlay PNG drawn with Pillow alone (overlay)."""

from ultrasonic.lazy import lazy_exports

# the function gradcam is ultrasonic.explain.gradcam.gradcam: a name here must not be a module's name too
__all__ = ["explain_files", "overlay_png"]
__getattr__, __dir__ = lazy_exports(__name__, {"explain_files": ".gradcam", "overlay_png": ".overlay"})
