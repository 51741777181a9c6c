"""ultrasonic: train, evaluate, explain and serve classifiers for medical images.

    from ultrasonic import train, evaluate, Predictor
    result = train("chest_xray/", out="runs/cxr", epochs=5)
    metrics = evaluate("runs/cxr")
    rows = Predictor("runs/cxr").predict_files(["scan.jpeg"])

Keras (and its backend) is imported on first use, so `ultrasonic --help`
and the decoding worker processes start fast.
"""

__version__ = "0.1.0"

_LAZY = {"train": ".training", "evaluate": ".evaluation", "Predictor": ".predict", "Config": ".config",
         "load_config": ".config", "read_image": ".data.io"}

__all__ = ["train", "evaluate", "Predictor", "Config", "load_config", "read_image", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'ultrasonic' has no attribute {name!r}")
