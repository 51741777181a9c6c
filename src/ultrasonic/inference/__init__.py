"""Inference: the engines that run a saved model (Keras in safe mode, ONNX Runtime), the Predictor
every command shares, streamed prediction over archives (batch) and export to ONNX / SavedModel."""

from ultrasonic.lazy import lazy_exports

# `export` (the function) is ultrasonic.export: a name here must not be a module's name too, or importing the
# module would replace it (see tests/test_layout.py)
__all__ = ["Predictor", "load_model", "predict_array", "open_engine", "predict_to_csv"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "Predictor": ".predictor", "load_model": ".engines", "predict_array": ".engines", "open_engine": ".engines",
    "predict_to_csv": ".batch",
})
