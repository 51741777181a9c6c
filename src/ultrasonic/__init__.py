"""ultrasonic: train, evaluate, explain and serve classifiers for medical images.

    from ultrasonic import train, evaluate, Predictor
    result = train("chest_xray/", out="runs/cxr", epochs=5)   # a TrainResult: run_dir, best_epoch, ...
    metrics = evaluate("runs/cxr")
    rows = Predictor("runs/cxr").predict_files(["scan.jpeg"])

Keras (and its backend) is imported on first use, so `ultrasonic --help`
and the decoding worker processes start fast. docs/architecture.md maps the packages.
"""

from ultrasonic.lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["train", "TrainResult", "evaluate", "Predictor", "export", "Config", "load_config", "parse_set",
           "read_image", "RunDir", "RunMeta", "__version__"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "train": ".training.fit", "TrainResult": ".training.fit", "evaluate": ".evaluation.evaluate",
    "Predictor": ".inference.predictor", "export": ".inference.export", "Config": ".config",
    "load_config": ".config", "parse_set": ".config", "read_image": ".data.io", "RunDir": ".rundir",
    "RunMeta": ".rundir",
})
